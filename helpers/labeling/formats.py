"""Import and export object-detection datasets: Edge Impulse, Pascal VOC and COCO.

Real files are messy; the importer repairs what it safely can and reports every repair:

- a `.jpg` that is really a PNG (detected by content) is renamed `.png`;
- RGBA, palette, grayscale, CMYK or 16-bit images are converted to RGB (alpha composited on
  white) and re-encoded (PNG, or JPEG when the source was JPEG); RGB files keep their bytes;
- an EXIF orientation other than 1 is baked out, so every decoder sees the annotated pixels;
- a VOC `<size>` of 0x0 (or one that disagrees with the file) takes the image's size;
- boxes partly outside the image are clipped; degenerate or wholly-outside boxes are skipped;
- labels are lower-cased and mapped through `class_map`; unknown classes are refused (with
  the mapping to fix it), skipped or kept, as asked;
- an annotation whose image is missing or unreadable is skipped.

Everything taken, fixed and skipped is counted in an `ImportReport`.

Layouts:
- Edge Impulse: `bounding_boxes.labels`
  (`{"version": 1, "type": "bounding-box-labels", "boundingBoxes": {file: [{label, x, y, width, height}]}}`)
  beside the images, at the root and/or in `training/` and `testing/`; Studio exports with
  `info.labels` are read too.
- Pascal VOC: one `.xml` per image, beside it or in `Annotations/` with images in
  `JPEGImages/`; `ImageSets/Main/{train,test}.txt` give splits when present.
- COCO: `instances.json` or `annotations/*.json`; images beside, in `images/` or found by name.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from helpers.errors import DatasetError
from helpers.geometry import BBox

FORMATS = ("ei", "voc", "coco")
UNKNOWN_POLICIES = ("refuse", "skip", "keep")
SPLITS = ("train", "test")
EI_LABELS_FILE = "bounding_boxes.labels"
EI_SPLIT_DIRS = {"training": "train", "testing": "test"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Boxes narrower or lower than this many pixels (after clipping) are skipped as degenerate.
MIN_BOX_SIZE = 1.0
JPEG_QUALITY = 95

Split = Literal["train", "test"]


# ----------------------------------------------------------------------------- data classes


@dataclass
class DatasetItem:
    """One image and its boxes.

    Attributes:
        name: file name (unique in the dataset; its extension matches the content).
        image_bytes: the encoded image, RGB JPEG or PNG.
        width: image width in pixels.
        height: image height in pixels.
        boxes: labelled boxes in pixels (top-left x/y, width/height).
        split: `"train"`, `"test"` or None (not assigned).
    """

    name: str
    image_bytes: bytes
    width: int
    height: int
    boxes: list[BBox] = field(default_factory=list)
    split: Split | None = None

    def rgb(self) -> np.ndarray:
        """Decode the image to an RGB uint8 array (H, W, 3)."""
        buf = np.frombuffer(self.image_bytes, dtype=np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise DatasetError(f"{self.name}: image bytes cannot be decoded; re-import the dataset")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @property
    def sha256(self) -> str:
        """Content hash of the image bytes (the sample's identity in a dataset snapshot)."""
        return hashlib.sha256(self.image_bytes).hexdigest()


@dataclass
class Dataset:
    """Items plus the class list (`labels`, in a stable order)."""

    items: list[DatasetItem]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def box_counts(self) -> dict[str, int]:
        """Boxes per label, every label of `labels` present (0 when it has none)."""
        counts = Counter(b.label for item in self.items for b in item.boxes)
        return {label: counts.get(label, 0) for label in self.labels} | {
            k: v for k, v in sorted(counts.items()) if k not in self.labels
        }

    def split(self, name: Split | None) -> list[DatasetItem]:
        """The items of one split (`None`: the unassigned ones)."""
        return [item for item in self.items if item.split == name]


@dataclass
class ImportReport:
    """What an import took, repaired and left out.

    Attributes:
        source: the folder or file imported.
        format: `ei`, `voc` or `coco`.
        images: images taken.
        boxes: boxes taken.
        fixed: repairs by kind (`png_named_jpg`, `converted_rgba`, `size_from_image`, `box_clipped`, ...).
        skipped: things left out by kind (`degenerate_box`, `missing_image`, `unknown_class`, ...).
        messages: one line per event, naming the file.
    """

    source: str
    format: str
    images: int = 0
    boxes: int = 0
    fixed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def fix(self, kind: str, message: str) -> None:
        self.fixed[kind] += 1
        self.messages.append(f"fixed ({kind}): {message}")

    def skip(self, kind: str, message: str) -> None:
        self.skipped[kind] += 1
        self.messages.append(f"skipped ({kind}): {message}")

    def note(self, message: str) -> None:
        self.messages.append(message)

    def summary(self, max_messages: int = 10) -> str:
        """A few lines for a notebook: counts, then the first `max_messages` messages."""
        lines = [f"imported {self.images} images, {self.boxes} boxes from {self.source} ({self.format})"]
        if self.fixed:
            lines.append("fixed: " + ", ".join(f"{k} {v}" for k, v in sorted(self.fixed.items())))
        if self.skipped:
            lines.append("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())))
        shown = self.messages[:max_messages]
        lines.extend(f"  {m}" for m in shown)
        if len(self.messages) > len(shown):
            lines.append(f"  ... and {len(self.messages) - len(shown)} more (report.messages)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ----------------------------------------------------------------------------- images


_CONTENT_EXT = {"JPEG": ".jpg", "PNG": ".png"}


@dataclass
class _Image:
    data: bytes
    width: int
    height: int
    ext: str  # extension matching `data`


def _sniff(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max() if arr.size else 0.0
        scale = 255.0 / top if top > 255 else 1.0
        im = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("LA", "PA", "La"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        base = Image.new("RGB", im.size, (255, 255, 255))
        base.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        return base
    return im.convert("RGB")


def _encode(rgb: Image.Image, fmt: str) -> bytes:
    bgr = cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    if fmt == "JPEG":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise DatasetError(f"OpenCV could not encode a {rgb.size[0]}x{rgb.size[1]} image as {fmt}")
    return buf.tobytes()


def normalize_image(data: bytes, name: str, report: ImportReport | None = None) -> _Image:
    """Check an encoded image and bring it to RGB JPEG/PNG, reporting each repair.

    Raises:
        DatasetError: the bytes are not a readable image.
    """
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{name}: not a readable image ({e})") from None
    fmt = im.format or _sniff(data) or "unknown"
    ext = os.path.splitext(name)[1].lower()
    orientation = 1
    try:
        orientation = int(im.getexif().get(0x0112, 1) or 1)
    except (ValueError, TypeError, SyntaxError, OSError):
        orientation = 1  # unreadable EXIF: treat as upright, as OpenCV would
    out_fmt = fmt if fmt in _CONTENT_EXT else "PNG"
    needs_pixels = fmt not in _CONTENT_EXT or im.mode != "RGB" or orientation != 1
    if fmt in _CONTENT_EXT and not _ext_ok(fmt, ext) and report:
        report.fix(f"{fmt.lower()}_named_{ext.lstrip('.') or 'noext'}", f"{name} is a {fmt} file: renamed to {_CONTENT_EXT[fmt]}")
    if not needs_pixels:
        return _Image(data, im.width, im.height, ext if _ext_ok(fmt, ext) else _CONTENT_EXT[fmt])
    pil = im
    if orientation != 1:
        pil = ImageOps.exif_transpose(im)
        if report:
            report.fix("exif_orientation", f"{name}: EXIF orientation {orientation} applied to the pixels")
    if pil.mode != "RGB":
        if report:
            kind = {"RGBA": "rgba", "P": "palette", "L": "grayscale", "LA": "grayscale", "CMYK": "cmyk"}.get(pil.mode, pil.mode.lower())
            report.fix(f"converted_{kind}", f"{name}: {pil.mode} image converted to RGB")
        pil = _to_rgb(pil)
    if fmt not in _CONTENT_EXT and report:
        report.fix("reencoded", f"{name}: {fmt} re-encoded as PNG")
    return _Image(_encode(pil, out_fmt), pil.width, pil.height, _CONTENT_EXT[out_fmt])


def _ext_ok(fmt: str, ext: str) -> bool:
    return ext in ((".jpg", ".jpeg") if fmt == "JPEG" else (".png",))


# ----------------------------------------------------------------------------- import helpers


@dataclass
class _RawBox:
    label: str
    x: float
    y: float
    width: float
    height: float


@dataclass
class _RawItem:
    """An annotation as read, before images are checked and boxes cleaned."""

    image_path: Path | None
    name: str  # the annotation's name for the image
    boxes: list[_RawBox]
    split: Split | None
    declared_size: tuple[int, int] | None = None  # (w, h) from the annotation
    where: str = ""  # the annotation file, for messages


class _Labels:
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


def _find_unknown(raw_items: list[_RawItem], labels: _Labels) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in raw_items:
        for box in item.boxes:
            label, why = labels.resolve(box.label)
            if why == "unknown":
                found.setdefault(label, []).append(item.where or item.name)
    return found


def _refuse_unknown(found: dict[str, list[str]], labels: _Labels) -> None:
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


def _finish(raw_items: list[_RawItem], labels: _Labels, report: ImportReport) -> Dataset:
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


def _unique(name: str, used: set[str], raw: _RawItem, report: ImportReport) -> str:
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


def _clean_boxes(raw: _RawItem, width: int, height: int, labels: _Labels, report: ImportReport) -> list[BBox]:
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


def _images_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
                out.setdefault(p.stem, p)
                out.setdefault(p.name, p)
    return out


# ----------------------------------------------------------------------------- Edge Impulse


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); fix or remove the file") from None


def _ei_raw_box(d: Any) -> _RawBox:
    def num(key: str, alt: str) -> float:
        v = d.get(key, d.get(alt))
        try:
            return float(v)
        except (TypeError, ValueError):
            return float("nan")
    return _RawBox(str(d.get("label", "")), num("x", "x"), num("y", "y"), num("width", "w"), num("height", "h"))


def _import_ei(src: Path, report: ImportReport) -> list[_RawItem]:
    raw: list[_RawItem] = []
    found_any = False
    for folder, split in ((src, None), (src / "training", "train"), (src / "testing", "test")):
        labels_file = folder / EI_LABELS_FILE
        if not labels_file.is_file():
            continue
        found_any = True
        doc = _read_json(labels_file)
        if not isinstance(doc, dict) or not isinstance(doc.get("boundingBoxes"), dict):
            raise DatasetError(f"{labels_file}: expected {{\"version\": 1, \"type\": \"bounding-box-labels\", \"boundingBoxes\": {{...}}}}")
        if doc.get("type") not in (None, "bounding-box-labels"):
            report.note(f"{labels_file}: type {doc.get('type')!r} (expected 'bounding-box-labels'), read anyway")
        index = _images_by_stem(folder)
        for fname, boxes in doc["boundingBoxes"].items():
            path = folder / fname
            if not path.is_file():
                alt = index.get(Path(fname).stem)
                if alt is not None:
                    report.fix("image_found_by_stem", f"{labels_file.name}: {fname} not found, used {alt.name}")
                    path = alt
            raw.append(_RawItem(path, fname, [_ei_raw_box(b) for b in (boxes or []) if isinstance(b, dict)],
                                split, where=f"{labels_file.relative_to(src)}:{fname}"))
        listed = {Path(f).name for f in doc["boundingBoxes"]}
        used = {r.image_path for r in raw}
        for p in sorted({p for p in index.values() if p.name not in listed and p not in used}):
            report.skip("unannotated_image", f"{p.relative_to(src)} is not in {EI_LABELS_FILE}")
    info = src / "info.labels"
    if not found_any and info.is_file():
        doc = _read_json(info)
        for entry in doc.get("files", []) if isinstance(doc, dict) else []:
            rel = entry.get("path", "")
            category = entry.get("category")
            split = "train" if category == "training" else "test" if category == "testing" else None
            raw.append(_RawItem(src / rel, Path(rel).name, [_ei_raw_box(b) for b in entry.get("boundingBoxes") or []],
                                split, where=f"info.labels:{rel}"))
        found_any = True
    if not found_any:
        raise DatasetError(f"{src}: no {EI_LABELS_FILE} (at the root, in training/ or testing/) and no info.labels")
    return raw


def _export_ei(dataset: Dataset, dest: Path) -> None:
    groups: dict[Split | None, list[DatasetItem]] = {}
    for item in dataset.items:
        groups.setdefault(item.split, []).append(item)
    folders = {None: dest, "train": dest / "training", "test": dest / "testing"}
    for split, items in groups.items():
        folder = folders[split]
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "version": 1,
            "type": "bounding-box-labels",
            "boundingBoxes": {
                item.name: [
                    {"label": b.label, "x": _num(b.x), "y": _num(b.y), "width": _num(b.width), "height": _num(b.height)}
                    for b in item.boxes
                ]
                for item in items
            },
        }
        for item in items:
            (folder / item.name).write_bytes(item.image_bytes)
        _atomic_write(folder / EI_LABELS_FILE, json.dumps(doc, indent=2) + "\n")


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 3)


# ----------------------------------------------------------------------------- Pascal VOC


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


def _import_voc(src: Path, report: ImportReport) -> list[_RawItem]:
    files = _voc_annotation_files(src)
    if not files:
        raise DatasetError(f"{src}: no Pascal VOC .xml files (beside the images or in Annotations/)")
    image_dirs = [src / "JPEGImages", files[0].parent, src / "images", src]
    indexes = [_images_by_stem(d) for d in dict.fromkeys(image_dirs) if d.is_dir()]
    splits = _voc_splits(src)
    raw: list[_RawItem] = []
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
            boxes.append(_RawBox((obj.findtext("name") or "").strip(), x0, y0, x1 - x0, y1 - y0))
        raw.append(_RawItem(path, fname or xml_path.stem, boxes, splits.get(xml_path.stem), declared, where))
    return raw


def _export_voc(dataset: Dataset, dest: Path) -> None:
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
                ET.SubElement(bb, tag).text = str(_num(v))
        ET.indent(root, space="\t")
        stem = os.path.splitext(item.name)[0]
        ET.ElementTree(root).write(dest / f"{stem}.xml", encoding="utf-8", xml_declaration=True)
        if item.split:
            sets.setdefault(item.split, []).append(stem)
    if sets:
        main = dest / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        for split, stems in sets.items():
            _atomic_write(main / f"{split}.txt", "\n".join(stems) + "\n")


# ----------------------------------------------------------------------------- COCO


def _coco_files(src: Path) -> list[Path]:
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


def _import_coco(src: Path, report: ImportReport) -> list[_RawItem]:
    files = _coco_files(src)
    if not files:
        raise DatasetError(f"{src}: no COCO annotations (instances.json or annotations/*.json)")
    base = src if src.is_dir() else src.parent
    raw: list[_RawItem] = []
    for ann_file in files:
        doc = _read_json(ann_file)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise DatasetError(f"{ann_file}: not a COCO detection file (needs images, annotations, categories lists)")
        where_file = str(ann_file.relative_to(base)) if ann_file.is_relative_to(base) else ann_file.name
        categories = {c.get("id"): str(c.get("name", "")) for c in doc.get("categories") or [] if isinstance(c, dict)}
        split = _coco_split(ann_file)
        roots = [ann_file.parent, base, base / "images", base / ("train" if split == "train" else "test"),
                 base / "images" / ("train" if split == "train" else "test")]
        if ann_file.parent.name == "annotations":
            roots.insert(0, ann_file.parent.parent / "images")
        by_image: dict[Any, list[_RawBox]] = {}
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
            by_image.setdefault(ann.get("image_id"), []).append(_RawBox(categories[cat], x, y, w, h))
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
            raw.append(_RawItem(path, fname, by_image.get(img.get("id"), []), split, declared, f"{where_file}:{fname}"))
    return raw


def _export_coco(dataset: Dataset, dest: Path) -> None:
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
                    "bbox": [_num(b.x), _num(b.y), _num(b.width), _num(b.height)],
                    "area": _num(b.width * b.height), "iscrowd": 0,
                })
                ann_id += 1
        doc = {"info": {"description": "exported by helpers.labeling.formats"}, "licenses": [],
               "images": images, "annotations": annotations, "categories": categories}
        name = f"instances_{split}.json" if split else "instances.json"
        _atomic_write(dest / "annotations" / name, json.dumps(doc) + "\n")


