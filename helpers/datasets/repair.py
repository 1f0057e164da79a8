"""From annotations as read to a `Dataset`: labels mapped, boxes cleaned, names made unique, all reported."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.datasets.images import normalize_image
from helpers.datasets.model import MIN_BOX_SIZE, UNKNOWN_POLICIES, Dataset, DatasetItem, ImportReport, Split
from helpers.errors import DatasetError
from helpers.geometry import BBox


@dataclass
class RawBox:
    label: str
    x: float
    y: float
    width: float
    height: float


@dataclass
class RawItem:
    """An annotation as read, before images are checked and boxes cleaned."""

    image_path: Path | None
    name: str  # the annotation's name for the image
    boxes: list[RawBox]
    split: Split | None
    declared_size: tuple[int, int] | None = None  # (w, h) from the annotation
    where: str = ""  # the annotation file, for messages


class LabelPolicy:
    """Lower-casing, `class_map` and the unknown-class policy."""

    def __init__(self, class_map: Mapping[str, str | None] | None, unknown: str, classes: Sequence[str] | None):
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown={unknown!r}: use one of {UNKNOWN_POLICIES}")
        self.map = {str(k).strip().lower(): (None if v is None else str(v).strip().lower()) for k, v in (class_map or {}).items()}
        self.unknown = unknown
        self.classes = [str(c).strip().lower() for c in classes] if classes is not None else None
        self.kept_unknown: set[str] = set()

    def resolve(self, raw: str) -> tuple[str | None, str]:
        """(label or None, why): why in {"", "mapped", "dropped", "unknown"}."""
        label = str(raw).strip().lower()
        why = ""
        if label in self.map:
            target = self.map[label]
            if target is None:
                return None, "dropped"
            label, why = target, "mapped"
        if self.classes is not None and label not in self.classes:
            return label, "unknown"
        return label, why


def _find_unknown(raw_items: list[RawItem], labels: LabelPolicy) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in raw_items:
        for box in item.boxes:
            label, why = labels.resolve(box.label)
            if why == "unknown":
                found.setdefault(label, []).append(item.where or item.name)
    return found


def _refuse_unknown(found: dict[str, list[str]], labels: LabelPolicy) -> None:
    parts = []
    for label, wheres in sorted(found.items()):
        files = sorted(set(wheres))
        parts.append(f"{label!r} ({len(wheres)} boxes, e.g. in {Path(files[0]).name})")
    first = sorted(found)[0]
    target = labels.classes[0] if labels.classes else "apple"
    raise DatasetError(
        f"unknown class(es) {', '.join(parts)}; known classes: {labels.classes}. Map them with "
        f"class_map={{'{first}': '{target}'}}, drop them with class_map={{'{first}': None}}, "
        f"or pass unknown='skip' (leave those boxes out) or unknown='keep' (add the class)"
    )


def finish_import(raw_items: list[RawItem], labels: LabelPolicy, report: ImportReport) -> Dataset:
    if labels.unknown == "refuse":
        found = _find_unknown(raw_items, labels)
        if found:
            _refuse_unknown(found, labels)
    items: list[DatasetItem] = []
    used_names: set[str] = set()
    seen_labels: set[str] = set()
    for raw in raw_items:
        if raw.image_path is None or not raw.image_path.is_file():
            report.skip("missing_image", f"{raw.where or raw.name}: image {raw.name} not found")
            continue
        try:
            img = normalize_image(raw.image_path.read_bytes(), raw.image_path.name, report)
        except DatasetError as e:
            report.skip("unreadable_image", str(e))
            continue
        if raw.declared_size is not None and raw.declared_size != (img.width, img.height):
            w, h = raw.declared_size
            kind = "size_from_image" if w <= 0 or h <= 0 else "size_mismatch"
            report.fix(kind, f"{raw.where or raw.name}: size {w}x{h} in the annotation, image is {img.width}x{img.height}; used the image's")
        boxes = _clean_boxes(raw, img.width, img.height, labels, report)
        stem = os.path.splitext(raw.image_path.name)[0]
        name = _unique(stem + img.ext, used_names, raw, report)
        items.append(DatasetItem(name, img.data, img.width, img.height, boxes, raw.split))
        seen_labels.update(b.label for b in boxes)
        report.images += 1
        report.boxes += len(boxes)
    if labels.classes is not None:
        names = list(labels.classes) + sorted(seen_labels - set(labels.classes))
    else:
        names = sorted(seen_labels)
    return Dataset(items, names)


def _unique(name: str, used: set[str], raw: RawItem, report: ImportReport) -> str:
    if name not in used:
        used.add(name)
        return name
    stem, ext = os.path.splitext(name)
    n = 2
    while f"{stem}_{n}{ext}" in used:
        n += 1
    new = f"{stem}_{n}{ext}"
    used.add(new)
    report.fix("duplicate_name", f"{raw.image_path}: name {name} already taken, renamed {new}")
    return new


def _clean_boxes(raw: RawItem, width: int, height: int, labels: LabelPolicy, report: ImportReport) -> list[BBox]:
    out: list[BBox] = []
    where = raw.where or raw.name
    for rb in raw.boxes:
        values = (rb.x, rb.y, rb.width, rb.height)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            report.skip("malformed_box", f"{where}: box {rb.label!r} has non-numeric coordinates {values}")
            continue
        label, why = labels.resolve(rb.label)
        if label is None:
            report.skip("dropped_by_class_map", f"{where}: box {rb.label!r} dropped by class_map")
            continue
        if why == "unknown":
            if labels.unknown == "skip":
                report.skip("unknown_class", f"{where}: box of unknown class {label!r} left out")
                continue
            if label not in labels.kept_unknown:
                labels.kept_unknown.add(label)
                report.note(f"kept unknown class {label!r} (first in {where})")
        elif why == "mapped":
            report.fix("class_mapped", f"{where}: {rb.label!r} -> {label!r}")
        if rb.width <= 0 or rb.height <= 0:
            report.skip("degenerate_box", f"{where}: {label} box {rb.width:g}x{rb.height:g} has no area")
            continue
        box = BBox(label, float(rb.x), float(rb.y), float(rb.width), float(rb.height))
        clipped = box.clipped(width, height)
        if clipped.width < MIN_BOX_SIZE or clipped.height < MIN_BOX_SIZE:
            kind = "box_outside_image" if clipped.width <= 0 or clipped.height <= 0 else "degenerate_box"
            report.skip(kind, f"{where}: {label} box at ({rb.x:g}, {rb.y:g}) {rb.width:g}x{rb.height:g} "
                              f"is {'outside' if kind == 'box_outside_image' else 'under 1 px inside'} the {width}x{height} image")
            continue
        if clipped != box:
            report.fix("box_clipped", f"{where}: {label} box clipped to the {width}x{height} image")
        out.append(clipped)
    return out
