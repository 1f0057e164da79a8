"""Images as a dataset keeps them: checked, repaired to RGB JPEG/PNG, encoded; datasets from arrays."""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from helpers.datasets.model import JPEG_QUALITY, Dataset, DatasetItem, ImportReport, Split
from helpers.errors import DatasetError
from helpers.geometry import BBox

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


def encode_rgb(rgb: Image.Image, fmt: str) -> bytes:
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
    return _Image(encode_rgb(pil, out_fmt), pil.width, pil.height, _CONTENT_EXT[out_fmt])


def _ext_ok(fmt: str, ext: str) -> bool:
    return ext in ((".jpg", ".jpeg") if fmt == "JPEG" else (".png",))


def dataset_from_arrays(
    samples: Iterable[tuple[np.ndarray, Sequence[BBox]]],
    names: Iterable[str] | None = None,
    split: Split | None = None,
    fmt: str = "png",
) -> Dataset:
    """Build a `Dataset` from RGB arrays and boxes (e.g. `helpers.sim.scenes.render_dataset`).

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
        data = encode_rgb(pil, "JPEG" if fmt == "jpg" else "PNG")
        items.append(DatasetItem(f"{stem}.{fmt}", data, pil.width, pil.height, list(boxes), split))
    labels = sorted({b.label for item in items for b in item.boxes})
    return Dataset(items, labels)
