"""The synthetic camera: `helpers.sim.scenes.SceneStream` behind a `Camera`, following a scene file.

The scene file (`{"objects": [...], "distractors": [...], "mix": [...]}`, path from
`scene_file=` or `EDGELOOP_SCENE_FILE`) says what is in view: when the file changes, the next
frame shows the new scene. That is how a notebook puts a banana in front of a running device:

    >>> write_scene(workspace / "devices" / "dev1" / "scene.json", ["banana"])

`helpers.device.camera.open_camera("synthetic")` opens one on a simulated device.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.errors import ConfigError
from helpers.frames import DEFAULT_JPEG_QUALITY, DEFAULT_SIZE, Camera, CameraError
from helpers.sim.render import ALL_CLASSES, OBJECT_CLASSES
from helpers.sim.scenes import SceneStream

log = logging.getLogger(__name__)

SCENE_ENV = "EDGELOOP_SCENE_FILE"


def _check_scene(objects: Sequence[str], distractors: Sequence[str], where: str) -> tuple[list[str], list[str]]:
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


class SyntheticCamera(Camera):
    """`helpers.sim.scenes.SceneStream` behind a camera, following a scene file.

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


__all__ = ["SCENE_ENV", "SyntheticCamera", "read_scene", "write_scene"]
