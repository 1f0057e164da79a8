"""int8 post-training quantization (`helpers.train.quantize`) with onnxruntime's real `quantize_static`:
the int8 network loads in `OnnxDetector`, finds what the float one finds, and the card chooses which file runs."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from helpers.errors import ModelError
from helpers.geometry import BBox, iou
from helpers.inference.card import INT8_ONNX_NAME, ONNX_NAME, model_file
from helpers.inference.loader import load_detector
from helpers.inference.onnx import OnnxDetector
from helpers.train.quantize import choose_runtime, float_nodes, quantize_model

torch = pytest.importorskip("torch")

LABELS = ["apple", "banana", "orange"]
SIZE = 96


def _frame(seed: int) -> tuple[np.ndarray, list[BBox]]:
    """A 160x120 table with a few coloured discs (apple red, banana yellow, orange orange), boxes as truth."""
    rng = np.random.default_rng(seed)
    img = np.full((120, 160, 3), rng.integers(90, 160, 3), np.uint8)
    img = cv2.GaussianBlur(img + rng.integers(0, 20, img.shape, dtype=np.uint8), (5, 5), 0)
    colors = {"apple": (200, 30, 40), "banana": (230, 210, 60), "orange": (240, 140, 20)}
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        label = LABELS[int(rng.integers(0, 3))]
        r = int(rng.integers(10, 22))
        cx, cy = int(rng.integers(r, 160 - r)), int(rng.integers(r, 120 - r))
        cv2.circle(img, (cx, cy), r, colors[label], -1)
        boxes.append(BBox(label, cx - r, cy - r, 2 * r, 2 * r))
    return img, boxes


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """An untrained NanoDet (3 classes, 96 px; its class logits spread 8x so scores span 0..1) exported,
    then quantized on 24 frames."""
    from helpers.train.export import export_onnx
    from helpers.train.nanodet import NANODET_PREPROCESSING, NanoDet

    torch.manual_seed(0)
    model = NanoDet(len(LABELS)).eval()
    with torch.no_grad():
        for conv in model.head.gfl:
            conv.weight[: len(LABELS)] *= 8.0
    d = tmp_path_factory.mktemp("nanodet")
    export_onnx(model, d, {"labels": LABELS, "input_size": SIZE, "preprocessing": NANODET_PREPROCESSING,
                           "score_threshold": 0.5, "arch": "nanodet-ft", "head": {"type": "gfl"}})
    quantize_model(d, [_frame(s)[0] for s in range(24)], max_images=16)
    return d


def test_int8_file_beside_the_float_one_and_recorded_in_the_card(quantized):
    card = json.loads((quantized / "model.json").read_text())
    assert (quantized / ONNX_NAME).is_file() and (quantized / INT8_ONNX_NAME).is_file()
    assert (quantized / INT8_ONNX_NAME).stat().st_size < 0.4 * (quantized / ONNX_NAME).stat().st_size
    v = card["variants"]
    assert v["float"]["file"] == ONNX_NAME and v["float"]["sha256"] == card["onnx_sha256"]
    q = v["int8"]["quantization"]
    assert v["int8"]["file"] == INT8_ONNX_NAME and q["calibration"] == {"method": "MinMax", "images": 16, "split": "train"}
    assert "/Sigmoid" in q["float_nodes"] and "/head/gfl.0/Conv" in q["float_nodes"]  # the decoding stays float
    # nanodet-ft's stem and first stage stay float (FLOAT_PREFIXES), the rest of the backbone is int8
    assert "/backbone/stem/stem.0/Conv" in q["float_nodes"]
    assert any(n.startswith("/backbone/stages.0/") for n in q["float_nodes"])
    assert not any(n.startswith("/backbone/stages.1/") for n in q["float_nodes"])
    assert q["weights"] == "int8 per channel, 7-bit range" and q["activations"] == "uint8"
    assert "runtime" not in card  # chosen only by choose_runtime, after measuring


def test_int8_loads_and_matches_the_float_detections(quantized):
    fp = OnnxDetector(quantized / ONNX_NAME)
    q8 = OnnxDetector(quantized / INT8_ONNX_NAME)
    assert (fp.variant, q8.variant) == ("float", "int8")
    frame, _ = _frame(100)
    (fb, fs), (qb, qs) = fp.raw(frame), q8.raw(frame)
    assert fs.shape == qs.shape and fb.shape == qb.shape
    assert np.abs(fs - qs).max() < 0.1, "int8 scores drift from float"
    assert np.abs(fb - qb).mean() < 1.0, "int8 boxes drift from float (input pixels)"
    float_boxes = fp.detect(frame, score_threshold=0.5)
    int8_boxes = q8.detect(frame, score_threshold=0.5)
    clear = [b for b in float_boxes if b.value >= 0.6]  # away from the threshold, where rounding cannot flip it
    assert clear, "the test model detects nothing: the fixture no longer exercises the decode"
    for b in clear:
        assert any(o.label == b.label and iou(o, b) >= 0.7 for o in int8_boxes), f"int8 lost {b}"


def test_card_chooses_the_file_the_runner_loads(quantized, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(quantized, d)
    assert OnnxDetector(d).variant == "float"  # no choice made yet: model.onnx
    items = [_frame(200 + s) for s in range(6)]
    runtime = choose_runtime(d, items, split="test")
    card = json.loads((d / "model.json").read_text())
    f, q = card["variants"]["float"], card["variants"]["int8"]
    loss = f["f1"] - q["f1"]
    faster = q["ms_per_frame"]["p50"] < f["ms_per_frame"]["p50"]
    assert runtime["variant"] == ("int8" if loss <= 0.01 and faster else "float")
    assert runtime["file"] == card["variants"][runtime["variant"]]["file"] and runtime["why"].startswith(runtime["variant"])
    assert f["images"] == q["images"] == 6 and f["split"] == "test"
    det = load_detector(d)
    assert det.variant == runtime["variant"] and model_file(d).name == runtime["file"]
    # the card names int8: the folder's int8 file runs
    card["runtime"] = {"variant": "int8", "file": INT8_ONNX_NAME, "why": "test"}
    (d / "model.json").write_text(json.dumps(card))
    assert OnnxDetector(d).variant == "int8" and model_file(d).name == INT8_ONNX_NAME
    # a studio download keeps one file as model.onnx: whichever bytes they are, the sha256 says
    shutil.copy(d / INT8_ONNX_NAME, d / ONNX_NAME)
    (d / INT8_ONNX_NAME).unlink()
    det = OnnxDetector(d)
    assert det.onnx_path.name == ONNX_NAME and det.variant == "int8"


def test_changed_int8_bytes_and_bad_runtime_file_are_refused(quantized, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(quantized, d)
    data = bytearray((d / INT8_ONNX_NAME).read_bytes())
    data[-1] ^= 0xFF
    (d / INT8_ONNX_NAME).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        OnnxDetector(d / INT8_ONNX_NAME)
    card = json.loads((d / "model.json").read_text())
    card["runtime"] = {"variant": "int8", "file": "../elsewhere.onnx"}
    (d / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="runtime.file"):
        OnnxDetector(d)


def test_quantize_needs_images_and_an_onnx_folder(quantized, tmp_path):
    with pytest.raises(ModelError, match="training images"):
        quantize_model(quantized, [])
    (tmp_path / "model.json").write_text(json.dumps({"labels": LABELS, "input_size": SIZE}))
    with pytest.raises(ModelError, match="nothing to quantize"):
        quantize_model(tmp_path, [_frame(0)[0]])
    with pytest.raises(ModelError, match="quantize_model"):
        choose_runtime(tmp_path, [_frame(0)])
    with pytest.raises(ValueError, match="calibration must be one of"):
        quantize_model(quantized, [_frame(0)[0]], calibration="kl")


def test_float_nodes_are_the_last_convolutions_and_what_follows(quantized):
    import onnx

    model = onnx.load(str(quantized / ONNX_NAME))
    names = set(float_nodes(model))
    ops = {n.name: n.op_type for n in model.graph.node}
    convs = sorted(n for n in names if ops[n] == "Conv")
    assert convs == ["/head/gfl.0/Conv", "/head/gfl.1/Conv", "/head/gfl.2/Conv"]  # one 1x1 per level
    assert {"Sigmoid", "Softmax"} <= {ops[n] for n in names}
    assert not any(n.startswith("/backbone") for n in names)


def test_a_real_runner_process_runs_the_int8_network_the_card_names(quantized, tmp_path):
    """`python -m helpers.device.module` (MODE=infer) on the folder camera: healthy, detecting, on int8."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    from helpers.config import REPO_ROOT
    from helpers.device.runtime import free_port

    d = tmp_path / "m"
    shutil.copytree(quantized, d)
    card = json.loads((d / "model.json").read_text())
    card["runtime"] = {"variant": "int8", "file": INT8_ONNX_NAME, "why": "test"}
    (d / "model.json").write_text(json.dumps(card))
    frames = tmp_path / "frames"
    frames.mkdir()
    for s in range(3):
        cv2.imwrite(str(frames / f"f{s}.jpg"), cv2.cvtColor(_frame(300 + s)[0], cv2.COLOR_RGB2BGR))
    port = free_port()
    env = {"PATH": os.environ["PATH"], "MODE": "infer", "MODEL_PATH": str(d), "CAMERA_SOURCE": "folder",
           "CAMERA_PATH": str(frames), "CAMERA_SIZE": "160x120", "PORT": str(port), "MODULE_WORKDIR": str(tmp_path / "wd"),
           "INFER_RATE_HZ": "10", "TELEMETRY_INTERVAL_S": "1"}
    log = tmp_path / "runner.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "helpers.device.module"], cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=3)
                if r.status_code == 200 and r.json()["frames"] >= 3:
                    health = r.json()
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        assert health is not None, log.read_text()[-2000:]
        info = requests.get(f"http://127.0.0.1:{port}/api/info", timeout=3).json()
        assert info["card"]["runtime"]["variant"] == "int8" and info["input_size"] == SIZE
        assert "network int8" in log.read_text()
        maps = open(f"/proc/{proc.pid}/maps").read()
        assert "libtorch" not in maps  # the runner process never loads torch
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    assert proc.returncode == 0, log.read_text()[-2000:]
