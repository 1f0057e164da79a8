"""Camera sources: synthetic (following a scene file), folder replay, webcam errors."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers.datasets import dataset_from_arrays, export_dataset
from helpers.device.camera import open_camera
from helpers.errors import ConfigError
from helpers.frames import CameraError, EndOfStream
from helpers.geometry import BBox
from helpers.sim.camera import read_scene, write_scene

SMALL = (96, 96)
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def bump_mtime(path: Path) -> None:
    """Make sure a rewrite is seen even on file systems with coarse mtimes."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_synthetic_frames(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("EDGELOOP_SCENE_FILE", raising=False)
    with open_camera("synthetic", objects=["apple", "apple"], distractors=["orange"], size=SMALL, seed=1) as cam:
        frames = list(cam.frames(3))
    assert [f.index for f in frames] == [0, 1, 2]
    f = frames[-1]
    assert f.image.shape == (96, 96, 3) and f.image.dtype == np.uint8
    assert ISO_UTC.match(f.captured_at)
    assert len(f.ground_truth) == 2 and {b.label for b in f.ground_truth} == {"apple"}
    decoded = cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (96, 96, 3) and f.jpeg[:3] == b"\xff\xd8\xff"
    assert cam.closed
    with pytest.raises(CameraError, match="closed"):
        cam.read()


def test_synthetic_default_size_and_jpeg_quality(monkeypatch):
    monkeypatch.delenv("EDGELOOP_SCENE_FILE", raising=False)
    with open_camera("synthetic", objects=["apple"], jpeg_quality=30) as cam:
        f = cam.read()
    assert f.image.shape == (320, 320, 3)
    with open_camera("synthetic", objects=["apple"], jpeg_quality=95) as cam:
        assert len(cam.read().jpeg) > len(f.jpeg)


def test_synthetic_follows_scene_file(tmp_path: Path, monkeypatch):
    scene = write_scene(tmp_path / "dev1" / "scene.json", ["apple"])
    monkeypatch.setenv("EDGELOOP_SCENE_FILE", str(scene))
    with open_camera("synthetic", size=SMALL) as cam:  # scene file from the environment
        assert {b.label for b in cam.read().ground_truth} == {"apple"}
        write_scene(scene, ["banana"], distractors=["lemon"])
        bump_mtime(scene)
        f = cam.read()
        assert [b.label for b in f.ground_truth] == ["banana"]
        assert cam.distractors == ["lemon"]
        # a broken rewrite keeps the last good scene and says why
        scene.write_text("{half a scene")
        bump_mtime(scene)
        assert [b.label for b in cam.read().ground_truth] == ["banana"]
        assert "not JSON" in cam.scene_error
        write_scene(scene, [])
        bump_mtime(scene)
        assert cam.read().ground_truth == [] and cam.scene_error is None


def test_scene_files(tmp_path: Path):
    p = write_scene(tmp_path / "s.json", ["Apple", "banana"], ["orange"])
    assert read_scene(p) == {"objects": ["apple", "banana"], "distractors": ["orange"], "mix": []}
    assert json.loads(p.read_text()) == {"objects": ["apple", "banana"], "distractors": ["orange"]}
    assert [x.name for x in tmp_path.iterdir()] == ["s.json"]  # no temp file left behind
    with pytest.raises(CameraError, match="unknown object"):
        write_scene(tmp_path / "t.json", ["pear"])
    with pytest.raises(CameraError, match="does not exist"):
        read_scene(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"objects": ["orange"]}))
    with pytest.raises(CameraError, match="objects are"):
        read_scene(tmp_path / "bad.json")


