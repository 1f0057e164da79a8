"""What the studio accepts: plain file names, label names, boxes in pixels, readable images, model files and cards."""
from __future__ import annotations

import io
import math
import os
import re
import warnings
from typing import Any

import numpy as np

from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import MAX_IMAGE_PIXELS, LimitError

LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9 _\-]{0,63}$")


def check_filename(name: str | None, field: str) -> str:
    """A plain file name: no path separators, no `..`, no control characters (400 otherwise)."""
    if not name or not name.strip():
        raise ApiError(400, f"{field}: a file name is required", field)
    if "/" in name or "\\" in name or ".." in name or any(ord(c) < 32 for c in name) or len(name) > 255:
        raise ApiError(400, f"{field}: file name {name[:60]!r} must be a plain name (no '/', '\\', '..' or control characters)", field)
    return name


def normalise_label(name: Any, field: str) -> str:
    if not isinstance(name, str) or not LABEL_RE.match(name.strip().lower()):
        raise ApiError(400, f"{field}: label {str(name)[:40]!r} must be a short lowercase name such as 'apple'", field)
    return name.strip().lower()


def parse_boxes(raw: Any, field: str, width: int | None = None, height: int | None = None) -> list[dict[str, Any]]:
    """Validate a list of `{label, x, y, width, height}` boxes in pixels; clip to the image."""
    if not isinstance(raw, list):
        raise ApiError(400, f"{field} must be a list of {{label, x, y, width, height}} boxes", field)
    out = []
    for i, b in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(b, dict):
            raise ApiError(400, f"{where} must be an object {{label, x, y, width, height}}", where)
        label = normalise_label(b.get("label"), f"{where}.label")
        nums = {}
        for k in ("x", "y", "width", "height"):
            v = b.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ApiError(400, f"{where}.{k} must be a number (pixels)", f"{where}.{k}")
            nums[k] = float(v)
        if nums["width"] <= 0 or nums["height"] <= 0:
            raise ApiError(400, f"{where}: width and height must be positive", where)
        if width is not None and height is not None:
            x0, y0 = max(nums["x"], 0.0), max(nums["y"], 0.0)
            x1, y1 = min(nums["x"] + nums["width"], float(width)), min(nums["y"] + nums["height"], float(height))
            if x1 <= x0 or y1 <= y0:
                raise ApiError(400, f"{where} lies outside the {width}x{height} image", where)
            nums = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
        out.append({"label": label, **{k: round(v, 3) for k, v in nums.items()}})
    return out


def check_image_header(data: bytes, name: str) -> tuple[int, int] | None:
    """(width, height) from an image's header, read before anything decodes it; None when Pillow cannot read it.

    Raises:
        LimitError: 400 for an image whose header claims more than `MAX_IMAGE_PIXELS` pixels (a
            small file can claim 10000 x 10000, which decoding would allocate whole).
    """
    from PIL import Image, UnidentifiedImageError  # lazily, as OpenCV: only the upload paths read images

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # our limit decides, silently
            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                width, height = im.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:  # over Pillow's bound, hence ours
        raise LimitError("image_pixels", f"data: file {name!r} claims more pixels than the {MAX_IMAGE_PIXELS / 1e6:.0f} "
                                         f"megapixel limit ({exc}); resize it before uploading", "data") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None  # not an image Pillow knows: OpenCV decides (and refuses garbage)
    if width * height > MAX_IMAGE_PIXELS:
        raise LimitError("image_pixels", f"data: file {name!r} claims {width}x{height} pixels, over the "
                                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixel limit; resize it before uploading",
                         "data")
    return width, height


def decode_image(data: bytes, name: str) -> tuple[int, int, str]:
    """(width, height, ext) of an image; 400 naming the file when it does not decode or is over the pixel limit."""
    # OpenCV's own header check, for formats Pillow does not read (read once, at OpenCV's first decode)
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
    import cv2  # only the upload paths decode images: OpenCV stays off the service's other paths

    if not data:
        raise ApiError(400, f"data: file {name!r} is empty", "data")
    check_image_header(data, name)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own header checks (OPENCV_IO_MAX_IMAGE_PIXELS and the like)
        raise ApiError(400, f"data: file {name!r} is not an image the studio reads ({str(exc).strip().splitlines()[-1][:120]}); "
                            f"images are at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels", "data") from None
    if img is None or img.size == 0:
        raise ApiError(400, f"data: file {name!r} is not a readable image (JPEG or PNG expected)", "data")
    if data[:3] == b"\xff\xd8\xff":
        ext = "jpg"
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ApiError(400, f"data: file {name!r} is a truncated JPEG", "data")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        ext = "png"
    elif data[:2] == b"BM":
        ext = "bmp"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        ext = "webp"
    else:
        ext = "img"
    return int(img.shape[1]), int(img.shape[0]), ext


def check_model_bytes(data: bytes, fmt: str) -> None:
    """400 unless `data` is a model file of format `fmt` ("onnx", "eim" or "tflite")."""
    if fmt == "onnx":
        check_onnx(data)
        return
    if not data:
        raise ApiError(400, f"model: the .{fmt} file is empty", "model")
    if fmt == "tflite" and data[4:8] != b"TFL3":
        raise ApiError(400, "model: not a TFLite flatbuffer (no 'TFL3' identifier); upload the .tflite Edge Impulse exports",
                       "model")
    if fmt == "eim" and not (data[:4] == b"\x7fELF" or data[:2] == b"#!"):
        raise ApiError(400, "model: not an .eim executable (neither ELF nor a script); upload the Linux build "
                            "Edge Impulse deploys (runner-linux-*)", "model")


def check_onnx(data: bytes) -> None:
    """400 when the bytes are not an ONNX model (checked with the onnx package when installed)."""
    if not data:
        raise ApiError(400, "model: the ONNX file is empty", "model")
    try:
        import onnx  # optional and heavy: only a model registration loads it
    except ImportError:
        return
    from google.protobuf.message import DecodeError  # comes with onnx

    try:
        onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ApiError(400, f"model: not a valid ONNX model ({type(exc).__name__}); export it with torch.onnx.export", "model") from None



def check_card_labels(card: dict[str, Any]) -> None:
    """400 unless the card's `labels` are plain label strings, the rule sample labels follow.

    A device shows its model's labels on its web page and in its telemetry; a label that is
    markup (`<img src=x onerror=...>`) would be a script in whoever opens that page.
    """
    if "labels" not in card:
        return
    labels = card["labels"]
    if not isinstance(labels, list) or not labels:
        raise ApiError(400, "card.labels must be a non-empty list of label names, e.g. [\"apple\", \"banana\"]", "card.labels")
    for i, name in enumerate(labels):
        if not isinstance(name, str) or not LABEL_RE.match(name):
            raise ApiError(400, f"card.labels[{i}]: label {str(name)[:40]!r} must be a short lowercase name such as 'apple' "
                                "(letters, digits, space, '_' or '-'), as sample labels are", f"card.labels[{i}]")


# The file a model version keeps, by the card's `format` (helpers.inference.card.FORMAT_FILES).
MODEL_FILES = {"onnx": "model.onnx", "eim": "model.eim", "tflite": "model.tflite"}


def model_file_of(card: dict[str, Any]) -> str:
    return MODEL_FILES.get(card.get("format") or "onnx", "model.onnx")
