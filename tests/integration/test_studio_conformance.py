"""Every Studio API call the project makes, through Edge Impulse's official clients.

The same tests run against the local studio (the stand-in, always) and, marked `edgeimpulse`,
against a real Edge Impulse project when EI_API_KEY and EI_PROJECT_ID are set (skipped with that
reason otherwise). Against a real project they add uniquely named images and delete them again;
the impulse and training tests there also need EI_ALLOW_TRAINING=1 (they replace the project's
impulse and spend its compute time).

Calls covered: edgeimpulse.data.upload_samples (ingestion: boxes, labels, metadata, duplicates,
the split category); ProjectsApi.list_projects / get_project_info / update_project /
get_current_api_key_info; RawDataApi.list_samples (category, labels, metadata filter, paging) /
count_samples / get_sample / get_sample_as_image / set_sample_bounding_boxes / edit_label /
move_sample / set_sample_metadata / rename_sample / move_to_labeling_queue / delete_sample /
get_object_detection_label_queue (+ count) / rebalance_dataset; ImpulseApi.create_impulse /
get_impulse; DSPApi.set_dsp_config / get_dsp_config; LearnApi.set_keras / get_keras /
download_learn_model; JobsApi.train_keras_job / get_job_status / get_jobs_logs / cancel_job;
DeploymentApi.download_build.
"""
from __future__ import annotations

import json
import os
import uuid

import cv2
import numpy as np
import pytest
import requests

from helpers.errors import NotFound
from helpers.geometry import BBox

pytestmark = pytest.mark.timeout(600)


def _jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng([int.from_bytes(uuid.uuid4().bytes[:4], "little"), seed])
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture(params=["local", pytest.param("edgeimpulse", marks=pytest.mark.edgeimpulse)])
def studio(request, cloud):
    """An `EdgeImpulseStudio` on the local stand-in, or on the real project named by EI_API_KEY/EI_PROJECT_ID."""
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    if request.param == "edgeimpulse":
        if not (os.environ.get("EI_API_KEY") and os.environ.get("EI_PROJECT_ID")):
            pytest.skip("EI_API_KEY and EI_PROJECT_ID are not set: no real Edge Impulse project to test against")
        s = EdgeImpulseStudio(cloud.workspace, target="edgeimpulse", api_key=os.environ["EI_API_KEY"],
                              project_id=os.environ["EI_PROJECT_ID"])
    else:
        s = EdgeImpulseStudio(cloud.workspace)
    created: list[int] = []
    s._test_created = created  # noqa: SLF001 (ids to delete at the end)
    yield s
    for sid in created:
        try:
            s.delete_sample(sid)
        except NotFound:
            pass


def _upload(studio, files, **kw):
    res = studio.upload(files, **kw)
    studio._test_created.extend(r.sample_id for r in res if r.sample_id)  # noqa: SLF001
    return res


def test_get_studio_is_one_class_for_the_stand_in_and_a_real_project(cloud, monkeypatch):
    from helpers.studio import get_studio
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    local = get_studio(workspace=cloud.workspace)
    monkeypatch.setenv("EI_API_KEY", "ei_" + "0" * 64)  # a fake key: nothing is called
    monkeypatch.setenv("EI_PROJECT_ID", "12345")
    real = get_studio("edgeimpulse", workspace=cloud.workspace)
    assert type(local) is type(real) is EdgeImpulseStudio
    assert local.api_url == cloud.url + "/v1" and local.url == cloud.url
    assert real.api_url == "https://studio.edgeimpulse.com/v1" and real.url == "https://ingestion.edgeimpulse.com"
    assert real.project_id == 12345 and "0" * 16 not in repr(real)


def test_project_info_and_key(studio):
    projects = studio.api("ProjectsApi").list_projects().projects
    assert studio.project_id in [p.id for p in projects]
    info = studio.project_info()
    assert info.project.id == studio.project_id
    assert studio.key_role() == "admin"


