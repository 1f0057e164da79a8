"""Pascal VOC: one `.xml` per image, beside it or in `Annotations/` with images in `JPEGImages/`.

`ImageSets/Main/{train,test}.txt` give the splits when present.
"""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from helpers.datasets.files import atomic_write, images_by_stem, json_number
from helpers.datasets.model import Dataset, ImportReport, Split
from helpers.datasets.repair import RawBox, RawItem
from helpers.errors import DatasetError


def _voc_float(node: ET.Element | None, tag: str) -> float:
    el = node.find(tag) if node is not None else None
    try:
        return float(el.text.strip()) if el is not None and el.text else float("nan")
    except ValueError:
        return float("nan")


def _voc_annotation_files(src: Path) -> list[Path]:
    folder = src / "Annotations" if (src / "Annotations").is_dir() else src
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".xml")


def _voc_splits(src: Path) -> dict[str, Split]:
    out: dict[str, Split] = {}
    sets = src / "ImageSets" / "Main"
    for split, names in (("train", ("train.txt", "trainval.txt")), ("test", ("test.txt", "val.txt"))):
        for n in names:
            f = sets / n
            if f.is_file():
                for line in f.read_text().split():
                    out.setdefault(line.strip(), split)  # type: ignore[arg-type]
    return out


def import_voc(src: Path, report: ImportReport) -> list[RawItem]:
    files = _voc_annotation_files(src)
    if not files:
        raise DatasetError(f"{src}: no Pascal VOC .xml files (beside the images or in Annotations/)")
    image_dirs = [src / "JPEGImages", files[0].parent, src / "images", src]
    indexes = [images_by_stem(d) for d in dict.fromkeys(image_dirs) if d.is_dir()]
    splits = _voc_splits(src)
    raw: list[RawItem] = []
    for xml_path in files:
        where = str(xml_path.relative_to(src))
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as e:
            report.skip("malformed_annotation", f"{where}: not valid XML ({e})")
            continue
        if root.tag != "annotation":
            report.skip("malformed_annotation", f"{where}: root element <{root.tag}> is not <annotation>")
            continue
        fname = (root.findtext("filename") or "").strip()
        path = None
        for idx in indexes:
            if fname and fname in idx:
                path = idx[fname]
                break
        if path is None:
            for idx in indexes:
                if xml_path.stem in idx:
                    path = idx[xml_path.stem]
                    report.fix("image_found_by_stem", f"{where}: <filename>{fname}</filename> not found, used {path.name}")
                    break
        size = root.find("size")
        declared = None
        if size is not None:
            w, h = _voc_float(size, "width"), _voc_float(size, "height")
            declared = (int(w) if math.isfinite(w) else 0, int(h) if math.isfinite(h) else 0)
        boxes = []
        for obj in root.findall("object"):
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (_voc_float(bb, t) for t in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append(RawBox((obj.findtext("name") or "").strip(), x0, y0, x1 - x0, y1 - y0))
        raw.append(RawItem(path, fname or xml_path.stem, boxes, splits.get(xml_path.stem), declared, where))
    return raw


def export_voc(dataset: Dataset, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[str]] = {}
    for item in dataset.items:
        (dest / item.name).write_bytes(item.image_bytes)
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = dest.name
        ET.SubElement(root, "filename").text = item.name
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(item.width)
        ET.SubElement(size, "height").text = str(item.height)
        ET.SubElement(size, "depth").text = "3"
        ET.SubElement(root, "segmented").text = "0"
        for b in item.boxes:
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = b.label
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), b.xyxy):
                ET.SubElement(bb, tag).text = str(json_number(v))
        ET.indent(root, space="\t")
        stem = os.path.splitext(item.name)[0]
        ET.ElementTree(root).write(dest / f"{stem}.xml", encoding="utf-8", xml_declaration=True)
        if item.split:
            sets.setdefault(item.split, []).append(stem)
    if sets:
        main = dest / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        for split, stems in sets.items():
            atomic_write(main / f"{split}.txt", "\n".join(stems) + "\n")
