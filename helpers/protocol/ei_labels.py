"""Edge Impulse's `bounding_boxes.labels` file: boxes per image file name, as JSON.

`{"version": 1, "type": "bounding-box-labels", "boundingBoxes": {"a.jpg": [{"label", "x", "y",
"width", "height"}]}}`, pixels, top-left corner. It sits beside the images of a dataset folder
and travels with them in an ingestion upload. Pure: text or bytes in, dicts out, and back.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from helpers.errors import DatasetError
from helpers.geometry import BBox

LABELS_FILE = "bounding_boxes.labels"
LABELS_TYPE = "bounding-box-labels"
LABELS_VERSION = 1


@dataclass
class LabelsFile:
    """A parsed labels file.

    Attributes:
        boxes: image file name -> its boxes as read (`label`, `x`, `y`, `width`, `height`;
            values not checked, entries that are not objects left out).
        type: the document's `type` (None when absent; `bounding-box-labels` when written by EI).
        version: the document's `version`.
    """

    boxes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    type: str | None = LABELS_TYPE
    version: Any = LABELS_VERSION


def _box(box: BBox | Mapping[str, Any]) -> dict[str, Any]:
    out = box.to_dict() if isinstance(box, BBox) else dict(box)
    out.pop("value", None)  # a detector score: not part of a label
    return out


def labels_document(boxes: Mapping[str, Iterable[BBox | Mapping[str, Any]]]) -> dict[str, Any]:
    """The labels document for {image file name: boxes} (`BBox` or box dicts; scores dropped)."""
    return {
        "version": LABELS_VERSION,
        "type": LABELS_TYPE,
        "boundingBoxes": {str(name): [_box(b) for b in bs] for name, bs in boxes.items()},
    }


def dumps(boxes: Mapping[str, Iterable[BBox | Mapping[str, Any]]], indent: int | None = None) -> str:
    """The labels file's text; with `indent`, pretty-printed and ending in a newline (as on disk)."""
    text = json.dumps(labels_document(boxes), indent=indent)
    return text + "\n" if indent is not None else text


def encode(boxes: Mapping[str, Iterable[BBox | Mapping[str, Any]]]) -> bytes:
    """The labels file's bytes, compact (what an ingestion upload sends)."""
    return dumps(boxes).encode()


def loads(data: str | bytes, source: str = LABELS_FILE) -> LabelsFile:
    """Parse a labels file (a UTF-8 BOM is allowed).

    Args:
        data: the file's text or bytes.
        source: what to call the file in messages (its path).

    Raises:
        DatasetError: not JSON, or not `{"boundingBoxes": {file: [boxes]}}`.
    """
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.removeprefix("\ufeff")
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{source} is not valid JSON ({e}); fix or remove the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("boundingBoxes"), dict):
        raise DatasetError(
            f"{source}: expected {{\"version\": {LABELS_VERSION}, \"type\": \"{LABELS_TYPE}\", "
            "\"boundingBoxes\": {...}}"
        )
    boxes = {str(name): [dict(b) for b in (bs or []) if isinstance(b, dict)] for name, bs in doc["boundingBoxes"].items()}
    return LabelsFile(boxes=boxes, type=doc.get("type"), version=doc.get("version"))
