"""The local studio through the real service: ingestion, samples, labels, snapshots, models."""
from __future__ import annotations

import hashlib
import json
import threading

import pytest
import requests

from helpers.errors import BackendNotFound, NotFound, ServiceError, Unauthorized
from helpers.geometry import BBox
from helpers.studio import Studio, get_studio
from helpers.studio.ingestion import IngestionClient


def tiny_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def post(cloud, category="training", files=None, headers=None, key=None):
    h = {"x-api-key": key if key is not None else cloud.studio.api_key.get_secret_value(), **(headers or {})}
    return requests.post(f"{cloud.url}/api/{category}/files", files=files or [], headers=h, timeout=10)


def test_get_studio_registry(cloud):
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    s = get_studio("local", workspace=cloud.workspace)
    assert isinstance(s, EdgeImpulseStudio) and isinstance(s, Studio) and s.target == "local"
    assert cloud.studio.api_key.get_secret_value().startswith("ei_") and "ei_" not in repr(s)
    with pytest.raises(BackendNotFound, match="edgeimpulse"):
        get_studio("nope", workspace=cloud.workspace)


def test_upload_shapes_duplicates_and_metadata(cloud, make_jpeg, unique_name):
    dev = unique_name("cam")
    img = make_jpeg(1)
    r = post(cloud, files=[("data", ("a.jpg", img, "image/jpeg"))],
             headers={"x-label": "apple", "x-metadata": json.dumps({"device": dev, "captured_at": "2026-01-01T00:00:00Z",
                                                                     "ground_truth": [{"label": "apple", "x": 1, "y": 2, "width": 3, "height": 4}]})})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["files"][0]["success"] is True and body["files"][0]["fileName"] == "a.jpg"
    sid = body["files"][0]["sampleId"]
    s = cloud.studio.get_sample(sid)
    assert s.sha256 == hashlib.sha256(img).hexdigest() and (s.width, s.height) == (64, 48)
    assert s.device == dev and s.captured_at == "2026-01-01T00:00:00Z" and s.label == "apple" and not s.labeled
    assert s.metadata["ground_truth"][0]["label"] == "apple"
    assert cloud.studio.get_image(sid) == img
    # same bytes again: reported with the existing id, not stored twice
    dup = post(cloud, files=[("data", ("again.jpg", img, "image/jpeg"))], headers={"x-disallow-duplicates": "1"}).json()
    assert dup["files"][0]["success"] is False and dup["files"][0]["duplicateOf"] == sid
    res = cloud.studio.upload([("b.jpg", img)], device=dev)
    assert res[0].duplicate and res[0].duplicate_of == sid and res[0].sample_id is None
    assert len(cloud.studio.samples(device=dev)) == 1


def test_boxes_via_labels_file_and_header(cloud, make_jpeg, unique_name):
    dev = unique_name("cam")
    a, b, c = make_jpeg(10), make_jpeg(11), make_jpeg(12)
    labels = {"version": 1, "type": "bounding-box-labels",
              "boundingBoxes": {"a.jpg": [{"label": "apple", "x": 5, "y": 6, "width": 20, "height": 10}], "b.jpg": []}}
    r = post(cloud, files=[("data", ("a.jpg", a, "image/jpeg")), ("data", ("b.jpg", b, "image/jpeg")),
                           ("data", ("bounding_boxes.labels", json.dumps(labels).encode(), "application/json"))],
             headers={"x-metadata": json.dumps({"device": dev})})
    assert r.status_code == 200, r.text
    ids = {f["fileName"]: f["sampleId"] for f in r.json()["files"]}
    sa, sb = cloud.studio.get_sample(ids["a.jpg"]), cloud.studio.get_sample(ids["b.jpg"])
    assert sa.labeled and sa.boxes == [BBox("apple", 5, 6, 20, 10)]
    assert sb.labeled and sb.boxes == []
    r = post(cloud, files=[("data", ("c.jpg", c, "image/jpeg"))],
             headers={"x-file-name": "renamed.jpg", "x-metadata": json.dumps({"device": dev}),
                      "x-bounding-boxes": json.dumps([{"label": "Banana", "x": 60, "y": 40, "width": 20, "height": 20}])})
    f = r.json()["files"][0]
    sc = cloud.studio.get_sample(f["sampleId"])
    assert f["fileName"] == sc.filename == "renamed.jpg"
    assert sc.boxes == [BBox("banana", 60, 40, 4, 8)]  # lowercased, clipped to 64x48
    assert {"apple", "banana"} <= set(cloud.studio.labels())
    # the IngestionClient (what the collector uses) sends boxes as bounding_boxes.labels
    client = IngestionClient(cloud.url, cloud.studio.api_key)
    res = client.upload("testing", [("d.jpg", make_jpeg(13))], boxes={"d.jpg": [BBox("apple", 1, 1, 5, 5, value=0.9)]},
                        metadata={"device": dev})
    sd = cloud.studio.get_sample(res[0].sample_id)
    assert sd.category == "testing" and sd.boxes == [BBox("apple", 1, 1, 5, 5)]
    # filters
    assert {s.id for s in cloud.studio.samples(device=dev, labeled=True)} == {ids["a.jpg"], ids["b.jpg"], sc.id, sd.id}
    assert {s.id for s in cloud.studio.samples(device=dev, label="banana")} == {sc.id}
    assert {s.id for s in cloud.studio.samples(device=dev, category="testing")} == {sd.id}
    assert cloud.studio.samples(device=dev, labeled=False) == []


