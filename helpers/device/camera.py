"""The camera sources a real device has, and the factory that opens one by name.

`open_camera(source, **opts)` returns a `Camera` (`helpers.frames`): `folder` replays a
folder of images (annotated folders give their boxes as ground truth), `webcam` reads a
V4L2/USB camera or a video file through OpenCV, and `synthetic`, the simulated device's
camera (`helpers.sim.camera`), renders scenes that follow a scene file.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import cv2

from helpers.errors import ConfigError, DatasetError
from helpers.frames import DEFAULT_JPEG_QUALITY, DEFAULT_SIZE, Camera, CameraError, EndOfStream

SOURCES = ("synthetic", "folder", "webcam")
CAMERA_ENV = "EDGELOOP_CAMERA"


class FolderCamera(Camera):
    """Replays a folder of images, looping; annotated folders (VOC, Edge Impulse, COCO) give
    their boxes as ground truth.

    Args:
        path: the folder.
        fmt: `auto`, `ei`, `voc`, `coco`, or `images` (no annotations).
        loop: start again after the last image (else `read()` raises `EndOfStream`).
        size, jpeg_quality: see `Camera`.
    """

    source = "folder"

    def __init__(self, path: str | os.PathLike, fmt: str = "auto", loop: bool = True,
                 size: tuple[int, int] | int | None = DEFAULT_SIZE, jpeg_quality: int = DEFAULT_JPEG_QUALITY):
        super().__init__(size, jpeg_quality)
        self.path = Path(path)
        if not self.path.is_dir():
            raise CameraError(f"folder camera: {self.path} is not a folder; pass open_camera('folder', path=...)")
        self.loop = loop
        self._pos = 0
        from helpers.datasets import IMAGE_EXTENSIONS, detect_format, import_dataset  # only a folder camera needs them

        if fmt == "auto":
            try:
                fmt = detect_format(self.path)
            except DatasetError:
                fmt = "images"  # no annotations: plain images, no ground truth
        self._items: list[tuple[str, Any]] = []
        if fmt == "images":
            files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            self._items = [(p.name, p) for p in files]
            self.report = None
        else:
            dataset, self.report = import_dataset(self.path, fmt=fmt)
            self._items = [(item.name, item) for item in dataset.items]
        if not self._items:
            raise CameraError(f"folder camera: no images in {self.path} ({', '.join(IMAGE_EXTENSIONS)})")

    def __len__(self) -> int:
        return len(self._items)

    def _grab(self):
        if self._pos >= len(self._items):
            if not self.loop:
                raise EndOfStream(f"folder camera: all {len(self._items)} images of {self.path} shown (loop=False)")
            self._pos = 0
        name, entry = self._items[self._pos]
        self._pos += 1
        if isinstance(entry, Path):
            bgr = cv2.imread(str(entry), cv2.IMREAD_COLOR)
            if bgr is None:
                raise CameraError(f"folder camera: {entry} cannot be decoded; remove or replace it")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None, name
        return entry.rgb(), list(entry.boxes), name


class WebcamCamera(Camera):
    """A V4L2/USB camera or video file through `cv2.VideoCapture`.

    Args:
        device: camera index (0), device path (`/dev/video0`) or video file/URL.
        size, jpeg_quality: see `Camera`.
    """

    source = "webcam"

    def __init__(self, device: int | str = 0, size: tuple[int, int] | int | None = DEFAULT_SIZE,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY):
        super().__init__(size, jpeg_quality)
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        self.device = device
        self._cap = cv2.VideoCapture(device)
        if not self._cap.isOpened():
            self._cap.release()
            hint = (
                "check it is plugged in (ls /dev/video*), that your user may read it (group video), "
                "and, in a container, that createOptions maps it (HostConfig.Devices); "
                f"or use the synthetic camera ({CAMERA_ENV}=synthetic)"
            )
            raise CameraError(f"no camera at {device!r}: cv2.VideoCapture could not open it; {hint}")

    def _grab(self):
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraError(f"camera {self.device!r} returned no frame (unplugged, busy, or end of the video file)")
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB), None, None
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None, None

    def close(self) -> None:
        if not self.closed:
            self._cap.release()
        super().close()


def _synthetic() -> type[Camera]:
    from helpers.sim.camera import SyntheticCamera  # the renderer: loaded only when this source is chosen

    return SyntheticCamera


# each source's class, imported when it is opened (a device with a webcam never loads the simulator)
_SOURCES = {"synthetic": _synthetic, "folder": lambda: FolderCamera, "webcam": lambda: WebcamCamera}


def open_camera(source: str | None = "synthetic", **opts: Any) -> Camera:
    """Open a camera.

    Args:
        source: `synthetic`, `folder` or `webcam`; None reads `$EDGELOOP_CAMERA`
            (default `synthetic`).
        **opts: the source's options:
            synthetic: `objects`, `distractors`, `scene_file`, `seed`;
            folder: `path`, `fmt`, `loop`;
            webcam: `device` (index, `/dev/videoN` or a video file);
            all: `size` (`(width, height)`, default 320x320), `jpeg_quality` (default 90).

    Raises:
        ConfigError: unknown source or option.
        CameraError: the device, folder or scene file cannot be used (the message says why).
    """
    if source is None:
        source = os.environ.get(CAMERA_ENV) or "synthetic"
    if source not in _SOURCES:
        raise ConfigError(f"unknown camera source {source!r}; valid: {', '.join(SOURCES)} (set {CAMERA_ENV})")
    cls = _SOURCES[source]()
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = sorted(set(opts) - set(params))
    if bad:
        raise ConfigError(f"camera {source!r} has no option(s) {bad}; options: {params}")
    return cls(**opts)


__all__ = ["CAMERA_ENV", "SOURCES", "FolderCamera", "WebcamCamera", "open_camera"]
