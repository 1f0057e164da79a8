"""Camera sources for the device modules: synthetic scenes, a folder of images, or a webcam.

`open_camera(source, **opts)` returns a `Camera`; `Camera.read()` returns a `Frame` with the
RGB image at the configured size (default 320x320), its JPEG bytes, ground-truth boxes when
the source knows them, a running index and the capture time.

The synthetic camera follows a scene file (`{"objects": [...], "distractors": [...]}`, path
from `scene_file=` or `EDGELOOP_SCENE_FILE`): when the file changes, the next frame shows the
new scene. That is how a notebook puts a banana in front of a running device:

    >>> write_scene(workspace / "devices" / "dev1" / "scene.json", ["banana"])
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from helpers.errors import ConfigError, EdgeLoopError
from helpers.geometry import BBox

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "folder", "webcam")
SCENE_ENV = "EDGELOOP_SCENE_FILE"
CAMERA_ENV = "EDGELOOP_CAMERA"
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


# ----------------------------------------------------------------------------- scene files


def _check_scene(objects: Sequence[str], distractors: Sequence[str], where: str) -> tuple[list[str], list[str]]:
    from helpers.sim.synthetic import ALL_CLASSES, OBJECT_CLASSES

    if isinstance(objects, str) or isinstance(distractors, str):
        raise CameraError(f"{where}: objects and distractors are lists, e.g. {{\"objects\": [\"apple\"], \"distractors\": []}}")
    objects = [str(o).strip().lower() for o in objects]
    distractors = [str(d).strip().lower() for d in distractors]
    bad = [o for o in objects if o not in OBJECT_CLASSES]
    if bad:
        raise CameraError(f"{where}: unknown object(s) {bad}; objects are {list(OBJECT_CLASSES)}")
    bad = [d for d in distractors if d not in ALL_CLASSES]
    if bad:
        raise CameraError(f"{where}: unknown distractor(s) {bad}; valid: {list(ALL_CLASSES)}")
    return objects, distractors


def _check_mix(mix: Any, where: str) -> list[dict[str, list[str]]]:
    if mix is None:
        return []
    if not isinstance(mix, (list, tuple)) or not all(isinstance(m, dict) for m in mix):
        raise CameraError(f"{where}: mix is a list of {{\"objects\": [...], \"distractors\": [...]}} scenes")
    out = []
    for m in mix:
        objects, distractors = _check_scene(m.get("objects", []), m.get("distractors", []), where)
        out.append({"objects": objects, "distractors": distractors})
    return out


def write_scene(path: str | os.PathLike, objects: Sequence[str], distractors: Sequence[str] = (),
                mix: Sequence[dict] | None = None) -> Path:
    """Atomically write a scene file a synthetic camera follows.

    Args:
        path: the scene file (e.g. `WORKSPACE/devices/<id>/scene.json`).
        objects: labelled things in view (`apple`, `banana`), repeats allowed.
        distractors: unlabelled things in view (`orange`, `lemon`, `ball`).
        mix: optional arrangements the person in front of the camera goes through, one per
            reshuffle (`[{"objects": [...], "distractors": [...]}, ...]`); `objects` and
            `distractors` are shown first.

    Returns:
        The path written.

    Raises:
        CameraError: an unknown object or distractor name.
    """
    p = Path(path)
    objects, distractors = _check_scene(objects, distractors, str(p))
    doc: dict[str, Any] = {"objects": objects, "distractors": distractors}
    checked_mix = _check_mix(mix, str(p))
    if checked_mix:
        doc["mix"] = checked_mix
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.write("\n")
        # mkstemp makes it 0600: a module in a container runs as another user and reads it
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def read_scene(path: str | os.PathLike) -> dict[str, Any]:
    """Read a scene file: `{"objects": [...], "distractors": [...], "mix": [...]}` (mix optional).

    Raises:
        CameraError: the file is missing, not JSON, or names unknown things.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CameraError(f"scene file {p} does not exist; write one with write_scene(path, ['apple'])") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CameraError(f"scene file {p} is not JSON ({e}); rewrite it with write_scene()") from None
    if not isinstance(doc, dict):
        raise CameraError(f"scene file {p}: expected {{\"objects\": [...], \"distractors\": [...]}}")
    objects, distractors = _check_scene(doc.get("objects", []), doc.get("distractors", []), str(p))
    return {"objects": objects, "distractors": distractors, "mix": _check_mix(doc.get("mix"), str(p))}


# ----------------------------------------------------------------------------- cameras


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


