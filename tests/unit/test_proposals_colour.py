"""A tracked box that lands on other fruit after a missed scene change is not offered as confident.

The synthetic camera (story scene "apples", seed 3, new fruit every 5 frames) has, at frame 50,
the shuffle issue #26 saw: the apple's template matches an orange lying near the apple's old place
at 0.88 in brightness, above the scene check's 0.85. The colour check lowers that box's
confidence, and the scene change is then caught; boxes tracked onto their own apple keep theirs.
"""
from __future__ import annotations

from helpers.geometry import iou
from helpers.labeling.proposals import (
    SCENE_MIN_MATCH,
    best_proposal,
    colour_agreement,
    detect_scene_change,
    flag_scene_change,
    tracking_proposal,
)
from helpers.sim.camera import SyntheticCamera, write_scene
from helpers.sim.scenes import story_scenes


def _frames(tmp_path, n: int):
    mix = story_scenes("apples")
    scene = write_scene(tmp_path / "scene.json", mix[0]["objects"], mix[0]["distractors"], mix=mix)
    cam = SyntheticCamera(scene_file=scene, seed=3, shuffle_every=5, move_every=3)
    return [cam.read() for _ in range(n)]


def test_the_orange_where_the_apple_was_is_not_offered_as_confident(tmp_path):
    frames = _frames(tmp_path, 51)
    prev, frame = frames[49], frames[50]
    tracked = tracking_proposal(prev.image, prev.ground_truth, frame.image, from_sample=49)
    wrong = [b for b in tracked.boxes if not any(iou(b, t) > 0.5 for t in frame.ground_truth)]
    assert wrong, "the stream no longer has the shuffle this test is about (seed 3, frame 50)"
    assert all(b.value < SCENE_MIN_MATCH for b in wrong), wrong  # was 0.88 from brightness alone
    assert tracked.detail["recoloured"] >= 1
    change = detect_scene_change(prev.image, prev.ground_truth, frame.image, tracked)
    assert change.changed and "changed colour" in change.reason, change
    flagged = flag_scene_change(tracked, change)
    assert best_proposal({"tracking": flagged}) is None  # nothing offered: the person draws


def test_boxes_tracked_onto_their_own_fruit_keep_their_confidence(tmp_path):
    frames = _frames(tmp_path, 50)
    kept = 0
    for k, (prev, frame) in enumerate(zip(frames, frames[1:])):
        if (k + 1) % 5 == 0:  # new fruit was put down before this frame: not the same apples
            continue
        tracked = tracking_proposal(prev.image, prev.ground_truth, frame.image)
        assert tracked.detail["recoloured"] == 0, (k + 1, tracked.boxes, frame.ground_truth)
        kept += sum(1 for b in tracked.boxes if b.value >= SCENE_MIN_MATCH)
    assert kept >= 40


def test_colour_agreement_is_one_within_tolerance_and_falls_to_zero():
    assert colour_agreement(0.0) == colour_agreement(8.0) == 1.0
    assert colour_agreement(16.0) == 0.5
    assert colour_agreement(40.0) == 0.0
