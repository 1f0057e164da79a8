"""Tracking and model proposals, box comparison (pure: synthetic frames, no services)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.geometry import BBox, iou
from helpers.labeling.proposals import (
    Proposal,
    best_proposal,
    compare_boxes,
    model_proposal,
    tracking_proposal,
)
from helpers.sim.scenes import SceneStream


def _mean_match_iou(boxes, truth):
    return compare_boxes(boxes, truth, 0.9).mean_iou


@pytest.mark.parametrize("objects,seed", [(["apple", "apple"], 1), (["banana"], 2), (["apple", "banana"], 5)])
def test_tracking_follows_moving_objects(objects, seed):
    stream = SceneStream(objects, ["orange"], size=(320, 320), seed=seed)
    first, first_boxes = stream.next_frame()
    for _ in range(4):  # four frames later the objects have moved noticeably
        later, later_boxes = stream.next_frame()
    assert len(first_boxes) == len(later_boxes) == len(objects)
    stale = _mean_match_iou(first_boxes, later_boxes)
    prop = tracking_proposal(first, first_boxes, later, frame_gap=4, from_sample=7)
    assert prop.source == "tracking"
    assert len(prop.boxes) == len(objects)
    assert {b.label for b in prop.boxes} == set(objects)
    tracked = _mean_match_iou(prop.boxes, later_boxes)
    # Template matching follows translation, not rotation: a turning banana changes its box shape
    # over four frames, so elongated objects get a lower bar than round ones.
    assert tracked > (0.7 if "banana" in objects else 0.85)
    assert tracked > stale  # it moved the boxes where the objects went
    assert 0.5 < prop.score <= 1.0
    assert all(b.value is not None for b in prop.boxes)
    assert prop.detail["from_sample"] == 7 and prop.detail["frame_gap"] == 4


def test_tracking_consecutive_frames_is_accepted_unchanged():
    stream = SceneStream(["apple", "apple"], size=(320, 320), seed=3)
    prev, prev_boxes = stream.next_frame()
    unchanged = 0
    for _ in range(5):
        rgb, truth = stream.next_frame()
        prop = tracking_proposal(prev, prev_boxes, rgb)
        unchanged += compare_boxes(prop.boxes, truth, 0.9).unchanged
        prev, prev_boxes = rgb, truth
    assert unchanged >= 4


def test_tracking_drops_objects_that_are_gone():
    a, a_boxes = SceneStream(["apple"], size=(160, 160), seed=0).next_frame()
    # a flat grey frame: nothing correlates with the apple
    blank = np.full_like(a, 128)
    prop = tracking_proposal(a, a_boxes, blank)
    assert prop.boxes == [] and prop.score == 0.0
    assert prop.detail["lost"] == 1


def test_tracking_refuses_other_image_size():
    a, a_boxes = SceneStream(["apple"], size=(160, 160), seed=0).next_frame()
    b, _ = SceneStream(["apple"], size=(200, 160), seed=0).next_frame()
    prop = tracking_proposal(a, a_boxes, b)
    assert prop.empty and "size" in prop.detail["reason"]


class _Detector:
    """A stand-in with OnnxDetector's detect() signature, for the filtering logic only."""

    def __init__(self, boxes):
        self.boxes = boxes
        self.calls = []

    def detect(self, rgb, score_threshold=None):
        self.calls.append(score_threshold)
        return list(self.boxes)


def test_model_proposal_keeps_project_labels_and_clips():
    rgb = np.zeros((100, 120, 3), np.uint8)
    det = _Detector([BBox("apple", 90, 10, 50, 20, 0.8), BBox("orange", 5, 5, 10, 10, 0.9), BBox("banana", 0, 0, 10, 10, 0.4)])
    prop = model_proposal(det, rgb, labels=["apple", "banana"], score_threshold=0.3, model_version=2)
    assert [b.label for b in prop.boxes] == ["apple", "banana"]
    assert prop.boxes[0].width == pytest.approx(30)  # clipped to the image
    assert prop.score == pytest.approx(0.6)
    assert prop.detail == {"model_version": 2}
    assert det.calls == [0.3]


def test_best_proposal_prefers_higher_score_and_tracking_on_tie():
    t = Proposal("tracking", [BBox("apple", 0, 0, 5, 5, 0.9)], 0.9)
    m = Proposal("model", [BBox("apple", 0, 0, 5, 5, 0.7)], 0.7)
    assert best_proposal({"tracking": t, "model": m}) == "tracking"
    assert best_proposal({"tracking": Proposal("tracking", [], 0.0), "model": m}) == "model"
    assert best_proposal({"tracking": Proposal("tracking", [], 0.0), "model": Proposal("model", [], 0.0)}) == "tracking"
    assert best_proposal({}) is None


def test_compare_boxes():
    a = BBox("apple", 10, 10, 40, 40)
    near = BBox("apple", 11, 10, 40, 40)
    far = BBox("apple", 30, 30, 40, 40)
    assert compare_boxes([], []).unchanged and compare_boxes([], []).mean_iou == 1.0
    c = compare_boxes([a], [near])
    assert c.unchanged and c.mean_iou == pytest.approx(iou(a, near))
    assert not compare_boxes([a], [far]).unchanged
    # same place, other label: not a match at all
    wrong = compare_boxes([a], [BBox("banana", 10, 10, 40, 40)])
    assert not wrong.unchanged and wrong.matched == 0 and wrong.mean_iou == 0.0
    # a missing box: not unchanged, mean IoU over the larger count
    two = compare_boxes([a], [a, BBox("apple", 100, 100, 20, 20)])
    assert not two.unchanged and two.mean_iou == pytest.approx(0.5)
    assert not compare_boxes([a], []).unchanged
