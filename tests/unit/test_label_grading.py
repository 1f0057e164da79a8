"""Labels graded against the synthetic cameras' truth (helpers/sim/grading.py)."""
from __future__ import annotations

from helpers.geometry import BBox, boxes_to_dicts
from helpers.sim.grading import grade_frame, grade_samples
from helpers.studio.base import Sample

APPLE = BBox("apple", 10, 10, 40, 40)
ORANGE = BBox("orange", 100, 10, 40, 40)
LEMON = BBox("lemon", 10, 100, 30, 30)


def sample(sid: int, saved: list[BBox], truth: list[BBox] | None) -> Sample:
    meta = {} if truth is None else {"ground_truth": boxes_to_dicts(truth)}
    return Sample(sid, f"{sid}.jpg", "training", "0" * 64, 160, 160, boxes=saved, labeled=True, metadata=meta)


def test_each_kind_of_mistake_is_counted():
    right = grade_frame(1, [BBox("apple", 11, 9, 40, 41)], [APPLE, LEMON], ["apple"])
    assert right.ok and right.right == 1 and right.missed == []  # the lemon is not a project class: not missed
    orange_as_apple = grade_frame(2, [BBox("apple", 101, 11, 39, 40), BBox("apple", 10, 10, 40, 40)], [APPLE, ORANGE], ["apple"])
    assert orange_as_apple.right == 1 and orange_as_apple.wrong_class == [("apple", "orange")]
    assert orange_as_apple.describe() == "orange labeled apple"
    missed_and_extra = grade_frame(3, [BBox("apple", 120, 120, 20, 20)], [APPLE], ["apple"])
    assert missed_and_extra.missed == ["apple"] and missed_and_extra.extra == ["apple"] and missed_and_extra.right == 0
    assert missed_and_extra.describe() == "missed apple; extra apple box"


def test_same_class_is_matched_first():
    # the saved apple box overlaps the orange a little more, but an apple is right there too
    saved = [BBox("apple", 30, 10, 40, 40)]
    truth = [BBox("apple", 18, 10, 40, 40), BBox("orange", 32, 10, 40, 40)]
    g = grade_frame(4, saved, truth, ["apple"])
    assert g.right == 1 and g.wrong_class == [] and g.extra == []


def test_grade_of_a_queue_of_frames():
    samples = [sample(1, [APPLE], [APPLE]), sample(2, [APPLE, BBox("apple", 100, 10, 40, 40)], [APPLE, ORANGE]),
               sample(3, [], [APPLE]), sample(4, [APPLE], None)]
    g = grade_samples(samples, ["apple"])
    assert (g.right, g.wrong_class, g.missed, g.extra, g.ungraded) == (2, 1, 1, 0, 1)
    assert g.share_right == 0.5 and [f.sample_id for f in g.to_look_at] == [2, 3]
    assert g.confusions() == {("orange", "apple"): 1}
    text = g.summary()
    assert text.splitlines()[0] == ("3 labeled frames checked against the camera's truth: 2 boxes right, 1 of the "
                                    "wrong class, 1 missed, 0 extra (50.0% right)")
    assert "  1 orange box labeled apple" in text and "1 frames have no ground truth" in text
    assert text.endswith("2 frames to look at again")
    d = g.to_dict()
    assert d["to_look_at"] == [2, 3] and d["confusions"] == {"orange as apple": 1} and d["share_right"] == 0.5
    assert g.table()[0]["share right"] == "50.0%"
    assert grade_samples([], ["apple"]).summary().endswith("every frame is right")
