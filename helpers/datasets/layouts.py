"""Which layout a folder holds, and importing or exporting a dataset by layout (`ei`, `voc`, `coco`)."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from helpers.datasets.coco import coco_files, export_coco, import_coco
from helpers.datasets.edge_impulse import export_ei, import_ei
from helpers.datasets.model import FORMATS, Dataset, ImportReport
from helpers.datasets.repair import LabelPolicy, finish_import
from helpers.datasets.voc import export_voc, import_voc
from helpers.errors import DatasetError
from helpers.protocol.ei_labels import LABELS_FILE


def detect_format(src: str | os.PathLike) -> str:
    """Which layout a folder (or annotation file) holds: `ei`, `voc` or `coco`.

    Raises:
        DatasetError: the path does not exist or holds none of the three.
    """
    p = Path(src)
    if not p.exists():
        raise DatasetError(f"{p} does not exist; give the folder holding the images and annotations")
    if p.is_file():
        if p.name.endswith(".labels"):
            return "ei"
        if p.suffix.lower() == ".json":
            return "coco"
        if p.suffix.lower() == ".xml":
            return "voc"
        raise DatasetError(f"{p}: not a dataset annotation file (.labels, .json or .xml); give its folder")
    if any((d / LABELS_FILE).is_file() for d in (p, p / "training", p / "testing")) or (p / "info.labels").is_file():
        return "ei"
    if coco_files(p):
        return "coco"
    annotations = p / "Annotations" if (p / "Annotations").is_dir() else p
    if any(x.suffix.lower() == ".xml" for x in annotations.iterdir() if x.is_file()):
        return "voc"
    raise DatasetError(
        f"{p}: no dataset found: expected {LABELS_FILE} (Edge Impulse), .xml files (Pascal VOC) "
        "or instances.json / annotations/*.json (COCO)"
    )


def import_dataset(
    src: str | os.PathLike,
    fmt: str = "auto",
    class_map: Mapping[str, str | None] | None = None,
    unknown: str = "refuse",
    classes: Sequence[str] | None = None,
) -> tuple[Dataset, ImportReport]:
    """Read a dataset in Edge Impulse, Pascal VOC or COCO layout, repairing what is safe.

    Args:
        src: the dataset folder (or its annotation file).
        fmt: `auto` (see `detect_format`), `ei`, `voc` or `coco`.
        class_map: source label -> label (case-insensitive); map to None to drop a class.
        unknown: what to do with a label (after `class_map`) not in `classes`: `refuse`
            (raise, naming the class and the mapping that fixes it), `skip` the box, or `keep`.
        classes: the known classes; None accepts every label.

    Returns:
        `(dataset, report)`.

    Raises:
        DatasetError: nothing to import, an unreadable annotation file, or unknown classes
            with `unknown="refuse"`.
        ValueError: `fmt` or `unknown` is not a valid choice.
    """
    if fmt not in ("auto", *FORMATS):
        raise ValueError(f"fmt={fmt!r}: use 'auto' or one of {FORMATS}")
    labels = LabelPolicy(class_map, unknown, classes)
    path = Path(src)
    if not path.exists():
        raise DatasetError(f"{path} does not exist; give the folder holding the images and annotations")
    fmt = detect_format(path) if fmt == "auto" else fmt
    folder = path.parent if path.is_file() and fmt != "coco" else path
    report = ImportReport(source=str(path), format=fmt)
    reader = {"ei": import_ei, "voc": import_voc, "coco": import_coco}[fmt]
    raw = reader(folder, report)
    dataset = finish_import(raw, labels, report)
    if not dataset.items:
        raise DatasetError(f"{path}: no usable images ({report.summary()})")
    return dataset, report


def export_dataset(dataset: Dataset, dest: str | os.PathLike, fmt: str) -> Path:
    """Write `dataset` to `dest` in `ei`, `voc` or `coco` layout (files of the same names are replaced).

    Returns:
        The destination folder.

    Raises:
        ValueError: unknown `fmt`.
        DatasetError: two items share a name (they would overwrite each other).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: use one of {FORMATS}")
    names = Counter(item.name for item in dataset.items)
    dupes = [n for n, c in names.items() if c > 1]
    if dupes:
        raise DatasetError(f"item names must be unique to export, repeated: {dupes[:5]}; rename the items")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    {"ei": export_ei, "voc": export_voc, "coco": export_coco}[fmt](dataset, out)
    return out
