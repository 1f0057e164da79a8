"""COCO detection files: `instances.json` or `annotations/*.json`; images beside, in `images/` or by name."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.datasets.files import atomic_write, json_number, read_json
from helpers.datasets.model import Dataset, DatasetItem, ImportReport, Split
from helpers.datasets.repair import RawBox, RawItem
from helpers.errors import DatasetError


def coco_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    files = []
    if (src / "instances.json").is_file():
        files.append(src / "instances.json")
    if (src / "annotations").is_dir():
        files.extend(sorted(p for p in (src / "annotations").glob("*.json")))
    if not files:
        files = [p for p in sorted(src.glob("*.json")) if _looks_coco(p)]
    return files


def _looks_coco(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def _coco_split(path: Path) -> Split | None:
    stem = path.stem.lower()
    if "train" in stem:
        return "train"
    if "test" in stem or "val" in stem:
        return "test"
    return None


def import_coco(src: Path, report: ImportReport) -> list[RawItem]:
    files = coco_files(src)
    if not files:
        raise DatasetError(f"{src}: no COCO annotations (instances.json or annotations/*.json)")
    base = src if src.is_dir() else src.parent
    raw: list[RawItem] = []
    for ann_file in files:
        doc = read_json(ann_file)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise DatasetError(f"{ann_file}: not a COCO detection file (needs images, annotations, categories lists)")
        where_file = str(ann_file.relative_to(base)) if ann_file.is_relative_to(base) else ann_file.name
        categories = {c.get("id"): str(c.get("name", "")) for c in doc.get("categories") or [] if isinstance(c, dict)}
        split = _coco_split(ann_file)
        roots = [ann_file.parent, base, base / "images", base / ("train" if split == "train" else "test"),
                 base / "images" / ("train" if split == "train" else "test")]
        if ann_file.parent.name == "annotations":
            roots.insert(0, ann_file.parent.parent / "images")
        by_image: dict[Any, list[RawBox]] = {}
        for ann in doc.get("annotations") or []:
            if not isinstance(ann, dict):
                continue
            if ann.get("iscrowd"):
                report.skip("crowd_box", f"{where_file}: annotation {ann.get('id')} is a crowd region")
                continue
            cat = ann.get("category_id")
            if cat not in categories:
                report.skip("malformed_box", f"{where_file}: annotation {ann.get('id')} has unknown category_id {cat}")
                continue
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                report.skip("malformed_box", f"{where_file}: annotation {ann.get('id')} has bbox {bbox!r}")
                continue
            try:
                x, y, w, h = (float(v) for v in bbox)
            except (TypeError, ValueError):
                x = y = w = h = float("nan")
            by_image.setdefault(ann.get("image_id"), []).append(RawBox(categories[cat], x, y, w, h))
        for img in doc["images"]:
            fname = str(img.get("file_name", ""))
            path = None
            for r in roots:
                for candidate in (r / fname, r / Path(fname).name):
                    if fname and candidate.is_file():
                        path = candidate
                        break
                if path:
                    break
            declared = (int(img.get("width") or 0), int(img.get("height") or 0))
            raw.append(RawItem(path, fname, by_image.get(img.get("id"), []), split, declared, f"{where_file}:{fname}"))
    return raw


def export_coco(dataset: Dataset, dest: Path) -> None:
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "annotations").mkdir(parents=True, exist_ok=True)
    labels = list(dataset.labels) + sorted({b.label for i in dataset.items for b in i.boxes} - set(dataset.labels))
    categories = [{"id": i + 1, "name": label, "supercategory": "none"} for i, label in enumerate(labels)]
    cat_id = {c["name"]: c["id"] for c in categories}
    groups: dict[Split | None, list[DatasetItem]] = {}
    for item in dataset.items:
        groups.setdefault(item.split, []).append(item)
    ann_id = 1
    for split, items in groups.items():
        images, annotations = [], []
        for n, item in enumerate(items, start=1):
            (dest / "images" / item.name).write_bytes(item.image_bytes)
            image_id = n
            images.append({"id": image_id, "file_name": item.name, "width": item.width, "height": item.height})
            for b in item.boxes:
                annotations.append({
                    "id": ann_id, "image_id": image_id, "category_id": cat_id[b.label],
                    "bbox": [json_number(b.x), json_number(b.y), json_number(b.width), json_number(b.height)],
                    "area": json_number(b.width * b.height), "iscrowd": 0,
                })
                ann_id += 1
        doc = {"info": {"description": "exported by helpers.datasets"}, "licenses": [],
               "images": images, "annotations": annotations, "categories": categories}
        name = f"instances_{split}.json" if split else "instances.json"
        atomic_write(dest / "annotations" / name, json.dumps(doc) + "\n")
