"""Edge Impulse's Python SDK (`edgeimpulse`), unmodified, against the local studio: `edgeimpulse.data` and `edgeimpulse.model`.

The SDK is pointed at the stand-in as a user points it anywhere: `EI_API_KEY`, `EI_API_ENDPOINT`
and `EI_INGESTION_ENDPOINT` (what `python -m helpers.localcloud credentials --format env` prints;
the SDK reads them when imported, so in-process tests set the module's `API_KEY`, `API_ENDPOINT`
and `INGESTION_ENDPOINT` the same way, and one test runs a fresh interpreter with the printed
environment). The same data tests run, marked `edgeimpulse`, against a real Edge Impulse project
when EI_API_KEY and EI_PROJECT_ID are set (skipped otherwise); the destructive and model tests
are local only (each names why in `COVERAGE`).

`test_every_public_sdk_function_is_covered` enumerates the public functions of `edgeimpulse.data`
and `edgeimpulse.model` and fails naming each one `COVERAGE` does not map to a test here or to
the reason it does not apply: a new SDK version shows its gaps.
"""
from __future__ import annotations

import inspect
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(600)

# every public function of edgeimpulse.data and edgeimpulse.model -> the test that drives it, or why it does not apply
COVERAGE = {
    "data.upload_samples": "test_upload_list_download_delete",
    "data.get_sample_ids": "test_upload_list_download_delete",
    "data.get_filename_by_id": "test_upload_list_download_delete",
    "data.download_samples_by_ids": "test_upload_list_download_delete",
    "data.delete_sample_by_id": "test_upload_list_download_delete",
    "data.delete_samples_by_filename": "test_upload_list_download_delete",
    "data.infer_from_filename": "test_directories_and_exported_dataset",
    "data.upload_directory": "test_directories_and_exported_dataset",
    "data.upload_plain_directory": "test_directories_and_exported_dataset",
    "data.upload_exported_dataset": "test_directories_and_exported_dataset",
    "data.delete_all_samples": "test_delete_all_samples_by_category_and_all",
    "data.upload_numpy": "not applicable: time-series samples (values per sensor axis at a sample rate), not images",
    "data.numpy_timeseries_to_sample": "not applicable: builds a time-series sample, not an image",
    "data.upload_pandas_dataframe": "not applicable: tabular/time-series rows, not images",
    "data.upload_pandas_dataframe_wide": "not applicable: tabular/time-series rows, not images",
    "data.upload_pandas_sample": "not applicable: tabular/time-series rows, not images",
    "data.upload_pandas_dataframe_with_group": "not applicable: tabular/time-series rows, not images",
    "data.pandas_dataframe_to_sample": "not applicable: builds a time-series sample, not an image",
    "model.list_engines": "test_engines_model_types_targets_and_profile_devices",
    "model.list_model_types": "test_engines_model_types_targets_and_profile_devices",
    "model.list_deployment_targets": "test_engines_model_types_targets_and_profile_devices",
    "model.list_profile_devices": "test_engines_model_types_targets_and_profile_devices",
    "model.deploy": "test_deploy_a_model_the_user_brings_as_eim",
    "model.profile": "test_profile_is_refused_naming_what_is_not_mirrored",
}
LIVE_SKIP = {
    "delete_all": "deletes every sample of the project: never run against a real one",
    "model": "deploys and profiles a model the user brings, which replaces the real project's impulse",
}


def _jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng([int.from_bytes(uuid.uuid4().bytes[:4], "little"), seed])
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def _point_sdk(monkeypatch, workspace: Path) -> dict:
    """Set the SDK's settings from `credentials()`, as its import reads them from EI_* variables."""
    import edgeimpulse

    from helpers.localcloud.credentials import credentials

    env = credentials(workspace)["env"]
    for attr, name in (("API_KEY", "EI_API_KEY"), ("API_ENDPOINT", "EI_API_ENDPOINT"),
                       ("INGESTION_ENDPOINT", "EI_INGESTION_ENDPOINT")):
        monkeypatch.setattr(edgeimpulse, attr, env[name])
    return env