def test_upload_with_boxes_list_get_and_image(studio):
    a, b = _jpeg(1), _jpeg(2)
    na, nb = f"a-{uuid.uuid4().hex[:8]}.jpg", f"b-{uuid.uuid4().hex[:8]}.jpg"
    res = _upload(studio, [(na, a), (nb, b)], boxes={na: [BBox("apple", 3.4, 4.0, 10, 12)]},
                  metadata={"frame_index": 3, "ground_truth": [{"label": "apple", "x": 1, "y": 1, "width": 3, "height": 3}]},
                  device="cam-conf")
    assert [r.filename for r in res] == [na, nb] and all(r.sample_id and not r.duplicate for r in res)
    s = studio.get_sample(res[0].sample_id)
    assert s.filename == na and s.category == "training" and s.width == 64 and s.height == 48
    assert s.boxes == [BBox("apple", 3, 4, 10, 12)] and s.labeled  # whole pixels, as Edge Impulse stores boxes
    assert s.device == "cam-conf" and s.metadata["frame_index"] == 3 and s.metadata["ground_truth"][0]["label"] == "apple"
    assert studio.get_image(res[0].sample_id) == a  # the bytes as uploaded
    unlabeled = studio.get_sample(res[1].sample_id)
    assert not unlabeled.labeled and unlabeled.boxes == []
    ids = {x.id for x in studio.samples(device="cam-conf")}
    assert {r.sample_id for r in res} <= ids
    assert res[0].sample_id in {x.id for x in studio.samples(label="apple", category="training")}
    assert res[1].sample_id not in {x.id for x in studio.samples(label="apple")}
    assert res[0].sample_id not in {x.id for x in studio.samples(category="testing")}


def test_same_content_is_stored_once(studio):
    data = _jpeg(3)
    first = _upload(studio, [(f"c-{uuid.uuid4().hex[:8]}.jpg", data)])[0]
    again = _upload(studio, [("other-name.jpg", data)])[0]
    assert again.duplicate and again.sample_id is None
    if studio.target == "local":
        assert again.duplicate_of == first.sample_id
    strict = studio.upload([("third.jpg", data)], disallow_duplicates=True)[0]
    assert strict.duplicate and "already exists" in strict.error


def test_paging_through_list_samples(studio):
    res = _upload(studio, [(f"p{i}-{uuid.uuid4().hex[:6]}.jpg", _jpeg(10 + i)) for i in range(5)], device="cam-page")
    ids = {r.sample_id for r in res}
    raw = studio.api("RawDataApi")
    flt = json.dumps([{"key": "device", "op": "eq", "values": ["cam-page"]}])
    seen, offset = [], 0
    while True:
        page = raw.list_samples(studio.project_id, "training", limit=2, offset=offset, metadata=flt)
        assert len(page.samples) <= 2
        seen += [x.id for x in page.samples]
        offset += len(page.samples)
        if not page.samples:
            break
    assert set(seen) >= ids and len(seen) == len(set(seen)) == page.total_count
    assert raw.count_samples(studio.project_id, "training", metadata=flt).count == page.total_count


def test_box_edits_label_move_rename_metadata_delete(studio):
    sid = _upload(studio, [(f"e-{uuid.uuid4().hex[:8]}.jpg", _jpeg(20))])[0].sample_id
    s = studio.set_boxes(sid, [BBox("banana", 1.2, 1.0, 5.0, 5.6), BBox("apple", 10, 10, 8, 8)])
    assert [b.label for b in s.boxes] == ["banana", "apple"] and s.boxes[0] == BBox("banana", 1, 1, 5, 6)
    s = studio.update_sample(sid, metadata={"frame_index": 7, "note": "x"}, category="testing", label="banana")
    assert s.category == "testing" and s.label == "banana" and s.metadata["frame_index"] == 7
    s = studio.update_sample(sid, metadata={"note": None})
    assert "note" not in s.metadata and s.metadata["frame_index"] == 7
    assert sid in {x.id for x in studio.samples(category="testing")}
    from edgeimpulse_api.models import RenameSampleRequest

    studio.api("RawDataApi").rename_sample(studio.project_id, sid, RenameSampleRequest(name="renamed.jpg"))
    assert studio.get_sample(sid).filename.startswith("renamed")
    studio.delete_sample(sid)
    with pytest.raises(NotFound, match="No sample found|does not exist|not found"):
        studio.get_sample(sid)


