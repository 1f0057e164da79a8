"""The model card and the model file beside it: which format, which file, is it intact.

A model folder holds `model.json` (the card) and one model file; the card's `format` says which:

    format   file           backend
    "onnx"   model.onnx     `helpers.inference.onnx.OnnxDetector` (the default: cards without `format`)
    "eim"    model.eim      `helpers.inference.eim.EimDetector` (Edge Impulse's Linux executable)
    "tflite" model.tflite   `helpers.inference.tflite.TfliteDetector` (an Edge Impulse FOMO model)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from helpers.errors import ModelError

CARD_NAME = "model.json"
ONNX_NAME = "model.onnx"
FORMAT_FILES = {"onnx": ONNX_NAME, "eim": "model.eim", "tflite": "model.tflite"}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_format(card: dict[str, Any]) -> str:
    """The card's `format` ("onnx" when absent).

    Raises:
        ModelError: an unknown format.
    """
    fmt = card.get("format") or "onnx"
    if fmt not in FORMAT_FILES:
        raise ModelError(f"model card format={fmt!r} is unknown; valid: {', '.join(FORMAT_FILES)}")
    return str(fmt)


def format_of_file(path: str | Path) -> str:
    """The format a model file's name says (`.onnx`, `.eim`, `.tflite`).

    Raises:
        ModelError: another extension.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMAT_FILES:
        raise ModelError(f"{Path(path).name}: a model file must end in .onnx, .eim or .tflite")
    return suffix


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The card of a model folder.

    Raises:
        ModelError: the card is missing or not a JSON object.
    """
    path = Path(model_dir) / CARD_NAME
    if not path.is_file():
        raise ModelError(f"no model card {path}: a model folder holds {CARD_NAME} beside the model file")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"model card {path} is not valid JSON: {e}") from e
    if not isinstance(card, dict):
        raise ModelError(f"model card {path} must be a JSON object")
    return card


def model_file(model_dir: str | Path, card: dict[str, Any] | None = None) -> Path:
    """The model file of a folder, named by its card's format."""
    card = read_card(model_dir) if card is None else card
    return Path(model_dir) / FORMAT_FILES[model_format(card)]


def check_file_sha(path: Path, card: dict[str, Any]) -> None:
    """ModelError when the card carries the registry's `sha256` and the file differs."""
    want = card.get("sha256")
    if want and sha256_file(path) != want:
        raise ModelError(f"{path} does not match the card's sha256: the file was changed or belongs to another "
                         "model; download the model version again")


def load_card(model_dir_or_onnx_path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(onnx path, card dict) for a model folder or an ONNX file with `model.json` beside it.

    Raises:
        ModelError: when a file is missing or the card is not valid JSON.
    """
    p = Path(model_dir_or_onnx_path)
    onnx_path = p / ONNX_NAME if p.is_dir() else p
    card_path = onnx_path.parent / CARD_NAME
    if not onnx_path.is_file():
        raise ModelError(f"no ONNX model at {onnx_path}: pass a folder holding {ONNX_NAME} + {CARD_NAME}, "
                         "or the .onnx file itself")
    if not card_path.is_file():
        raise ModelError(f"no model card {card_path}: the {CARD_NAME} written by export_onnx must sit beside the ONNX")
    return onnx_path, read_card(onnx_path.parent)


def labels_or_none(card: dict[str, Any], where: Path) -> list[str] | None:
    """The card's `labels` (None when it lists none).

    Raises:
        ModelError: `labels` is not a non-empty list of names.
    """
    labels = card.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise ModelError(f"model card {where} labels must be a non-empty list of names, e.g. [\"apple\"]")
    return list(labels)


def class_thresholds_of(card: dict[str, Any], labels: list[str], where: Path) -> dict[str, float]:
    """The card's per-label thresholds (`class_thresholds` {label: score}, as `OnnxDetector` reads them)."""
    ct = card.get("class_thresholds") or {}
    if not isinstance(ct, dict) or not all(k in labels and isinstance(v, (int, float)) and 0 <= v <= 1 for k, v in ct.items()):
        raise ModelError(f"model card {where} class_thresholds must map labels {labels} to scores in [0, 1], got {ct!r}")
    return {k: float(v) for k, v in ct.items()}


def label_cuts(det: Any, score_threshold: float | None) -> dict[str, float]:
    """Each label's minimum score: the given threshold, else the card's per-label ones over its default."""
    thr = det.score_threshold if score_threshold is None else float(score_threshold)
    per = det.class_thresholds if score_threshold is None else {}
    return {label: per.get(label, thr) for label in det.labels}
