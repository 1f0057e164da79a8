"""Edge Impulse's layout: images beside `bounding_boxes.labels`, at the root or in `training/`, `testing/`.

Studio exports with `info.labels` (one entry per file, with its category and boxes) are read too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.datasets.files import atomic_write, images_by_stem, json_number, read_json
from helpers.datasets.model import Dataset, DatasetItem, ImportReport, Split
from helpers.datasets.repair import RawBox, RawItem
from helpers.errors import DatasetError
from helpers.protocol import ei_labels


def _ei_raw_box(d: Any) -> RawBox:
    def num(key: str, alt: str) -> float:
        v = d.get(key, d.get(alt))
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")
    return RawBox(str(d.get("label", "")), num("x", "x"), num("y", "y"), num("width", "w"), num("height", "h"))


def import_ei(src: Path, report: ImportReport) -> list[RawItem]:
    """The annotations of an Edge Impulse folder (its labels files, else its `info.labels`)."""
    raw: list[RawItem] = []
    found_any = False
    for folder, split in ((src, None), (src / "training", "train"), (src / "testing", "test")):
        labels_file = folder / ei_labels.LABELS_FILE
        if not labels_file.is_file():
            continue
        found_any = True
        doc = ei_labels.loads(labels_file.read_bytes(), source=str(labels_file))
        if doc.type not in (None, ei_labels.LABELS_TYPE):
            report.note(f"{labels_file}: type {doc.type!r} (expected {ei_labels.LABELS_TYPE!r}), read anyway")
        index = images_by_stem(folder)
        for fname, boxes in doc.boxes.items():
            path = folder / fname
            if not path.is_file():
                alt = index.get(Path(fname).stem)
                if alt is not None:
                    report.fix("image_found_by_stem", f"{labels_file.name}: {fname} not found, used {alt.name}")
                    path = alt
            raw.append(RawItem(path, fname, [_ei_raw_box(b) for b in boxes],
                                split, where=f"{labels_file.relative_to(src)}:{fname}"))
        listed = {Path(f).name for f in doc.boxes}
        used = {r.image_path for r in raw}
        for p in sorted({p for p in index.values() if p.name not in listed and p not in used}):
            report.skip("unannotated_image", f"{p.relative_to(src)} is not in {ei_labels.LABELS_FILE}")
    info = src / "info.labels"
    if not found_any and info.is_file():
        doc = read_json(info)
        for entry in doc.get("files", []) if isinstance(doc, dict) else []:
            rel = entry.get("path", "")
            category = entry.get("category")
            split = "train" if category == "training" else "test" if category == "testing" else None
            raw.append(RawItem(src / rel, Path(rel).name, [_ei_raw_box(b) for b in entry.get("boundingBoxes") or []],
                                split, where=f"info.labels:{rel}"))
        found_any = True
    if not found_any:
        raise DatasetError(f"{src}: no {ei_labels.LABELS_FILE} (at the root, in training/ or testing/) and no info.labels")
    return raw


def export_ei(dataset: Dataset, dest: Path) -> None:
    """Write images and a labels file per split: the root (no split), `training/`, `testing/`."""
    groups: dict[Split | None, list[DatasetItem]] = {}
    for item in dataset.items:
        groups.setdefault(item.split, []).append(item)
    folders = {None: dest, "train": dest / "training", "test": dest / "testing"}
    for split, items in groups.items():
        folder = folders[split]
        folder.mkdir(parents=True, exist_ok=True)
        boxes = {
            item.name: [{"label": b.label, "x": json_number(b.x), "y": json_number(b.y),
                         "width": json_number(b.width), "height": json_number(b.height)} for b in item.boxes]
            for item in items
        }
        for item in items:
            (folder / item.name).write_bytes(item.image_bytes)
        atomic_write(folder / ei_labels.LABELS_FILE, ei_labels.dumps(boxes, indent=2))
