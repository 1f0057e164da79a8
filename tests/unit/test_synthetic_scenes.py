"""The simulated camera: determinism, tight boxes, motion between frames, scene changes."""
import numpy as np
import pytest

from helpers.geometry import iou
from helpers.sim.scenes import SceneStream, render_dataset, story_scenes


def test_same_seed_same_frames():
    a = SceneStream(["apple", "banana"], ["orange"], size=(160, 120), seed=7)
    b = SceneStream(["apple", "banana"], ["orange"], size=(160, 120), seed=7)
    for _ in range(3):
        (ia, ba), (ib, bb) = a.next_frame(), b.next_frame()
        assert np.array_equal(ia, ib)
        assert ba == bb
    c = SceneStream(["apple", "banana"], ["orange"], size=(160, 120), seed=8)
    assert not np.array_equal(c.next_frame()[0], SceneStream(["apple", "banana"], ["orange"], size=(160, 120), seed=7).next_frame()[0])


def test_frame_shape_and_labeled_classes_only():
    s = SceneStream(["apple", "apple", "banana"], ["orange", "lemon", "ball"], size=(200, 150), seed=1)
    rgb, boxes = s.next_frame()
    assert rgb.shape == (150, 200, 3) and rgb.dtype == np.uint8
    assert sorted(b.label for b in boxes) == ["apple", "apple", "banana"]
    for b in boxes:
        assert 0 <= b.x and 0 <= b.y and b.x + b.width <= 200 and b.y + b.height <= 150
        assert b.width > 4 and b.height > 4


def test_boxes_are_tight_around_the_drawn_object():
    # Render one apple on a flat, noise-free table by comparing with an empty table frame.
    s = SceneStream(["apple"], size=(160, 160), seed=3)
    s._noise, s._blur = 0.0, 0.0
    rgb, (box,) = s.next_frame()
    s2 = SceneStream([], size=(160, 160), seed=3)
    s2._noise, s2._blur = 0.0, 0.0
    # Same background draw (the background is the first thing drawn from the seed).
    empty, _ = s2.next_frame()
    diff = np.abs(rgb.astype(int) - empty.astype(int)).sum(2) > 40
    ys, xs = np.nonzero(diff)
    x0, y0, x1, y1 = box.xyxy
    # Nearly all strongly changed pixels (the apple) lie inside the box (the shadow spills a bit).
    inside = (xs >= x0 - 3) & (xs <= x1 + 3) & (ys >= y0 - 3) & (ys <= y1 + 3)
    assert inside.mean() > 0.9
    # and the box is not much larger than what changed
    assert (xs.max() - xs.min()) >= 0.8 * box.width


def test_consecutive_frames_move_a_little():
    s = SceneStream(["apple", "banana"], size=(320, 320), seed=2)
    prev_img, prev = s.next_frame()
    moved = 0
    for _ in range(10):
        img, cur = s.next_frame()
        for a, b in zip(sorted(prev, key=lambda b: b.label), sorted(cur, key=lambda b: b.label)):
            assert iou(a, b) > 0.5, "objects must not jump between frames (tracking needs small motion)"
            moved += (a.x, a.y) != (b.x, b.y)
        assert not np.array_equal(img, prev_img)
        prev, prev_img = cur, img
    assert moved > 0


def test_set_scene_changes_objects_and_keeps_table():
    s = SceneStream(["apple"], size=(96, 96), seed=4)
    s.next_frame()
    s.set_scene(["banana", "banana"], ["orange"])
    _, boxes = s.next_frame()
    assert [b.label for b in boxes] == ["banana", "banana"]
    s.set_scene([])
    assert s.next_frame()[1] == []


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown object"):
        SceneStream(["pear"])
    with pytest.raises(ValueError, match="distractors"):
        SceneStream(["orange"])


def test_render_dataset_is_deterministic_and_cycles_scenes():
    scenes = [{"objects": ["apple"]}, {"objects": ["banana"], "distractors": ["ball"]}]
    a = render_dataset(4, scenes, size=(96, 96), seed=5)
    b = render_dataset(4, scenes, size=(96, 96), seed=5)
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    assert [[bb.label for bb in boxes] for _, boxes in a] == [["apple"], ["banana"], ["apple"], ["banana"]]
    # image i does not depend on n
    assert np.array_equal(render_dataset(2, scenes, size=(96, 96), seed=5)[1][0], a[1][0])


def test_story_scenes_phase1_has_no_bananas_or_yellow_distractors():
    for scene in story_scenes("apples"):
        assert "banana" not in scene["objects"]
        assert "lemon" not in scene.get("distractors", [])
    assert any("banana" in s["objects"] for s in story_scenes("apples_bananas"))
    with pytest.raises(ValueError):
        story_scenes("pears")
