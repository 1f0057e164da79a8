"""The runner runs ONNX, `.eim` and TFLite models, chosen by the card's `format`.

- `.eim`: our exported ONNX packaged as an Edge Impulse Linux executable (`build_eim`),
  registered in the local studio, downloaded and run by the runner process through Edge
  Impulse's own `edge_impulse_linux.ImageImpulseRunner`: on the same frame its boxes match the
  ONNX detector's (IoU ~1).
- `.tflite`: a real FOMO flatbuffer in Edge Impulse's output layout (tests/integration/fomo_tflite.py),
  run with LiteRT: probabilities equal the graph's numpy forward pass, boxes land where the red
  patch is for each of Edge Impulse's resize modes, float32 and int8.
- The registry keeps each format's file under its name, checks the bytes, and refuses a card
  whose format contradicts the file.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from helpers.device.runtime import free_port
from helpers.errors import ModelError, ServiceError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fomo_tflite import numpy_forward, write_fomo_tflite  # noqa: E402
from test_runner_model import start_runner, wait_http  # noqa: E402

pytestmark = pytest.mark.timeout(300)

try:
    import edge_impulse_linux.image  # noqa: F401
    _no_eim = None
except ImportError as exc:  # pragma: no cover - depends on the [eim] extra
    _no_eim = f"edge_impulse_linux is not importable ({exc}): apt-get install portaudio19-dev, then make setup (make test does both as root)"

LABELS = ["apple", "banana"]


def iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a.x + a.width, a.y + a.height, b.x + b.width, b.y + b.height
    iw, ih = max(0.0, min(ax1, bx1) - max(a.x, b.x)), max(0.0, min(ay1, by1) - max(a.y, b.y))
    inter = iw * ih
    return inter / (a.width * a.height + b.width * b.height - inter)


def assert_same_boxes(got, want, min_iou: float = 0.9) -> None:
    """Each box of `want` has one in `got` of its label with IoU >= min_iou and the same score."""
    assert len(got) == len(want), (got, want)
    left = list(got)
    for w in want:
        best = max((g for g in left if g.label == w.label), key=lambda g: iou(g, w), default=None)
        assert best is not None and iou(best, w) >= min_iou, (w, best)
        assert abs(best.value - w.value) < 1e-4
        left.remove(best)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    """A fomo-box detector exported by helpers.train (untrained, its heat map spread to give boxes)."""
    import torch

    from helpers.inference.onnx import preprocessing_for
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    torch.manual_seed(3)
    m = FomoBox(len(LABELS), width=0.35).eval()
    torch.nn.init.zeros_(m.heat[-1].bias)
    torch.nn.init.normal_(m.heat[-1].weight, std=1.0)
    d = tmp_path_factory.mktemp("onnx")
    export_onnx(m, d, {"labels": LABELS, "input_size": 96, "score_threshold": 0.5, "arch": "fomo-box", "name": "fmt-test",
                       "head": {"type": "centernet", "stride": 8}, "preprocessing": preprocessing_for("RGB")})
    return d


def frames(n: int = 3) -> list[np.ndarray]:
    from helpers.sim.scenes import render_dataset

    scenes = [{"objects": ["apple", "banana"], "distractors": []}, {"objects": ["apple"], "distractors": ["orange"]}]
    return [rgb for rgb, _ in render_dataset(n, scenes, size=(160, 120), seed=5)]


@pytest.mark.skipif(_no_eim is not None, reason=_no_eim or "")
def test_eim_registered_downloaded_and_run_by_the_runner(cloud, onnx_model, tmp_path, unique_name):
    from helpers.inference.eim import EimDetector
    from helpers.inference.eim_build import build_eim
    from helpers.inference.loader import load_detector
    from helpers.inference.onnx import OnnxDetector

    eim = build_eim(onnx_model, tmp_path / "build" / "model.eim", interpreter=sys.executable)
    # what EdgeImpulseStudio.train keeps for an Edge Impulse build: the format, no labels (the .eim names them)
    mv = cloud.studio.register_model(eim, {"format": "eim", "name": "fmt-test-eim", "score_threshold": 0.5})
    assert mv.card["format"] == "eim" and mv.sha256 == __import__("hashlib").sha256(eim.read_bytes()).hexdigest()
    got = cloud.studio.download_model(mv.version, tmp_path / "dl")
    assert sorted(p.name for p in got.iterdir()) == ["model.eim", "model.json"]
    assert os.access(got / "model.eim", os.X_OK)
    # the ONNX-only download path answers with where the file is
    r = requests.get(f"{cloud.url}/api/models/{mv.version}/onnx", headers={"x-api-key": cloud.studio.api_key.get_secret_value()},
                     timeout=10)
    assert r.status_code == 409 and f"/api/models/{mv.version}/file" in r.text

    ref = OnnxDetector(onnx_model)
    det = load_detector(got)
    try:
        assert isinstance(det, EimDetector) and det.labels == LABELS and det.input_size == 96
        assert det.version == mv.version and det.score_threshold == 0.5
        compared = 0
        for rgb in frames():
            want = ref.detect(rgb)
            assert_same_boxes(det.detect(rgb), want)
            compared += len(want)
            # a lower threshold reaches the executable (set_threshold) and gives the ONNX's boxes at that threshold too
            assert_same_boxes(det.detect(rgb, score_threshold=0.3), ref.detect(rgb, score_threshold=0.3))
        assert compared > 0, "the frames gave no boxes to compare"
    finally:
        det.close()
    assert det._runner is None
    # evaluation (notebooks 04-06) takes the model folder whatever its format: the same report as the ONNX
    from helpers.sim.scenes import render_dataset
    from helpers.train.evaluate import evaluate_model

    items = render_dataset(3, [{"objects": ["apple", "banana"], "distractors": []}], size=(160, 120), seed=5)
    rep_eim = evaluate_model(str(got), items, latency_runs=2)
    rep_onnx = evaluate_model(str(onnx_model), items, latency_runs=2)
    assert rep_eim.overall == rep_onnx.overall and rep_eim.map50 == pytest.approx(rep_onnx.map50, abs=0.02)
    assert rep_eim.latency_ms["runs"] == 2 and rep_eim.model["version"] == mv.version

    # the runner process: MODEL_VERSION of an .eim, one fixed frame from a folder camera
    cam = tmp_path / "cam"
    cam.mkdir()
    frame = frames(1)[0]
    cv2.imwrite(str(cam / "f.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "runner"
    proc = start_runner(workdir, {"STUDIO_URL": cloud.url, "EI_API_KEY": cloud.studio.api_key.get_secret_value(),
                                  "MODEL_VERSION": str(mv.version), "PORT": str(port), "IOTEDGE_DEVICEID": unique_name("cam"),
                                  "CAMERA_SOURCE": "folder", "CAMERA_PATH": str(cam), "CAMERA_SIZE": "160x120"})
    try:
        h = wait_http(f"{base}/api/health", lambda r: r.status_code == 200 and r.json()["frames"] >= 2, timeout=90, proc=proc).json()
        assert h["model_version"] == mv.version and h["healthy"] is True, h
        info = requests.get(f"{base}/api/info", timeout=5).json()
        assert info["labels"] == LABELS and info["input_size"] == 96 and info["card"]["format"] == "eim"
        res = requests.get(f"{base}/api/results", timeout=5).json()
        from helpers.geometry import boxes_from_dicts

        assert_same_boxes(boxes_from_dicts(res["bounding_boxes"]), ref.detect(frame), min_iou=0.85)
        assert (workdir / "models" / str(mv.version) / "model.eim").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (workdir / "module.log").read_text()[-2000:]
    log = (workdir / "module.log").read_text()
    assert f"model v{mv.version} loaded" in log


@pytest.mark.skipif(_no_eim is not None, reason=_no_eim or "")
def test_eim_that_exits_at_once_is_a_model_error(tmp_path):
    from helpers.inference.eim import EimDetector

    d = tmp_path / "m"
    d.mkdir()
    (d / "model.eim").write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 7\n")
    (d / "model.json").write_text(json.dumps({"format": "eim"}))
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="did not start: it exited with code 7"):
        EimDetector(d, start_timeout_s=60)
    assert time.monotonic() - t0 < 20  # noticed when it exits, not at the start timeout
    # one that never opens its socket is stopped at the timeout, and the SDK's wait ends with it
    import threading

    (d / "model.eim").write_text("#!/bin/sh\nexec sleep 60\n")
    with pytest.raises(ModelError, match="no socket within 2 s"):
        EimDetector(d, start_timeout_s=2)
    deadline = time.monotonic() + 10
    while any(t.name == "eim-init" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.name == "eim-init" for t in threading.enumerate())
    (d / "model.json").write_text(json.dumps({"format": "eim", "sha256": "0" * 64}))
    with pytest.raises(ModelError, match="sha256"):
        EimDetector(d)


@pytest.mark.parametrize("quantized", [False, True], ids=["float32", "int8"])
def test_tflite_fomo_detects_where_the_object_is(tmp_path, quantized):
    from helpers.inference.loader import load_detector
    from helpers.inference.resize import resize_like_studio
    from helpers.inference.tflite import TfliteDetector

    d = tmp_path / "m"
    write_fomo_tflite(d / "model.tflite", quantized=quantized)
    img = np.full((120, 160, 3), 128, np.uint8)
    img[30:62, 40:72] = (230, 20, 20)  # a red patch: x 40..72, y 30..62
    truth = (40, 30, 72, 62)
    for mode in ("squash", "fit-shortest", "fit-longest"):
        (d / "model.json").write_text(json.dumps({"format": "tflite", "labels": ["apple"], "preprocessing": {"resize": mode}}))
        det = load_detector(d)
        assert isinstance(det, TfliteDetector) and det.input_size == 96 and det.labels == ["apple"]
        x01 = resize_like_studio(img, mode, (96, 96)).astype(np.float32) / 255.0
        assert np.allclose(det.raw(img), numpy_forward(x01), atol=0.01 if quantized else 1e-5)
        boxes = det.detect(img)
        assert len(boxes) == 1 and boxes[0].label == "apple" and boxes[0].value > 0.9, (mode, boxes)
        b = boxes[0]
        cx, cy = b.x + b.width / 2, b.y + b.height / 2
        # FOMO's 8-pixel cells: the box's centre within one cell (~7 image px) of the patch's
        assert abs(cx - (truth[0] + truth[2]) / 2) < 8 and abs(cy - (truth[1] + truth[3]) / 2) < 8, (mode, b)
        assert det.detect(np.full((120, 160, 3), 128, np.uint8)) == []
    # the card's per-label thresholds apply when no threshold is passed; a passed one overrides them
    card = {"format": "tflite", "labels": ["apple"], "score_threshold": 0.5, "class_thresholds": {"apple": 0.9999}}
    (d / "model.json").write_text(json.dumps(card))
    det = load_detector(d)
    assert det.class_thresholds == {"apple": 0.9999} and det.detect(img) == []
    assert len(det.detect(img, score_threshold=0.5)) == 1
    (d / "model.json").write_text(json.dumps({**card, "class_thresholds": {"kiwi": 0.3}}))
    with pytest.raises(ModelError, match="class_thresholds"):
        load_detector(d)
    (d / "model.json").write_text(json.dumps({"format": "tflite", "labels": ["apple"]}))
    from helpers.geometry import BBox
    from helpers.train.evaluate import evaluate_model

    rep = evaluate_model(str(d), [(img, [BBox("apple", 40, 30, 32, 32)])], latency_runs=2)
    assert rep.per_class["apple"].tp == 1 and rep.per_class["apple"].fp == 0 and rep.map50 == pytest.approx(1.0)
    (d / "model.json").write_text(json.dumps({"format": "tflite", "labels": ["apple", "banana"]}))
    with pytest.raises(ModelError, match="2 labels"):
        load_detector(d)
    (d / "model.json").write_text(json.dumps({"format": "tflite"}))
    with pytest.raises(ModelError, match="no labels"):
        load_detector(d)


def test_tflite_registered_and_run_by_the_runner(cloud, tmp_path, unique_name):
    path = write_fomo_tflite(tmp_path / "build" / "model.tflite")
    mv = cloud.studio.register_model(path, {"labels": ["apple"], "name": "fmt-test-tflite", "score_threshold": 0.5})
    assert mv.card["format"] == "tflite"
    with pytest.raises(ModelError, match="format 'onnx'"):
        cloud.studio.register_model(path, {"labels": ["apple"], "format": "onnx"})
    with pytest.raises(ServiceError, match="TFLite"):
        bad = tmp_path / "bad.tflite"
        bad.write_bytes(b"not a flatbuffer at all")
        cloud.studio.register_model(bad, {"labels": ["apple"]})
    cam = tmp_path / "cam"
    cam.mkdir()
    img = np.full((120, 160, 3), 128, np.uint8)
    img[30:62, 40:72] = (230, 20, 20)
    cv2.imwrite(str(cam / "f.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "runner"
    proc = start_runner(workdir, {"STUDIO_URL": cloud.url, "EI_API_KEY": cloud.studio.device_key(mv.version).get_secret_value(),
                                  "MODEL_VERSION": str(mv.version), "PORT": str(port), "IOTEDGE_DEVICEID": unique_name("cam"),
                                  "CAMERA_SOURCE": "folder", "CAMERA_PATH": str(cam), "CAMERA_SIZE": "160x120"})
    try:
        wait_http(f"{base}/api/health", lambda r: r.status_code == 200 and r.json()["frames"] >= 2, timeout=90, proc=proc)
        info = requests.get(f"{base}/api/info", timeout=5).json()
        assert info["labels"] == ["apple"] and info["card"]["format"] == "tflite"
        res = requests.get(f"{base}/api/results", timeout=5).json()
        assert [b["label"] for b in res["bounding_boxes"]] == ["apple"] and res["model_version"] == mv.version
        b = res["bounding_boxes"][0]
        assert abs(b["x"] + b["width"] / 2 - 56) < 8 and abs(b["y"] + b["height"] / 2 - 46) < 8
        assert (workdir / "models" / str(mv.version) / "model.tflite").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (workdir / "module.log").read_text()[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(_no_eim is not None, reason=_no_eim or "")
def test_training_on_edge_impulse_registers_the_eim(fresh_cloud, tmp_path, monkeypatch):
    """`EdgeImpulseStudio.train` with target "edgeimpulse" (here pointed at the stand-in, which
    answers as Edge Impulse does) fetches the `.eim` build and registers it: a model version
    either way, with the labels the executable reports."""
    from helpers.inference.loader import load_detector
    from helpers.inference.onnx import OnnxDetector
    from helpers.sim.scenes import render_dataset
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    local = EdgeImpulseStudio(fresh_cloud.workspace)
    studio = EdgeImpulseStudio(fresh_cloud.workspace, target="edgeimpulse", api_key=local.api_key, project_id=local.project_id,
                               api_url=fresh_cloud.url + "/v1", ingestion_url=fresh_cloud.url)
    scenes = [{"objects": ["apple"], "distractors": []}, {"objects": ["apple", "apple"], "distractors": []}]
    for split, n, seed in (("training", 12, 1), ("testing", 3, 2)):
        for i, (rgb, boxes) in enumerate(render_dataset(n, scenes, size=(96, 96), seed=seed)):
            ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            name = f"{split}-{i}.png"
            assert studio.upload([(name, buf.tobytes())], category=split, boxes={name: boxes})[0].sample_id
    studio.set_impulse(input_size=96, color="RGB", arch="fomo-box", epochs=1, batch_size=8)
    # the stand-in's .eim starts with `/usr/bin/env python3`: this interpreter (numpy, OpenCV, onnxruntime)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = studio.train(tmp_path / "trained", timeout_s=480, poll_s=0.5, card_extra={"name": "ei-trained"})
    assert result["format"] == "eim" and isinstance(result["version"], int)
    mv = studio.get_model(result["version"])
    assert mv.card["format"] == "eim" and mv.card["labels"] == ["apple"] and mv.card["input_size"] == 96
    assert mv.card["studio_job"]["job_id"] == result["job_id"] and mv.card["name"] == "ei-trained"
    assert mv.stage == "candidate"
    dl = studio.download_model(mv.version, tmp_path / "dl")
    # the same trained weights as ONNX (LearnApi.download_learn_model on the stand-in) give the same boxes
    learn_id = studio.get_impulse()["learn_id"]
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    (ref_dir / "model.onnx").write_bytes(local._raw("LearnApi", "download_learn_model", local.project_id, learn_id, "onnx"))  # noqa: SLF001
    (ref_dir / "model.json").write_bytes(local._raw("LearnApi", "download_learn_model", local.project_id, learn_id, "card"))  # noqa: SLF001
    ref = OnnxDetector(ref_dir)
    det = load_detector(dl)
    compared = 0
    try:
        for rgb in frames():
            for thr in (0.001, 0.01, 0.2):  # one training cycle leaves scores near the focal prior (0.01)
                want = ref.detect(rgb, score_threshold=thr)
                assert_same_boxes(det.detect(rgb, score_threshold=thr), want)
                compared += len(want)
    finally:
        det.close()
    assert compared > 0, "the trained model gave no boxes to compare at any threshold"