@pytest.fixture(params=["local", pytest.param("edgeimpulse", marks=pytest.mark.edgeimpulse)])
def ei(request, cloud, monkeypatch):
    """The `edgeimpulse` module pointed at the local studio, or at the real project of EI_API_KEY/EI_PROJECT_ID."""
    import edgeimpulse

    if request.param == "edgeimpulse":
        if not (os.environ.get("EI_API_KEY") and os.environ.get("EI_PROJECT_ID")):
            pytest.skip("EI_API_KEY and EI_PROJECT_ID are not set: no real Edge Impulse project to test against")
        monkeypatch.setattr(edgeimpulse, "API_KEY", os.environ["EI_API_KEY"])
        monkeypatch.setattr(edgeimpulse, "API_ENDPOINT", os.environ.get("EI_API_ENDPOINT", "https://studio.edgeimpulse.com/v1"))
        monkeypatch.setattr(edgeimpulse, "INGESTION_ENDPOINT",
                            os.environ.get("EI_INGESTION_ENDPOINT", "https://ingestion.edgeimpulse.com"))
    else:
        _point_sdk(monkeypatch, cloud.workspace)
    return edgeimpulse


def _ids(infos, prefix: str) -> dict[str, int]:
    return {i.filename: i.sample_id for i in infos if i.filename.startswith(prefix)}


def test_upload_list_download_delete(ei):
    from edgeimpulse.data.sample_type import Sample

    prefix = f"sdk-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}-{i}.jpg" for i in range(7)]
    images = {n: _jpeg(i) for i, n in enumerate(names)}
    boxes = [{"label": "apple", "x": 3, "y": 4, "width": 10, "height": 12}]
    samples = [Sample(filename=n, data=io.BytesIO(images[n]), category="testing" if i == 6 else "training",
                      bounding_boxes=boxes if i < 2 else None, metadata={"run": prefix}) for i, n in enumerate(names)]
    res = ei.data.upload_samples(samples)
    try:
        assert len(res.successes) == 7 and not res.fails
        # get_sample_ids() with no labels: the SDK sends labels=null (any label) per category, paged over 4 workers
        every = _ids(ei.data.get_sample_ids(), prefix)
        assert set(every) == set(names)
        by_name = _ids(ei.data.get_sample_ids(filename=prefix, num_workers=3), prefix)
        assert by_name == every  # paging by offset/limit over three workers: each sample once
        assert set(_ids(ei.data.get_sample_ids(filename=prefix, category="testing"), prefix)) == {names[6]}
        assert set(_ids(ei.data.get_sample_ids(filename=prefix, labels="apple"), prefix)) == set(names[:2])
        assert ei.data.get_sample_ids(filename=prefix, category="validation") == []
        with pytest.raises(ValueError, match="Invalid category"):
            ei.data.get_sample_ids(category="nonsense")
        assert ei.data.get_filename_by_id(every[names[0]]) == names[0]
        # download: the bytes as uploaded, with the file name, boxes and metadata
        got = {s.filename: s for s in ei.data.download_samples_by_ids([every[names[0]], every[names[6]]])}
        assert set(got) == {names[0], names[6]}
        assert got[names[0]].data.read() == images[names[0]] and got[names[6]].category == "testing"
        assert [(b["label"], b["x"], b["y"], b["width"], b["height"]) for b in got[names[0]].bounding_boxes] == [("apple", 3, 4, 10, 12)]
        assert got[names[0]].metadata["run"] == prefix
        # delete by id, then by file name (without its extension, as the SDK documents)
        assert ei.data.delete_sample_by_id(every[names[0]]) is not None
        assert ei.data.get_filename_by_id(every[names[0]]) is None  # Edge Impulse's "No sample found with ID"
        assert ei.data.delete_sample_by_id(every[names[0]]) is None
        assert len(ei.data.delete_samples_by_filename(f"{prefix}-1")) == 1
        assert set(_ids(ei.data.get_sample_ids(filename=prefix), prefix)) == set(names[2:])
    finally:
        for info in ei.data.get_sample_ids(filename=prefix):
            ei.data.delete_sample_by_id(info.sample_id)
    assert ei.data.get_sample_ids(filename=prefix) == []


