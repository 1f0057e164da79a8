"""The runner within a small device's means: lean onnxruntime session options, the fast
preprocessing and decoding against the plain ones, and imports only on the path that runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.inference.onnx import DEFAULT_PREPROCESSING, decode_ssd, preprocess, resize_square, session_options

REPO = Path(__file__).resolve().parents[2]
NANODET_PRE = {"resize": "squash", "channel_order": "BGR", "layout": "NCHW", "scale": 1.0,
               "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395]}


def test_session_options_are_lean_and_single_threaded():
    opts = session_options(1)
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.enable_cpu_mem_arena is False and opts.enable_mem_pattern is False
    with pytest.raises(RuntimeError):  # one thread: no pool, so nothing to stop spinning
        opts.get_session_config_entry("session.intra_op.allow_spinning")
    four = session_options(4)
    assert four.intra_op_num_threads == 4
    assert four.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_detector_session_uses_the_options(tmp_path):
    torch = pytest.importorskip("torch")
    from helpers.inference.onnx import OnnxDetector
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    torch.manual_seed(0)
    export_onnx(FomoBox(2, width=0.35).eval(), tmp_path, {"labels": ["apple", "banana"], "input_size": 96})
    det = OnnxDetector(tmp_path, threads=1)
    got = det.session.get_session_options()
    assert got.enable_cpu_mem_arena is False and got.intra_op_num_threads == 1
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    first = det.raw(frame)[0].copy()
    det.raw(np.zeros_like(frame))  # the reused input buffer must not leak between frames
    np.testing.assert_array_equal(det.raw(frame)[0], first)


@pytest.mark.parametrize("shape", [(480, 640), (1500, 1500), (300, 250), (200, 300), (100, 90), (224, 224)])
def test_fast_resize_is_close_to_opencv_area(shape):
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (*shape, 3), dtype=np.uint8), (7, 7), 0)
    got = resize_square(img, 224).astype(np.float32)
    interp = cv2.INTER_AREA if shape[0] > 224 or shape[1] > 224 else cv2.INTER_LINEAR
    ref = cv2.resize(img, (224, 224), interpolation=interp).astype(np.float32)
    assert got.shape == (224, 224, 3)
    assert np.abs(got - ref).mean() < 1.5


@pytest.mark.parametrize("pre", [DEFAULT_PREPROCESSING, NANODET_PRE, {**DEFAULT_PREPROCESSING, "channel_order": "grayscale",
                                                                     "mean": [0.449], "std": [0.226]}])
def test_preprocess_normalises_as_the_formula_and_fills_out(pre):
    img = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    x = preprocess(img, 64, pre)
    p = {**DEFAULT_PREPROCESSING, **pre}
    f = img.astype(np.float32)
    if p["channel_order"] == "grayscale":
        f = f @ np.array([0.299, 0.587, 0.114], np.float32)
        f = f[..., None]
    elif p["channel_order"] == "BGR":
        f = f[..., ::-1]
    ref = ((f * p["scale"] - np.array(p["mean"], np.float32)) / np.array(p["std"], np.float32)).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(x, ref, atol=1e-4)
    out = np.empty_like(x)
    assert preprocess(img, 64, pre, out=out) is out
    with pytest.raises(ValueError, match="out must be"):
        preprocess(img, 32, pre, out=out)


def test_decode_ssd_matches_the_per_anchor_loop():
    rng = np.random.default_rng(3)
    a = 500
    xy = rng.uniform(0, 200, (a, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 40, (a, 2))], 1).astype(np.float32)
    boxes[:5, 2:] = boxes[:5, :2] + 0.5  # degenerate boxes are dropped
    scores = rng.uniform(0, 1, (a, 3)).astype(np.float32)
    labels = ["apple", "banana", "orange"]
    got = decode_ssd(boxes, scores, labels, (640, 480), 224, score_threshold=0.9)
    # the plain reading of the contract, anchor by anchor
    sx, sy = 640 / 224, 480 / 224
    want = []
    for c in range(3):
        for i in np.nonzero(scores[:, c] >= 0.9)[0]:
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                want.append((labels[c], x0 * sx, y0 * sy, float(scores[i, c])))
    assert got and len(got) <= len(want)
    for b in got:
        assert any(lb == b.label and abs(x - b.x) < 1e-6 and abs(y - b.y) < 1e-6 and abs(s - b.value) < 1e-6
                   for lb, x, y, s in want)


def test_runner_imports_only_what_runs():
    """No torch, no simulator, no HTTP client library, no dataset readers on a runner's import path."""
    code = (
        "import json, sys\n"
        "import helpers.device.runner\n"
        "import helpers.device.camera\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    mods = set(json.loads(r.stdout))
    heavy = sorted(m for m in mods if m.split(".")[0] in ("torch", "requests", "urllib3", "PIL", "onnx")
                   or m.startswith(("helpers.sim", "helpers.datasets", "helpers.studio", "helpers.train")))
    assert heavy == [], f"the runner's import path loads {heavy}"


def test_synthetic_camera_loads_the_simulator_only_when_chosen(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    code = (
        "import json, sys\n"
        "from helpers.device.camera import open_camera\n"
        f"open_camera('folder', path={str(tmp_path)!r}).read()\n"
        "before = any(m.startswith('helpers.sim') for m in sys.modules)\n"
        "open_camera('synthetic', seed=0).read()\n"
        "print(json.dumps([before, any(m.startswith('helpers.sim') for m in sys.modules)]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == [False, True]