def test_folder_replays_annotated_images_with_ground_truth(tmp_path: Path):
    rng = np.random.default_rng(0)
    samples = [(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8), [BBox("apple", 10, 4, 20, 10)]) for _ in range(3)]
    export_dataset(dataset_from_arrays(samples), tmp_path / "voc", "voc")
    with open_camera("folder", path=tmp_path / "voc", size=(160, 80)) as cam:
        frames = list(cam.frames(4))
    assert len(cam) == 3
    assert [f.source_name for f in frames] == ["img_00000.png", "img_00001.png", "img_00002.png", "img_00000.png"]
    assert frames[3].index == 3  # the index keeps counting across loops
    assert frames[0].ground_truth == [BBox("apple", 20, 8, 40, 20)]  # scaled with the frame
    assert frames[0].image.shape == (80, 160, 3)
    with open_camera("folder", path=tmp_path / "voc", loop=False, size=None) as cam:
        frames = list(cam.frames())
        assert len(frames) == 3 and frames[0].image.shape == (40, 80, 3)
        with pytest.raises(EndOfStream):
            cam.read()


def test_folder_of_plain_images(tmp_path: Path):
    for i in range(2):
        Image.fromarray(np.full((30, 30, 3), i * 100, np.uint8)).save(tmp_path / f"{i}.png")
    with open_camera("folder", path=tmp_path, size=SMALL) as cam:
        f = cam.read()
    assert f.ground_truth is None and f.image.shape == (96, 96, 3)
    with pytest.raises(CameraError, match="no images"):
        open_camera("folder", path=_empty(tmp_path))
    with pytest.raises(CameraError, match="not a folder"):
        open_camera("folder", path=tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_webcam_error_names_the_device():
    with pytest.raises(CameraError, match=r"no camera at '/dev/video99'.*HostConfig.Devices"):
        open_camera("webcam", device="/dev/video99")


def test_webcam_reads_a_video_file(tmp_path: Path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI")
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    with open_camera("webcam", device=str(path), size=SMALL) as cam:
        f = cam.read()
        assert f.ground_truth is None and f.image.shape == (96, 96, 3)


def test_unknown_source_and_options(monkeypatch):
    with pytest.raises(ConfigError, match="synthetic, folder, webcam"):
        open_camera("kinect")
    with pytest.raises(ConfigError, match="no option"):
        open_camera("synthetic", fps=30)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        open_camera("synthetic", jpeg_quality=0)
    monkeypatch.setenv("EDGELOOP_CAMERA", "kinect")
    with pytest.raises(ConfigError, match="EDGELOOP_CAMERA"):
        open_camera(None)


def test_scene_mix_cycles_at_each_reshuffle(tmp_path: Path):
    """With a mix, each reshuffle shows the next arrangement; the frames' boxes follow it."""
    mix = [{"objects": ["banana"]}, {"objects": ["apple", "apple"], "distractors": ["orange"]}]
    scene = write_scene(tmp_path / "scene.json", ["apple"], mix=mix)
    assert read_scene(scene)["mix"][1] == {"objects": ["apple", "apple"], "distractors": ["orange"]}
    with pytest.raises(CameraError, match="mix"):
        write_scene(tmp_path / "bad.json", ["apple"], mix=["banana"])
    with open_camera("synthetic", scene_file=scene, seed=3, size=(96, 96), shuffle_every=2) as cam:
        labels = [sorted(b.label for b in cam.read().ground_truth) for _ in range(6)]
    assert labels[:2] == [["apple"], ["apple"]]
    assert labels[2:4] == [["banana"], ["banana"]]
    assert all(lab == ["apple", "apple"] for lab in labels[4:6])


def _corner(frame) -> np.ndarray:
    return frame.image[:12, :12].astype(np.float32)


def test_the_camera_moves_to_another_table_every_few_shuffles():
    """move_every=2 with shuffle_every=2: the table (background) changes every 4 frames."""
    with open_camera("synthetic", objects=[], seed=5, size=(64, 64), shuffle_every=2, move_every=2) as cam:
        frames = [cam.read() for _ in range(9)]
    same = lambda a, b: float(np.abs(_corner(a) - _corner(b)).mean()) < 12  # noqa: E731  (jitter, noise)
    assert same(frames[0], frames[3])  # one table for the first 4 frames
    assert not same(frames[3], frames[4])  # then another
    assert same(frames[4], frames[7]) and not same(frames[7], frames[8])
    with pytest.raises(ConfigError, match="move_every"):
        open_camera("synthetic", move_every=-1)