def test_directories_and_exported_dataset(ei, tmp_path):
    prefix = f"dir-{uuid.uuid4().hex[:8]}"
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(2):
        (plain / f"apple.{prefix}-{i}.jpg").write_bytes(_jpeg(10 + i))
    exported = tmp_path / "exported"
    (exported / "training").mkdir(parents=True)
    name = f"{prefix}-exp.jpg"
    (exported / "training" / name).write_bytes(_jpeg(20))
    (exported / "info.labels").write_text(json.dumps({"version": 1, "files": [{
        "path": f"training/{name}", "category": "training", "label": {"type": "label", "label": "banana"},
        "boundingBoxes": [{"label": "banana", "x": 5, "y": 6, "width": 20, "height": 10}], "metadata": {"src": prefix}}]}))
    try:
        from edgeimpulse.data.sample_type import Sample

        s = Sample(filename="apple.x.jpg", data=io.BytesIO(b""))
        ei.data.infer_from_filename(s, "apple.x.jpg")
        assert s.label == "apple"  # the label is the file name's first part
        res = ei.data.upload_plain_directory(str(plain), category="testing", transform=ei.data.infer_from_filename)
        assert len(res.successes) == 2 and not res.fails
        res = ei.data.upload_exported_dataset(str(exported))
        assert len(res.successes) == 1 and not res.fails
        res = ei.data.upload_directory(str(plain), category="testing")  # the same images again: duplicates refused
        assert not res.successes and len(res.fails) == 2
        infos = ei.data.get_sample_ids(filename=prefix)
        assert {i.filename: i.category for i in infos} == {f"apple.{prefix}-0.jpg": "testing", f"apple.{prefix}-1.jpg": "testing",
                                                          name: "training"}
        exp = next(i for i in infos if i.filename == name)
        sample = ei.data.download_samples_by_ids(exp.sample_id)[0]
        assert [(b["label"], b["width"]) for b in sample.bounding_boxes] == [("banana", 20)]
        assert sample.metadata["src"] == prefix
    finally:
        for info in ei.data.get_sample_ids(filename=prefix):
            ei.data.delete_sample_by_id(info.sample_id)


def test_delete_all_samples_by_category_and_all(fresh_cloud, monkeypatch):
    """Local only: LIVE_SKIP['delete_all']."""
    import edgeimpulse as ei
    from edgeimpulse.data.sample_type import Sample

    _point_sdk(monkeypatch, fresh_cloud.workspace)
    res = ei.data.upload_samples([Sample(filename=f"s{i}.jpg", data=io.BytesIO(_jpeg(30 + i)), category=c)
                                  for i, c in enumerate(["training", "training", "testing"])])
    assert len(res.successes) == 3
    assert ei.data.delete_all_samples(category="testing").success
    assert {i.category for i in ei.data.get_sample_ids()} == {"training"}
    assert ei.data.delete_all_samples(category="validation").success  # a category of Edge Impulse's, empty here
    assert ei.data.delete_all_samples().success
    assert ei.data.get_sample_ids() == []
    files = fresh_cloud.workspace / "localcloud" / "files"
    assert not [p for p in files.rglob("*.jpg")], "the deleted samples' files are gone too"


def _our_onnx(tmp_path: Path) -> tuple[Path, Path]:
    """A FOMO-box detector exported as helpers.train exports it: the model file a user brings, and its card."""
    import torch

    from helpers.inference.onnx import preprocessing_for
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    torch.manual_seed(3)
    m = FomoBox(2, width=0.35, in_channels=3).eval()
    torch.nn.init.zeros_(m.heat[-1].bias)
    torch.nn.init.normal_(m.heat[-1].weight, std=1.0)
    d = tmp_path / "mine"
    export_onnx(m, d, {"labels": ["apple", "banana"], "input_size": 96, "score_threshold": 0.5, "arch": "fomo-box",
                       "head": {"type": "centernet", "stride": 8}, "preprocessing": preprocessing_for("RGB")})
    return d / "model.onnx", d