def test_label_queue(studio):
    res = _upload(studio, [(f"q{i}-{uuid.uuid4().hex[:6]}.jpg", _jpeg(30 + i)) for i in range(2)])
    queue = studio.label_queue()
    assert {r.sample_id for r in res} <= set(queue)
    count = studio.api("RawDataApi").get_object_detection_label_queue_count(studio.project_id).samples_count
    assert count == len(queue)
    studio.set_boxes(res[0].sample_id, [])  # labeled: no objects in the picture
    assert res[0].sample_id not in studio.label_queue() and res[1].sample_id in studio.label_queue()
    assert studio.get_sample(res[0].sample_id).labeled
    assert studio.update_sample(res[0].sample_id, labeled=False).labeled is False  # back into the queue
    assert res[0].sample_id in studio.label_queue()
    assert {x.id for x in studio.samples(labeled=False)} >= {r.sample_id for r in res}


def test_labels_and_add_label(studio):
    name = f"fruit{uuid.uuid4().hex[:6]}"
    assert name not in studio.labels()
    assert name in studio.add_label(name)
    assert name in studio.labels()
    with pytest.raises(ValueError, match="lowercase"):
        studio.add_label("<b>x</b>")


def test_split_category_by_hash(studio):
    res = _upload(studio, [(f"s{i}-{uuid.uuid4().hex[:6]}.jpg", _jpeg(40 + i)) for i in range(6)], category="split")
    cats = {studio.get_sample(r.sample_id).category for r in res}
    assert cats <= {"training", "testing"}


def test_failure_is_success_false_raised_once_with_edge_impulses_message(studio):
    from helpers.studio.edgeimpulse import EdgeImpulseError

    with pytest.raises(NotFound) as ei:
        studio.get_sample(987654321)
    assert isinstance(ei.value, EdgeImpulseError) and "987654321" in str(ei.value)
    assert ei.value.__cause__ is None and ei.value.__context__ is None or not isinstance(ei.value.__context__, EdgeImpulseError)
    if studio.target == "local":
        # the wire format: HTTP 200 with success false, as Edge Impulse answers
        r = requests.get(f"{studio.api_url}/api/{studio.project_id}/raw-data/987654321",
                         headers={"x-api-key": studio.api_key.get_secret_value()}, timeout=10)
        assert r.status_code == 200 and r.json()["success"] is False and "987654321" in r.json()["error"]


def test_wrong_key_is_refused(studio):
    from helpers.errors import Unauthorized
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    bad = EdgeImpulseStudio(studio.workspace, target=studio.target, api_key="ei_" + "1" * 64, project_id=studio.project_id,
                            api_url=studio.api_url, ingestion_url=studio.url)
    with pytest.raises(Unauthorized):
        bad.samples()
    with pytest.raises(Unauthorized):
        bad.upload([("x.jpg", _jpeg(50))])


def _require_training(studio):
    if studio.target != "local" and os.environ.get("EI_ALLOW_TRAINING") != "1":
        pytest.skip("set EI_ALLOW_TRAINING=1 to replace the real project's impulse and train it")


def test_impulse_round_trip(studio):
    _require_training(studio)
    imp = studio.set_impulse(input_size=96, color="grayscale", arch="fomo-box", epochs=3, learning_rate=0.01, batch_size=8)
    assert (imp["input_size"], imp["color"], imp["arch"], imp["epochs"], imp["batch_size"]) == (96, "grayscale", "fomo-box", 3, 8)
    assert imp["learning_rate"] == pytest.approx(0.01) and imp["learn_block_type"] == "keras-object-detection"
    imp = studio.set_impulse(input_size=160, color="RGB")
    assert (imp["input_size"], imp["color"]) == (160, "RGB")
    if studio.target == "local":
        from edgeimpulse_api.models import Impulse, ImpulseDspBlock, ImpulseInputBlock, ImpulseLearnBlock

        from helpers.studio.edgeimpulse import EdgeImpulseError

        bad = Impulse(id=1, name="x", type="default", post_processing_blocks=[],
                      input_blocks=[ImpulseInputBlock(id=1, type="image", name="i", title="i", image_width=100, image_height=100)],
                      dsp_blocks=[ImpulseDspBlock(id=2, type="image", name="d", axes=["image"], title="d", implementation_version=1)],
                      learn_blocks=[ImpulseLearnBlock(id=3, type="keras-object-detection", name="l", dsp=[2], title="l")])
        with pytest.raises(EdgeImpulseError, match="96, 160 or 320"):
            studio._call("ImpulseApi", "create_impulse", studio.project_id, bad)  # noqa: SLF001


