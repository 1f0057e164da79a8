"""Camera frames and the base every camera source builds on.

`Camera.read()` returns a `Frame`: the RGB image at the configured size (default 320x320), its
JPEG bytes, ground-truth boxes when the source knows them, a running index and the capture
time. The sources: `helpers.device.camera` (a folder of images, a webcam or video file, and
`open_camera`, the factory) and `helpers.sim.camera` (the synthetic camera).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from helpers.errors import ConfigError, EdgeLoopError
from helpers.geometry import BBox

DEFAULT_SIZE = (320, 320)
DEFAULT_JPEG_QUALITY = 90


class CameraError(EdgeLoopError):
    """A camera cannot be opened or read; the message names the device and the fix."""


class EndOfStream(CameraError):
    """A non-looping folder camera has shown every image."""


def utc_now_iso() -> str:
    """Current time as ISO 8601 UTC with milliseconds, e.g. `2025-01-31T12:00:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Frame:
    """One camera frame.

    Attributes:
        image: RGB uint8 array (H, W, 3).
        index: 0, 1, 2, ... in the order frames were read from this camera.
        captured_at: ISO 8601 UTC time of capture.
        ground_truth: boxes of the labelled objects, when the source knows them (synthetic,
            an annotated folder); None otherwise (a webcam).
        jpeg_quality: quality used for `jpeg`.
        source_name: the image's name for a folder camera, else None.
    """

    image: np.ndarray
    index: int
    captured_at: str
    ground_truth: list[BBox] | None = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    source_name: str | None = field(default=None)

    @cached_property
    def jpeg(self) -> bytes:
        """The frame as JPEG bytes (OpenCV, `jpeg_quality`)."""
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)]
        )
        if not ok:
            raise CameraError(f"OpenCV could not encode frame {self.index} as JPEG")
        return buf.tobytes()

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


def _parse_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be (width, height), got {size!r}") from None
    if w < 8 or h < 8:
        raise ConfigError(f"size must be at least 8x8 pixels, got {w}x{h}")
    return w, h


def _resize(rgb: np.ndarray, boxes: list[BBox] | None, size: tuple[int, int] | None):
    """Squash (as Edge Impulse's default resize) to `size`, scaling the boxes with it."""
    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb, boxes
    h0, w0 = rgb.shape[:2]
    w, h = size
    interp = cv2.INTER_AREA if w < w0 or h < h0 else cv2.INTER_LINEAR
    out = cv2.resize(rgb, (w, h), interpolation=interp)
    if boxes is not None:
        sx, sy = w / w0, h / h0
        boxes = [BBox(b.label, b.x * sx, b.y * sy, b.width * sx, b.height * sy, b.value) for b in boxes]
    return out, boxes


class Camera:
    """Base camera: `read()` frames, `close()` (or use as a context manager).

    Args:
        size: frame size `(width, height)`; None keeps the source's size.
        jpeg_quality: JPEG quality (1-100) for `Frame.jpeg`.
    """

    source = "camera"

    def __init__(self, size: tuple[int, int] | int | None = DEFAULT_SIZE, jpeg_quality: int = DEFAULT_JPEG_QUALITY):
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be 1..100, got {jpeg_quality}")
        self.size = _parse_size(size)
        self.jpeg_quality = int(jpeg_quality)
        self.frames_read = 0
        self.closed = False

    def _grab(self) -> tuple[np.ndarray, list[BBox] | None, str | None]:
        raise NotImplementedError

    def read(self) -> Frame:
        """The next frame.

        Raises:
            CameraError: the camera is closed or the device stopped delivering frames.
            EndOfStream: a non-looping folder has no more images.
        """
        if self.closed:
            raise CameraError(f"{self!r} is closed; open a new one with open_camera()")
        rgb, boxes, name = self._grab()
        captured_at = utc_now_iso()
        rgb, boxes = _resize(rgb, boxes, self.size)
        frame = Frame(np.ascontiguousarray(rgb), self.frames_read, captured_at, boxes, self.jpeg_quality, name)
        self.frames_read += 1
        return frame

    def frames(self, n: int | None = None) -> Iterator[Frame]:
        """Yield `n` frames (forever when None; a non-looping folder stops at its end)."""
        count = 0
        while n is None or count < n:
            try:
                yield self.read()
            except EndOfStream:
                return
            count += 1

    def close(self) -> None:
        """Release the device; further reads raise `CameraError`."""
        self.closed = True

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        size = f"{self.size[0]}x{self.size[1]}" if self.size else "native"
        return f"{type(self).__name__}(size={size}, frames_read={self.frames_read}{', closed' if self.closed else ''})"


__all__ = ["DEFAULT_JPEG_QUALITY", "DEFAULT_SIZE", "Camera", "CameraError", "EndOfStream", "Frame", "utc_now_iso"]