def test_engines_model_types_targets_and_profile_devices(cloud, monkeypatch):
    """Local only for the targets: a real project lists its own (LIVE_SKIP['model'] for deploy)."""
    import edgeimpulse as ei
    from edgeimpulse_api.models.deployment_target_engine import DeploymentTargetEngine
    from edgeimpulse_api.models.keras_model_type_enum import KerasModelTypeEnum

    assert ei.model.list_engines() == [e.value for e in DeploymentTargetEngine] and "tflite" in ei.model.list_engines()
    assert ei.model.list_model_types() == [t.value for t in KerasModelTypeEnum]
    _point_sdk(monkeypatch, cloud.workspace)
    assert ei.model.list_deployment_targets() == ["runner-linux-x86_64", "runner-linux-aarch64", "runner-linux-armv7"]
    assert ei.model.list_profile_devices() == []  # profiling is not mirrored: no device to name


def test_deploy_a_model_the_user_brings_as_eim(fresh_cloud, monkeypatch, tmp_path):
    """`edgeimpulse.model.deploy` of our ONNX export: the .eim finds the boxes our detector finds. Local only: LIVE_SKIP['model']."""
    import edgeimpulse as ei
    from edgeimpulse.exceptions import InvalidDeployParameterException, InvalidTargetException

    from helpers.inference.card import sha256_file
    from helpers.inference.eim import EimDetector
    from helpers.inference.onnx import OnnxDetector
    from helpers.sim.scenes import render_dataset

    _point_sdk(monkeypatch, fresh_cloud.workspace)
    onnx_path, ref_dir = _our_onnx(tmp_path)
    out = ei.model.deploy(model=str(onnx_path), model_input_type=ei.model.input_type.ImageInput(scaling_range="torch"),
                          model_output_type=ei.model.output_type.ObjectDetection(["apple", "banana"], "fomo", 0.5),
                          deploy_target="runner-linux-x86_64", output_directory=str(tmp_path / "out"), timeout_sec=120)
    data = out.read()
    assert data[:2] == b"#!" and len(data) > 1000
    written = list((tmp_path / "out").iterdir())
    assert [p.name for p in written] == [p.name for p in written if p.suffix == ".eim"] and len(written) == 1
    assert written[0].read_bytes() == data
    d = tmp_path / "eim"
    d.mkdir()
    (d / "model.eim").write_bytes(data)
    (d / "model.json").write_text(json.dumps({"format": "eim", "labels": ["apple", "banana"], "input_size": 96}))
    assert sha256_file(d / "model.eim")
    # the .eim starts with `/usr/bin/env python3`: this interpreter has numpy, OpenCV and onnxruntime
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ref = OnnxDetector(ref_dir)
    compared = 0
    with EimDetector(d) as det:
        assert det.model_parameters["labels"] == ["apple", "banana"] and det.model_parameters["image_input_width"] == 96
        for rgb, _ in render_dataset(3, [{"objects": ["apple", "banana"], "distractors": []}], size=(96, 96), seed=5):
            want = [(b.label, round(b.x), round(b.y), round(b.width), round(b.height)) for b in ref.detect(rgb)]
            assert [(b.label, round(b.x), round(b.y), round(b.width), round(b.height)) for b in det.detect(rgb)] == want
            compared += len(want)
    assert compared > 0, "the frames gave no boxes to compare"
    common = {"model": str(onnx_path), "model_output_type": ei.model.output_type.ObjectDetection(["apple", "banana"], "fomo", 0.5),
              "timeout_sec": 60}
    # what is not mirrored is refused in Edge Impulse's shape (success: false), naming it
    with pytest.raises(Exception, match="inputType 'other' is not mirrored"):
        ei.model.deploy(deploy_target="runner-linux-x86_64", **common)
    with pytest.raises(InvalidTargetException):  # the SDK's default target, a C++ library, is not built here
        ei.model.deploy(model_input_type=ei.model.input_type.ImageInput(), **common)
    with pytest.raises(Exception, match="engine 'tflite-eon' is not mirrored"):
        ei.model.deploy(model_input_type=ei.model.input_type.ImageInput(), deploy_target="runner-linux-aarch64",
                        engine="tflite-eon", **common)
    with pytest.raises(InvalidDeployParameterException, match="int8"):
        ei.model.deploy(model_input_type=ei.model.input_type.ImageInput(), deploy_target="runner-linux-aarch64",
                        representative_data_for_quantization=np.zeros((1, 3, 96, 96), np.float32), **common)
    with pytest.raises(Exception, match="lastLayer 'yolov5'"):
        ei.model.deploy(model=str(onnx_path), model_input_type=ei.model.input_type.ImageInput(),
                        model_output_type=ei.model.output_type.ObjectDetection(["apple", "banana"], "yolov5", 0.5),
                        deploy_target="runner-linux-x86_64", timeout_sec=60)
    with pytest.raises(Exception, match="network has 2 classes"):
        ei.model.deploy(model=str(onnx_path), model_input_type=ei.model.input_type.ImageInput(),
                        model_output_type=ei.model.output_type.ObjectDetection(["apple"], "fomo", 0.5),
                        deploy_target="runner-linux-x86_64", timeout_sec=60)
    tfl = tmp_path / "model.tflite"
    tfl.write_bytes(b"TFL3" + b"\0" * 64)
    with pytest.raises(Exception, match="modelFileType 'tflite' is not mirrored"):
        ei.model.deploy(model=str(tfl), model_output_type=ei.model.output_type.ObjectDetection(["a"], "fomo", 0.5),
                        model_input_type=ei.model.input_type.ImageInput(), deploy_target="runner-linux-x86_64", timeout_sec=60)