def test_set_boxes_update_delete(cloud, make_jpeg, unique_name):
    dev = unique_name("cam")
    sid = cloud.studio.upload([("x.jpg", make_jpeg(20))], device=dev)[0].sample_id
    s = cloud.studio.set_boxes(sid, [BBox("pear", 0, 0, 10, 10)])
    assert s.labeled and s.boxes[0].label == "pear" and "pear" in cloud.studio.labels()
    s = cloud.studio.update_sample(sid, metadata={"frame_index": 7}, category="testing")
    assert s.metadata == {"device": dev, "frame_index": 7} and s.category == "testing"
    assert cloud.studio.add_label("kiwi") == sorted(set(cloud.studio.labels()))
    cloud.studio.delete_sample(sid)
    with pytest.raises(NotFound):
        cloud.studio.get_sample(sid)
    with pytest.raises(NotFound):
        cloud.studio.set_boxes(sid, [])
    with pytest.raises(NotFound):
        cloud.studio.get_image(sid)


@pytest.mark.parametrize("case", ["no-key", "wrong-key", "corrupt", "not-image", "truncated", "slash", "dotdot", "header-name",
                                  "bad-metadata", "bad-boxes-header", "bad-box", "bad-labels-file", "no-data", "category"])
def test_bad_uploads_write_nothing(cloud, make_jpeg, unique_name, case):
    dev = unique_name("cam")
    good = ("data", ("ok.jpg", make_jpeg(30 + hash(case) % 1000), "image/jpeg"))
    meta = {"x-metadata": json.dumps({"device": dev})}
    spec = {
        "no-key": dict(key="", expect=(401, "x-api-key")),
        "wrong-key": dict(key="ei_" + "0" * 32, expect=(401, "x-api-key")),
        "corrupt": dict(files=[good, ("data", ("bad.jpg", b"\xff\xd8\xff\xe0garbage" * 10, "image/jpeg"))], expect=(400, "data")),
        "not-image": dict(files=[("data", ("notes.txt", b"hello world", "text/plain"))], expect=(400, "data")),
        "truncated": dict(files=[("data", ("t.jpg", make_jpeg(99)[:200], "image/jpeg"))], expect=(400, "data")),
        "slash": dict(files=[("data", ("../evil.jpg", make_jpeg(31), "image/jpeg"))], expect=(400, "data")),
        "dotdot": dict(files=[("data", ("a..b.jpg", make_jpeg(32), "image/jpeg"))], expect=(400, "data")),
        "header-name": dict(files=[good], headers={"x-file-name": "dir/evil.jpg"}, expect=(400, "x-file-name")),
        "bad-metadata": dict(files=[good], headers={"x-metadata": "{nope"}, expect=(400, "x-metadata")),
        "bad-boxes-header": dict(files=[good], headers={"x-bounding-boxes": json.dumps([{"label": "apple", "x": "a"}])},
                                 expect=(400, "x-bounding-boxes[0].x")),
        "bad-box": dict(files=[good], headers={"x-bounding-boxes": json.dumps([{"label": "apple", "x": 1, "y": 1, "width": 0, "height": 3}])},
                        expect=(400, "x-bounding-boxes[0]")),
        "bad-labels-file": dict(files=[good, ("data", ("bounding_boxes.labels", b"{]", "application/json"))],
                                expect=(400, "bounding_boxes.labels")),
        "no-data": dict(files=[("other", ("x.jpg", make_jpeg(33), "image/jpeg"))], expect=(400, "data")),
        "category": dict(files=[good], category="validation", expect=(404, "category")),
    }[case]
    headers = {**meta, **spec.get("headers", {})}
    r = post(cloud, category=spec.get("category", "training"), files=spec.get("files", [good]), headers=headers, key=spec.get("key"))
    status, field = spec["expect"]
    assert r.status_code == status, r.text
    assert r.json()["success"] is False and r.json()["field"] == field and r.json()["error"]
    assert cloud.studio.samples(device=dev) == []


