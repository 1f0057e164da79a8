"""What the labeling queue reads from a studio sample: its image, device, capture time and
frame index (capture order), and class names as the studio keeps them."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import cv2
import numpy as np

from helpers.errors import DatasetError

_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes to an RGB uint8 array.

    Raises:
        DatasetError: the bytes are not an image OpenCV can decode.
    """
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise DatasetError("sample image could not be decoded (not a JPEG/PNG?): delete the sample or re-upload it")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def sample_device(sample: Any) -> str:
    """The device a sample came from (`Sample.device`, else metadata `device`, else '')."""
    return str(sample.device or sample.metadata.get("device") or "")


def sample_frame_index(sample: Any) -> int | None:
    value = sample.metadata.get("frame_index")
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def captured_epoch(sample: Any) -> float | None:
    """The capture time as epoch seconds, or None when absent or not ISO 8601."""
    raw = sample.captured_at or sample.metadata.get("captured_at")
    if not raw:
        return None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def capture_key(sample: Any) -> tuple[str, str, int, int]:
    """Sort key: device, capture time, frame index, sample id (upload order)."""
    captured = str(sample.captured_at or sample.metadata.get("captured_at") or "")
    fi = sample_frame_index(sample)
    return (sample_device(sample), captured, -1 if fi is None else fi, int(sample.id))


def normalise_label(name: str) -> str:
    """A class name as the studio keeps it: lowercase, stripped.

    Raises:
        DatasetError: empty, or characters other than a-z, 0-9, `_` and `-`.
    """
    label = str(name).strip().lower()
    if not _LABEL_RE.match(label):
        raise DatasetError(
            f"class name {name!r} is not valid: use lowercase letters, digits, '_' or '-', "
            "starting with a letter (e.g. 'banana')"
        )
    return label