@pytest.mark.slow
def test_training_job_to_completion_with_logs_and_model_download(fresh_cloud, tmp_path):
    """A training job on the stand-in runs helpers.train in the background; logs stream; the model downloads."""
    from helpers.inference.onnx import OnnxDetector
    from helpers.sim.scenes import render_dataset
    from helpers.studio.edgeimpulse import EdgeImpulseStudio, TrainingFailed

    studio = EdgeImpulseStudio(fresh_cloud.workspace)
    scenes = [{"objects": ["apple"], "distractors": []}, {"objects": ["apple", "apple"], "distractors": []}]
    for split, n, seed in (("training", 16, 1), ("testing", 4, 2)):
        for i, (rgb, boxes) in enumerate(render_dataset(n, scenes, size=(96, 96), seed=seed)):
            ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            name = f"{split}-{i}.png"
            r = studio.upload([(name, buf.tobytes())], category=split, boxes={name: boxes})[0]
            assert r.sample_id and studio.get_sample(r.sample_id).labeled
    from helpers.errors import ConfigError

    with pytest.raises(ConfigError, match="no impulse"):
        studio.train(tmp_path / "none")
    studio.set_impulse(input_size=96, color="RGB", arch="fomo-box", epochs=2, batch_size=8)
    lines: list[str] = []
    result = studio.train(tmp_path / "model", timeout_s=480, poll_s=0.5, on_log=lines.append)
    assert any(ln.startswith("Epoch 1/2") for ln in lines) and any("Finished training" in ln for ln in lines)
    assert lines == result["log"] and result["format"] == "onnx"
    det = OnnxDetector(tmp_path / "model")
    assert det.labels == ["apple"] and det.input_size == 96
    mv = studio.get_model(result["version"])
    assert mv.stage == "candidate" and mv.card["studio_job"]["job_id"] == result["job_id"]
    status = studio.api("JobsApi").get_job_status(studio.project_id, result["job_id"]).job
    assert status.finished_successful is True and status.finished is not None
    # the trained impulse as an .eim deployment (DeploymentApi.download_build)
    eim = studio.download_eim(tmp_path / "model.eim")
    assert eim.read_bytes()[:2] == b"#!" and os.access(eim, os.X_OK)
    # a job past its timeout is cancelled (JobsApi.cancel_job) and reported
    studio.set_impulse(input_size=96, color="RGB", arch="fomo-box", epochs=200, batch_size=8)
    with pytest.raises(TrainingFailed, match="cancelled"):
        studio.train(tmp_path / "slow", timeout_s=3, poll_s=0.5)
    jobs = studio.api("JobsApi").list_active_jobs(studio.project_id).jobs
    assert jobs == []