# ----------------------------------------------------------------------------- public API


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    if any((d / EI_LABELS_FILE).is_file() for d in (p, p / "training", p / "testing")) or (p / "info.labels").is_file():
        return "ei"
    if _coco_files(p):
        return "coco"
    annotations = p / "Annotations" if (p / "Annotations").is_dir() else p
    if any(x.suffix.lower() == ".xml" for x in annotations.iterdir() if x.is_file()):
        return "voc"
    raise DatasetError(
        f"{p}: no dataset found: expected {EI_LABELS_FILE} (Edge Impulse), .xml files (Pascal VOC) "
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
    labels = _Labels(class_map, unknown, classes)
    path = Path(src)
    if not path.exists():
        raise DatasetError(f"{path} does not exist; give the folder holding the images and annotations")
    fmt = detect_format(path) if fmt == "auto" else fmt
    folder = path.parent if path.is_file() and fmt != "coco" else path
    report = ImportReport(source=str(path), format=fmt)
    reader = {"ei": _import_ei, "voc": _import_voc, "coco": _import_coco}[fmt]
    raw = reader(folder, report)
    dataset = _finish(raw, labels, report)
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
    {"ei": _export_ei, "voc": _export_voc, "coco": _export_coco}[fmt](dataset, out)
    return out


def dataset_from_arrays(
    samples: Iterable[tuple[np.ndarray, Sequence[BBox]]],
    names: Iterable[str] | None = None,
    split: Split | None = None,
    fmt: str = "png",
) -> Dataset:
    """Build a `Dataset` from RGB arrays and boxes (e.g. `helpers.sim.synthetic.render_dataset`).

    Args:
        samples: `(rgb, boxes)` pairs.
        names: file names without extension (default `img_00000`, ...).
        split: the split of every item.
        fmt: `png` or `jpg`.
    """
    if fmt not in ("png", "jpg"):
        raise ValueError(f"fmt={fmt!r}: use 'png' or 'jpg'")
    items: list[DatasetItem] = []
    name_iter = iter(names) if names is not None else None
    for i, (rgb, boxes) in enumerate(samples):
        stem = next(name_iter) if name_iter is not None else f"img_{i:05d}"
        pil = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
        data = _encode(pil, "JPEG" if fmt == "jpg" else "PNG")
        items.append(DatasetItem(f"{stem}.{fmt}", data, pil.width, pil.height, list(boxes), split))
    labels = sorted({b.label for item in items for b in item.boxes})
    return Dataset(items, labels)


__all__ = [
    "Dataset",
    "DatasetItem",
    "ImportReport",
    "dataset_from_arrays",
    "detect_format",
    "export_dataset",
    "import_dataset",
    "normalize_image",
]
