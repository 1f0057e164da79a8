"""`load_detector(model_dir)`: the detector for a model folder, by its card's `format`.

Every backend has the same surface as `OnnxDetector`: `detect(rgb, score_threshold=None)` ->
boxes in the image's pixels (value = score, best first), `labels`, `input_size`, `card`,
`version`, `score_threshold`, `class_thresholds` (the card's per-label thresholds, applied when
no threshold is passed), `close()`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.errors import ModelError
from helpers.inference.card import model_format, read_card
from helpers.inference.eim import EimDetector
from helpers.inference.onnx import OnnxDetector
from helpers.inference.tflite import TfliteDetector


def load_detector(model_dir: str | Path, threads: int = 1) -> Any:
    """The detector for the model folder `model_dir` (or an `.onnx` file), by the card's `format`:
    "onnx" (default) -> `OnnxDetector`, "eim" -> `EimDetector`, "tflite" -> `TfliteDetector`.

    Raises:
        ModelError: the card, the file or the model is unusable (the message says which).
        MissingExtra: the format's runtime package is not installed (the message names the extra).
    """
    p = Path(model_dir)
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise ModelError(f"{p}: pass the model folder (model.json + model file), not the {p.suffix} file")
        return OnnxDetector(p, threads=threads)
    card = read_card(p)
    fmt = model_format(card)
    if fmt == "onnx":
        return OnnxDetector(p, threads=threads)
    if fmt == "eim":
        return EimDetector(p)
    return TfliteDetector(p, threads=threads)