def test_profile_is_refused_naming_what_is_not_mirrored(fresh_cloud, monkeypatch, tmp_path):
    """Local only: LIVE_SKIP['model']."""
    import edgeimpulse as ei
    from edgeimpulse.exceptions import InvalidDeviceException

    _point_sdk(monkeypatch, fresh_cloud.workspace)
    onnx_path, _ = _our_onnx(tmp_path)
    # Edge Impulse's error shape ({"success": false, "error": ...}): edgeimpulse_api's ApiClient.deserialize
    # raises a plain Exception carrying the error text before the SDK's own check_response_errors sees it
    with pytest.raises(Exception, match="profiling is not mirrored by the local studio") as refused:
        ei.model.profile(model=str(onnx_path), timeout_sec=60)
    assert type(refused.value) is Exception
    with pytest.raises(InvalidDeviceException):
        ei.model.profile(model=str(onnx_path), device="cortex-m4f-80mhz", timeout_sec=60)


def test_sdk_reads_the_printed_environment_in_a_new_interpreter(cloud):
    """`eval "$(python -m helpers.localcloud credentials --format env)"`, then the SDK as any script uses it."""
    env_text = subprocess.run([sys.executable, "-m", "helpers.localcloud", "credentials", "--workspace", str(cloud.workspace),
                               "--format", "env"], capture_output=True, text=True, timeout=60, check=True).stdout
    script = ("set -e; eval \"$ENV_TEXT\"; export EI_API_KEY EI_API_ENDPOINT EI_INGESTION_ENDPOINT EI_PROJECT_ID; "
              f"{sys.executable} -c 'import os, edgeimpulse as ei; "
              "print(ei.model.list_deployment_targets()[0], ei.util.default_project_id_for("
              "ei.util.configure_generic_client(ei.API_KEY, host=ei.API_ENDPOINT)) == int(os.environ[\"EI_PROJECT_ID\"]))'")
    r = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"], "ENV_TEXT": env_text, "HOME": os.environ.get("HOME", "/tmp")},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["runner-linux-x86_64", "True"]


def test_every_public_sdk_function_is_covered():
    import edgeimpulse.data
    import edgeimpulse.model

    public = {f"{mod.__name__.split('.')[-1]}.{name}" for mod in (edgeimpulse.data, edgeimpulse.model)
              for name, obj in inspect.getmembers(mod, inspect.isfunction) if not name.startswith("_")}
    missing = sorted(public - set(COVERAGE))
    assert not missing, f"edgeimpulse {edgeimpulse.__version__}: no conformance test or reason for {missing}; add each to COVERAGE"
    tests = {name for name, obj in globals().items() if name.startswith("test_") and callable(obj)}
    dangling = {k: v for k, v in COVERAGE.items() if v.startswith("test_") and v not in tests}
    assert not dangling, f"COVERAGE names tests that do not exist: {dangling}"
    stale = sorted(set(COVERAGE) - public)
    assert not stale, f"COVERAGE names functions edgeimpulse {edgeimpulse.__version__} does not have: {stale}"
