"""ssdlite320 (the `[ssd]` extra) trains, exports and runs on the device's onnxruntime path.

Runs where torchvision is installed (`make ssd-venv`, then `.venv-ssd/bin/pytest
tests/integration/test_ssdlite_extra.py`); skipped in the default install, which has no torchvision.
"""
from __future__ import annotations

import pytest

pytest.importorskip("torchvision", reason="the ssdlite320 architecture needs the [ssd] extra (make ssd-venv)")

from helpers.inference.onnx import OnnxDetector  # noqa: E402
from helpers.sim.scenes import render_dataset  # noqa: E402
from helpers.train.export import export_result  # noqa: E402
from helpers.train.run import train_detector  # noqa: E402
from helpers.train.trainer import TrainParams

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_ssdlite320_trains_exports_and_detects(tmp_path):
    items = render_dataset(6, [{"objects": ["apple", "banana"]}], size=(320, 320), seed=1)
    params = TrainParams(arch="ssdlite320", input_size=320, epochs=1, batch_size=2, threads=2, min_epochs=1)
    result = train_detector(items[:4], items[4:], ["apple", "banana"], params, progress=False)
    assert len(result.history) == 1 and result.num_parameters > 1_000_000
    export_result(result, tmp_path)
    det = OnnxDetector(tmp_path)
    assert det.head_type == "ssd" and det.labels == ["apple", "banana"]
    assert det.card["export"]["parity_max_abs_diff"] < 1e-3
    boxes = det.detect(items[0][0], score_threshold=0.0)
    assert all(b.label in ("apple", "banana") and b.width > 0 for b in boxes)
