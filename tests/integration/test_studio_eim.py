"""A model trained here, packaged as an `.eim`, classifies frames through Edge Impulse's own Linux SDK.

`edge_impulse_linux.image.ImageImpulseRunner` (PyPI `edge-impulse-linux`, the `[eim]` extra)
starts the `.eim` executable, speaks its JSON-over-Unix-socket protocol, turns frames into
features the way Edge Impulse does, and must get the same boxes our detector finds.
Importing the SDK's package imports PyAudio (its `__init__` loads the audio runner too), which
builds against PortAudio: `make test` (as root) installs `portaudio19-dev`, and `make setup` the `[eim]` extra.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

try:
    from edge_impulse_linux.image import ImageImpulseRunner
except ImportError as exc:  # pragma: no cover - depends on the [eim] extra
    ImageImpulseRunner = None
    _why = f"edge_impulse_linux is not importable ({exc}): apt-get install portaudio19-dev, then make setup (make test does both as root)"


def _model(tmp_path, color: str):
    import torch

    from helpers.inference.onnx import preprocessing_for
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    torch.manual_seed(3)
    channels = 1 if color == "grayscale" else 3
    m = FomoBox(2, width=0.35, in_channels=channels).eval()
    # untrained, the heat map sits at its 1 % prior: spread its scores so that frames give boxes to compare
    torch.nn.init.zeros_(m.heat[-1].bias)
    torch.nn.init.normal_(m.heat[-1].weight, std=1.0)
    d = tmp_path / f"model-{color}"
    export_onnx(m, d, {"labels": ["apple", "banana"], "input_size": 96, "score_threshold": 0.5, "arch": "fomo-box",
                       "head": {"type": "centernet", "stride": 8}, "preprocessing": preprocessing_for(color)})
    return d


def _frames(n=3):
    from helpers.sim.scenes import render_dataset

    scenes = [{"objects": ["apple", "banana"], "distractors": []}, {"objects": ["apple"], "distractors": ["orange"]}]
    return [rgb for rgb, _ in render_dataset(n, scenes, size=(160, 120), seed=5)]


@pytest.mark.skipif(ImageImpulseRunner is None, reason=_why if ImageImpulseRunner is None else "")
@pytest.mark.parametrize("color", ["RGB", "grayscale"])
def test_official_image_runner_classifies_with_our_eim(tmp_path, color):
    from helpers.inference.eim_build import build_eim
    from helpers.inference.onnx import OnnxDetector

    model_dir = _model(tmp_path, color)
    eim = build_eim(model_dir, tmp_path / f"model-{color}.eim", interpreter=sys.executable)
    assert os.access(eim, os.X_OK) and eim.read_bytes()[:2] == b"#!"
    det = OnnxDetector(model_dir)
    runner = ImageImpulseRunner(str(eim))
    try:
        info = runner.init()
        params = info["model_parameters"]
        assert params["labels"] == ["apple", "banana"]
        assert (params["image_input_width"], params["image_input_height"]) == (96, 96)
        assert params["image_channel_count"] == (1 if color == "grayscale" else 3)
        assert params["image_resize_mode"] == "squash"
        compared = 0
        for rgb in _frames():
            features, cropped = runner.get_features_from_image_auto_studio_settings(rgb)
            assert len(features) == 96 * 96
            res = runner.classify(features)
            got = [(b["label"], b["x"], b["y"], b["width"], b["height"], round(b["value"], 4)) for b in res["result"]["bounding_boxes"]]
            img = np.repeat(cropped[..., None], 3, axis=2) if cropped.ndim == 2 else cropped
            want = [(b.label, int(round(b.x)), int(round(b.y)), int(round(b.width)), int(round(b.height)), round(b.value, 4))
                    for b in det.detect(img)]
            assert got == want
            compared += len(want)
        assert compared > 0, "the frames gave no boxes to compare"
        # a higher threshold through the protocol's set_threshold leaves fewer boxes
        runner.set_threshold({"id": 1, "min_score": 0.99})
        assert runner.classify(runner.get_features_from_image_auto_studio_settings(_frames(1)[0])[0])["result"]["bounding_boxes"] == []
    finally:
        runner.stop()


def test_eim_without_a_socket_path_says_how_to_run_it(tmp_path):
    """No SDK needed: the executable itself explains its command line."""
    from helpers.inference.eim_build import build_eim

    eim = build_eim(_model(tmp_path, "RGB"), tmp_path / "m.eim", interpreter=sys.executable)
    r = subprocess.run([str(eim)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "usage: model.eim <socket path>" in r.stderr
    with pytest.raises(Exception, match="no ONNX model"):
        build_eim(tmp_path, tmp_path / "x.eim")
    card = json.loads((tmp_path / "model-RGB" / "model.json").read_text())
    assert card["labels"] == ["apple", "banana"]
