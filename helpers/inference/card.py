"""The model card and the model file beside it: which format, which file, is it intact.

A model folder holds `model.json` (the card) and one model file; the card's `format` says which:

    format   file           backend
    "onnx"   model.onnx     `helpers.inference.onnx.OnnxDetector` (the default: cards without `format`)
    "eim"    model.eim      `helpers.inference.eim.EimDetector` (Edge Impulse's Linux executable)
    "tflite" model.tflite   `helpers.inference.tflite.TfliteDetector` (an Edge Impulse FOMO model)

An ONNX folder may hold more than one network: `model.onnx` (float) and `model.int8.onnx` (int8,
`helpers.train.quantize`). The card's `variants` lists each (`file`, `sha256`, measured `f1`,
`ms_per_image`) and its `runtime` names the one a device loads and why:

    "runtime": {"variant": "int8", "file": "model.int8.onnx", "why": "int8: F1 0.80 vs float 0.80 ..."}

`onnx_file` resolves it; a folder without that file (a studio download keeps one file, as
`model.onnx`) loads `model.onnx`, whichever variant its bytes are (their sha256 says).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from helpers.errors import ModelError

CARD_NAME = "model.json"
ONNX_NAME = "model.onnx"
INT8_ONNX_NAME = "model.int8.onnx"
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


def onnx_file(model_dir: str | Path, card: dict[str, Any]) -> Path:
    """The ONNX file a device loads from a folder: the card's `runtime.file` when the folder
    holds it, else `model.onnx`.

    Raises:
        ModelError: `runtime.file` is not a plain `.onnx` file name.
    """
    runtime = card.get("runtime") or {}
    name = runtime.get("file") if isinstance(runtime, dict) else None
    if name:
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".onnx"):
            raise ModelError(f"model card runtime.file={name!r} must be the name of an .onnx file beside the card, "
                             f"e.g. {INT8_ONNX_NAME!r}")
        if (Path(model_dir) / name).is_file():
            return Path(model_dir) / name
    return Path(model_dir) / ONNX_NAME


def onnx_variant(path: str | Path, card: dict[str, Any]) -> str | None:
    """Which of the card's networks a file is, by its sha256: "float" (the card's `onnx_sha256`),
    a `variants` key such as "int8", or None when the card records no sha256 at all.

    Raises:
        ModelError: the card records sha256s and the file matches none of them.
    """
    known: dict[str, str] = {}
    variants = card.get("variants") or {}
    if isinstance(variants, dict):
        known.update({str(v["sha256"]): str(k) for k, v in variants.items() if isinstance(v, dict) and v.get("sha256")})
    if card.get("onnx_sha256"):
        known[str(card["onnx_sha256"])] = "float"
    if not known:
        return None
    digest = sha256_file(path)
    if digest not in known:
        raise ModelError(f"{path} does not match the card's onnx_sha256 (nor a variant's sha256): the file was "
                         "changed or belongs to another model; download the model version again")
    return known[digest]


def model_file(model_dir: str | Path, card: dict[str, Any] | None = None) -> Path:
    """The model file of a folder, named by its card's format (for ONNX, `onnx_file`: the
    variant the card chose when the folder holds it)."""
    card = read_card(model_dir) if card is None else card
    fmt = model_format(card)
    if fmt == "onnx":
        return onnx_file(model_dir, card)
    return Path(model_dir) / FORMAT_FILES[fmt]


def check_file_sha(path: Path, card: dict[str, Any]) -> None:
    """ModelError when the card carries the registry's `sha256` and the file differs."""
    want = card.get("sha256")
    if want and sha256_file(path) != want:
        raise ModelError(f"{path} does not match the card's sha256: the file was changed or belongs to another "
                         "model; download the model version again")


def load_card(model_dir_or_onnx_path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(onnx path, card dict) for a model folder (the file `onnx_file` picks) or an ONNX file
    with `model.json` beside it.

    Raises:
        ModelError: when a file is missing or the card is not valid JSON.
    """
    p = Path(model_dir_or_onnx_path)
    folder = p if p.is_dir() else p.parent
    card_path = folder / CARD_NAME
    card = read_card(folder) if card_path.is_file() else None
    onnx_path = p
    if p.is_dir():
        onnx_path = onnx_file(folder, card) if card is not None else folder / ONNX_NAME
    if not onnx_path.is_file():
        raise ModelError(f"no ONNX model at {onnx_path}: pass a folder holding {ONNX_NAME} + {CARD_NAME}, "
                         "or the .onnx file itself")
    if card is None:
        raise ModelError(f"no model card {card_path}: the {CARD_NAME} written by export_onnx must sit beside the ONNX")
    return onnx_path, card


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