class SyntheticCamera(Camera):
    """`helpers.sim.synthetic.SceneStream` behind a camera, following a scene file.

    Args:
        objects: labelled things in view when there is no scene file.
        distractors: unlabelled things in view when there is no scene file.
        scene_file: the scene file to follow (default: `$EDGELOOP_SCENE_FILE`, if set).
        seed: the synthetic world's seed.
        size, jpeg_quality: see `Camera`.
        shuffle_every: every this many frames the person in front of the camera puts new
            fruit of the same kinds down somewhere else (0: never). Between shuffles the
            objects drift a little from frame to frame, as a hand-held object does, so box
            tracking has something to follow and a dataset still sees many objects.
        move_every: every this many shuffles the camera is carried to another table (new
            background and light), as workshop participants move their devices around the
            room (0: one table for good). One table makes a model that knows that table only.
    """

    source = "synthetic"

    def __init__(self, objects: Sequence[str] = ("apple",), distractors: Sequence[str] = (),
                 scene_file: str | os.PathLike | None = None, seed: int = 0,
                 size: tuple[int, int] | int | None = DEFAULT_SIZE, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                 shuffle_every: int = 0, move_every: int = 0):
        from helpers.sim.synthetic import SceneStream

        super().__init__(size if size is not None else DEFAULT_SIZE, jpeg_quality)
        if scene_file is None and os.environ.get(SCENE_ENV):
            scene_file = os.environ[SCENE_ENV]
        self.scene_file = Path(scene_file) if scene_file else None
        self.scene_error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        objects, distractors = _check_scene(objects, distractors, "open_camera('synthetic')")
        self.mix: list[dict[str, list[str]]] = []
        self._mix_pos = 0
        if self.scene_file is not None and self.scene_file.exists():
            scene = read_scene(self.scene_file)  # a broken file at start is an error: say so now
            objects, distractors, self.mix = scene["objects"], scene["distractors"], scene["mix"]
            self._stamp = self._file_stamp()
        self.objects, self.distractors = list(objects), list(distractors)
        if shuffle_every < 0:
            raise ConfigError(f"shuffle_every must be >= 0 (0: never), got {shuffle_every}")
        self.shuffle_every = int(shuffle_every)
        self._since_shuffle = 0
        if move_every < 0:
            raise ConfigError(f"move_every must be >= 0 (0: never), got {move_every}")
        self.move_every = int(move_every)
        self._shuffles = 0
        self._stream = SceneStream(self.objects, self.distractors, size=self.size, seed=seed)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.scene_file.stat()  # type: ignore[union-attr]
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def _follow_scene_file(self) -> None:
        if self.scene_file is None:
            return
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            scene = read_scene(self.scene_file)
        except CameraError as e:
            # Keep showing the last good scene; a fixed file (new mtime) is picked up next read.
            self.scene_error = str(e)
            log.warning("%s (keeping the current scene)", e)
            return
        self.scene_error = None
        if (scene["objects"], scene["distractors"], scene["mix"]) != (self.objects, self.distractors, self.mix):
            self.mix, self._mix_pos = scene["mix"], 0
            self.set_scene(scene["objects"], scene["distractors"])

    def set_scene(self, objects: Sequence[str], distractors: Sequence[str] = ()) -> None:
        """Change what is in view now (the scene file, if any, wins again when it changes)."""
        objects, distractors = _check_scene(objects, distractors, "set_scene")
        self._stream.set_scene(objects, distractors)
        self.objects, self.distractors = objects, distractors
        self._since_shuffle = 0
        log.info("scene now objects=%s distractors=%s", objects, distractors)

    def _grab(self):
        self._follow_scene_file()
        if self.shuffle_every and self._since_shuffle >= self.shuffle_every:
            self._shuffles += 1
            if self.move_every and self._shuffles % self.move_every == 0:
                self._stream.move_camera()
            if self.mix:  # the next arrangement of the scene's mix
                self._mix_pos += 1
                scene = self.mix[(self._mix_pos - 1) % len(self.mix)]
                self._stream.set_scene(scene["objects"], scene["distractors"])
            else:
                self._stream.set_scene(self.objects, self.distractors)
            self._since_shuffle = 0
        self._since_shuffle += 1
        rgb, boxes = self._stream.next_frame()
        return rgb, list(boxes), None


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
        from helpers.errors import DatasetError
        from helpers.labeling.formats import IMAGE_EXTENSIONS, detect_format, import_dataset

        super().__init__(size, jpeg_quality)
        self.path = Path(path)
        if not self.path.is_dir():
            raise CameraError(f"folder camera: {self.path} is not a folder; pass open_camera('folder', path=...)")
        self.loop = loop
        self._pos = 0
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


_SOURCES = {"synthetic": SyntheticCamera, "folder": FolderCamera, "webcam": WebcamCamera}


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
    cls = _SOURCES[source]
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = sorted(set(opts) - set(params))
    if bad:
        raise ConfigError(f"camera {source!r} has no option(s) {bad}; options: {params}")
    return cls(**opts)


__all__ = [
    "Camera",
    "CameraError",
    "EndOfStream",
    "FolderCamera",
    "Frame",
    "SyntheticCamera",
    "WebcamCamera",
    "open_camera",
    "read_scene",
    "write_scene",
]