def test_client_errors_map_to_classes(cloud):
    with pytest.raises(Unauthorized):
        IngestionClient(cloud.url, "ei_" + "1" * 32).upload("training", [("a.jpg", b"x")])
    # the SDK reports a refused file per file (Edge Impulse's upload_samples fails list), nothing is stored
    (bad,) = cloud.studio.upload([("a.jpg", b"not an image")])
    assert bad.sample_id is None and "not a readable image" in bad.error
    r = post(cloud, files=[("data", ("a.jpg", b"not an image", "image/jpeg"))])
    assert r.status_code == 400 and r.json()["field"] == "data"
    with pytest.raises(NotFound):
        cloud.studio.get_model(9999)


def test_concurrent_uploads_lose_nothing(cloud, make_jpeg, unique_name):
    dev = unique_name("cam")
    images = [[make_jpeg(1000 + t * 100 + i, size=(32, 32)) for i in range(10)] for t in range(8)]
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            client = IngestionClient(cloud.url, cloud.studio.api_key, batch_size=1)
            for i, img in enumerate(images[t]):
                res = client.upload("training", [(f"t{t}-{i}.jpg", img)], metadata={"device": dev})
                assert res[0].sample_id is not None
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors, errors[:1]
    got = cloud.studio.samples(device=dev)
    assert len(got) == 80
    assert {s.sha256 for s in got} == {hashlib.sha256(i).hexdigest() for row in images for i in row}


def test_rebalance_and_snapshots(fresh_cloud, make_jpeg):
    studio = fresh_cloud.studio
    res = studio.upload([(f"s{i}.jpg", make_jpeg(500 + i)) for i in range(20)],
                        boxes={f"s{i}.jpg": [BBox("apple", 1, 1, 10, 10)] for i in range(15)})
    assert len(res) == 20
    r1 = studio.rebalance(0.3)
    assert r1["training"] + r1["testing"] == 20
    assert studio.rebalance(0.3)["moved"] == 0  # deterministic by hash
    snap = studio.snapshot()
    assert len(snap.items) == 15 and snap.labels == ["apple"]
    assert {i.split for i in snap.items} <= {"train", "test"}
    assert len(snap.split("train")) + len(snap.split("test")) == 15
    assert studio.snapshot().id == snap.id  # same content, same id
    studio.set_boxes(res[15].sample_id, [BBox("banana", 2, 2, 5, 5)])
    snap2 = studio.snapshot()
    assert snap2.id != snap.id and snap2.labels == ["apple", "banana"]
    assert studio.get_snapshot(snap.id).items == snap.items  # immutable: still fetchable as it was
    assert [s["id"] for s in studio.snapshots()] == [snap.id, snap2.id]
    with pytest.raises(NotFound):
        studio.get_snapshot("0" * 64)


def test_model_registry(fresh_cloud, tmp_path):
    studio = fresh_cloud.studio
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    v1 = studio.register_model(onnx_path, {"labels": ["apple"], "input_size": [320, 320]})
    v2 = studio.register_model(onnx_path, {"labels": ["apple", "banana"], "parent_version": 1})
    assert (v1.version, v2.version) == (1, 2) and v1.stage == "candidate"
    assert v1.sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest() and v2.card["version"] == 2
    assert studio.set_model_stage(1, "production").stage == "production"
    assert studio.set_model_stage(2, "production").stage == "production"
    assert [m.stage for m in studio.models()] == ["production", "production"]  # the deploy gate retires explicitly
    assert studio.set_model_stage(1, "retired").stage == "retired"
    out = studio.download_model(2, tmp_path / "dl")
    assert (out / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert json.loads((out / "model.json").read_text())["labels"] == ["apple", "banana"]
    with pytest.raises(ValueError):
        studio.set_model_stage(1, "archived")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not onnx \x00\x01")
    with pytest.raises(ServiceError) as exc:
        studio.register_model(bad, {})
    assert exc.value.status == 400 and exc.value.field == "model"
    r = requests.post(f"{fresh_cloud.url}/api/models", headers={"x-api-key": studio.api_key.get_secret_value()},
                      files={"model": ("m.onnx", onnx_path.read_bytes()), "card": (None, "[1, 2]")}, timeout=10)
    assert r.status_code == 400 and r.json()["field"] == "card"
    assert len(studio.models()) == 2  # rejected registrations wrote nothing
    assert sorted(p.name for p in (fresh_cloud.workspace / "localcloud" / "files" / "models").iterdir()) == ["1", "2"]


def test_query_validation_is_400_naming_the_field(cloud):
    h = {"x-api-key": cloud.studio.api_key.get_secret_value()}
    r = requests.get(f"{cloud.url}/api/samples", params={"labeled": "maybe"}, headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["field"] == "labeled"
    r = requests.get(f"{cloud.url}/api/samples/abc", headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["field"] == "sample_id"
    r = requests.put(f"{cloud.url}/api/samples/1/boxes", data=b"{oops", headers=h, timeout=5)
    assert r.status_code == 400 and r.json()["field"] == "body"
