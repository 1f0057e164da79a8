"""Train, export and evaluate the fruit detector.

    from helpers.train import TrainParams, train_detector, export_result, evaluate_model
    result = train_detector(train_items, val_items, ["apple", "banana"], TrainParams(epochs=30))
    export_result(result, "workspace/models/run1")          # model.onnx + model.json
    report = evaluate_model("workspace/models/run1", test_items)

Items are `(rgb uint8 (H, W, 3), list[BBox])` pairs. CLI: `python -m helpers.train --help`.
Names are loaded lazily so `helpers.train.evaluate` (used by `python -m helpers.evaluate`)
does not pay for importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainParams": "helpers.train.trainer",
    "TrainResult": "helpers.train.trainer",
    "train_detector": "helpers.train.run",
    "AugmentParams": "helpers.train.augment",
    "export_onnx": "helpers.train.export",
    "export_result": "helpers.train.export",
    "update_card": "helpers.train.export",
    "evaluate_model": "helpers.train.evaluate",
    "evaluate_detector": "helpers.train.evaluate",
    "EvalReport": "helpers.train.evaluate",
    "load_dataset_dir": "helpers.train.data",
    "load_studio_snapshot": "helpers.train.data",
    "split_items": "helpers.train.data",
    "train_and_export": "helpers.train.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'helpers.train' has no attribute {name!r}")