def test_moving_a_dataset_both_ways_is_idempotent_by_content_hash(fresh_cloud, tmp_path):
    from helpers.localcloud import ensure_running, stop
    from helpers.studio.edgeimpulse import EdgeImpulseStudio
    from helpers.studio.transfer import copy_dataset

    other = tmp_path / "other-ws"
    ensure_running(other)
    try:
        src, dst = EdgeImpulseStudio(fresh_cloud.workspace), EdgeImpulseStudio(other)
        names = [f"t{i}.jpg" for i in range(3)]
        res = src.upload([(n, _jpeg(60 + i)) for i, n in enumerate(names)], category="training",
                         boxes={names[0]: [BBox("apple", 2, 2, 9, 9)]}, device="cam-move", metadata={"frame_index": 4})
        src.update_sample(res[1].sample_id, category="testing")
        src.set_boxes(res[2].sample_id, [])
        first = copy_dataset(src, dst)
        assert first.summary() == {"copied": 3, "already_there": 0, "boxes_updated": 0, "failed": 0}
        again = copy_dataset(src, dst)
        assert again.summary() == {"copied": 0, "already_there": 3, "boxes_updated": 0, "failed": 0}
        copied = {s.filename: s for s in dst.samples()}
        assert sorted(copied) == names
        assert copied[names[0]].boxes == [BBox("apple", 2, 2, 9, 9)] and copied[names[0]].labeled
        assert copied[names[0]].device == "cam-move" and copied[names[0]].metadata["frame_index"] == 4
        assert copied[names[1]].category == "testing" and not copied[names[1]].labeled
        assert copied[names[2]].labeled and copied[names[2]].boxes == []
        assert {s.sha256 for s in dst.samples()} == {s.sha256 for s in src.samples()}
        # the other way: a sample labeled at the destination brings its boxes back, nothing is duplicated
        dst.set_boxes(copied[names[1]].id, [BBox("banana", 1, 1, 4, 4)])
        extra = dst.upload([("new-there.jpg", _jpeg(70))])[0]
        back = copy_dataset(dst, src)
        assert back.summary() == {"copied": 1, "already_there": 3, "boxes_updated": 1, "failed": 0}
        assert back.copied == [extra.sample_id]
        assert src.get_sample(res[1].sample_id).boxes == [BBox("banana", 1, 1, 4, 4)]
        assert copy_dataset(dst, src).summary()["copied"] == 0
        assert len(src.samples()) == len(dst.samples()) == 4
    finally:
        stop(other)


def test_client_follows_the_local_cloud_to_a_new_port(fresh_cloud):
    """The same studio object keeps working after the local cloud restarted on another port."""
    import socket

    from helpers import localcloud
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    studio = EdgeImpulseStudio(fresh_cloud.workspace, timeout=2)
    sid = studio.upload([("before.jpg", _jpeg(80))])[0].sample_id
    old_port = fresh_cloud.info["port"]
    localcloud.stop(fresh_cloud.workspace)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", old_port))  # another program listens there now: the service moves
    blocker.listen()
    try:
        info = localcloud.ensure_running(fresh_cloud.workspace)
        assert info["port"] != old_port
        assert studio.get_sample(sid).filename == "before.jpg"  # re-reads service.json once and retries
        assert studio.api_url == info["url"] + "/v1"
        after = EdgeImpulseStudio(fresh_cloud.workspace, timeout=2)
        localcloud.stop(fresh_cloud.workspace)
        blocker2 = socket.socket()
        blocker2.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker2.bind(("127.0.0.1", info["port"]))
        blocker2.listen()
        try:
            info2 = localcloud.ensure_running(fresh_cloud.workspace)
            assert after.upload([("after.jpg", _jpeg(81))])[0].sample_id  # the upload follows too
            assert after.url == info2["url"]
        finally:
            blocker2.close()
    finally:
        blocker.close()


def test_device_key_only_ingests(studio):
    """A device's key uploads (the SDK) but every management call through the generated client is refused."""
    from helpers.errors import Forbidden, Unauthorized
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    if studio.target != "local" and not os.environ.get("EI_DEVICE_API_KEY"):
        pytest.skip("EI_DEVICE_API_KEY (an ingestion-only key of the project) is not set")
    device = EdgeImpulseStudio(studio.workspace, target=studio.target, api_key=studio.device_key(), project_id=studio.project_id,
                               api_url=studio.api_url, ingestion_url=studio.url)
    (r,) = device.upload([(f"dev-{uuid.uuid4().hex[:8]}.jpg", _jpeg(90))])
    assert r.sample_id
    studio._test_created.append(r.sample_id)  # noqa: SLF001
    assert device.key_role() in ("ingestion_deployment", "ingestiononly")
    for call in (lambda: device.samples(), lambda: device.get_sample(r.sample_id), lambda: device.delete_sample(r.sample_id),
                 lambda: device.set_boxes(r.sample_id, []), lambda: device.project_info(), lambda: device.label_queue()):
        with pytest.raises((Forbidden, Unauthorized)):
            call()
    assert studio.get_sample(r.sample_id).filename.startswith("dev-")  # still there, untouched
