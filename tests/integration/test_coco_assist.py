"""COCO label assist through the real queue: the cached COCO NanoDet (real converted weights, run by
onnxruntime) proposes apples and bananas on a real local studio before any model of ours exists,
beside tracking; the assist report's coco row and per-class counts are checked by hand."""
from __future__ import annotations

import os

import pytest
from test_labeling_queue import upload_stream

from helpers.geometry import iou
from helpers.labeling.proposals import COCO_SOURCE, coco_assist_proposers
from helpers.labeling.queue import LabelQueue
from helpers.sim.oracle import OracleLabeler, assist_report, ground_truth
from helpers.train import pretrained

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def coco():
    try:
        pretrained.weights_info()
    except pretrained.WeightsMissing as e:
        if os.environ.get("CI"):
            raise  # CI runs `make weights` first: missing weights there are a failure
        pytest.skip(f"COCO weights not fetched here (run `make weights`): {e}")
    (proposer,) = coco_assist_proposers(True)
    return proposer


def kept_by_hand(proposed, saved, threshold=0.9):
    """Per class, proposed boxes with a same-class saved box at IoU >= threshold (greedy: at this
    threshold two proposals cannot share one saved box, so no assignment is needed)."""
    kept: dict[str, int] = {}
    free = list(saved)
    for p in proposed:
        hit = next((s for s in free if s.label == p.label and iou(p, s) >= threshold), None)
        if hit is not None:
            free.remove(hit)
            kept[p.label] = kept.get(p.label, 0) + 1
    return kept


def test_coco_proposes_known_classes_beside_tracking(cloud, coco, unique_name):
    studio = cloud.studio
    for label in ("apple", "banana", "lemon"):
        studio.add_label(label)
    dev = unique_name("cam")
    n = 6
    # an apple and a banana on the table, and a lemon (a class COCO does not have)
    upload_stream(studio, dev, n, objects=("apple", "banana"), distractors=("lemon",), seed=0, size=(320, 320))
    q = LabelQueue(studio, device=dev, model=None, proposers=[coco])

    # frame 1: nothing to track yet, no model: the COCO model's boxes are offered, named as such
    first = q.current()
    assert set(first.proposals) == {COCO_SOURCE} and first.offered == COCO_SOURCE
    prop = first.proposals[COCO_SOURCE]
    assert prop.origin().startswith("COCO model (nanodet-g-coco 3.0.4") and prop.describe().startswith("COCO model")
    assert prop.detail["classes"] == ["apple", "banana"]  # lemon: COCO does not know it, never proposed
    assert prop.boxes and {b.label for b in prop.boxes} <= {"apple", "banana"}
    truth = ground_truth(first.sample)
    # the banana before any banana model exists: COCO's banana box sits on the drawn banana
    (true_banana,) = [t for t in truth if t.label == "banana"]
    assert max(iou(b, true_banana) for b in prop.boxes if b.label == "banana") >= 0.9
    # the panel lists it by origin and confidence, on screen (bold), each box with its score
    from helpers.labeling.panel import LabelPanel

    offer = LabelPanel(q).offer.value
    assert offer.startswith("<b>▶ COCO model (nanodet-g-coco 3.0.4") and "banana 0." in offer
    accepted = list(prop.boxes)
    q.save()  # accepted as proposed
    assert q.records[-1].accepted_unchanged and q.records[-1].shown == COCO_SOURCE

    # frames 2..n: the oracle saves the truth; tracking is offered while it is trusted (its
    # correlation, >= 0.85 when not warned, is above the COCO model's confidence here)
    expected_proposed: dict[str, int] = {}
    expected_kept: dict[str, int] = {b.label: 0 for b in accepted}
    for b in accepted:
        expected_proposed[b.label] = expected_proposed.get(b.label, 0) + 1
        expected_kept[b.label] += 1
    frames_unchanged = 1
    oracle = OracleLabeler(q, labels=["apple", "banana"])
    while (item := q.current()) is not None:
        assert COCO_SOURCE in item.proposals and "tracking" in item.proposals
        tracked, proposed = item.proposals["tracking"], item.proposals[COCO_SOURCE]
        if not tracked.warning and not tracked.empty:
            assert item.offered == "tracking" and tracked.score > proposed.score
        saved = [t for t in ground_truth(item.sample) if t.label in ("apple", "banana")]
        for b in proposed.boxes:
            expected_proposed[b.label] = expected_proposed.get(b.label, 0) + 1
        for label, k in kept_by_hand(proposed.boxes, saved).items():
            expected_kept[label] = expected_kept.get(label, 0) + k
        frames_unchanged += len(proposed.boxes) == len(saved) == sum(kept_by_hand(proposed.boxes, saved).values())
        oracle.label_one()

    report = assist_report(q.records)
    assert [r.source for r in report.rows] == ["offered", "tracking", "model", "coco"]
    row = report.row(COCO_SOURCE)
    assert row.proposals == n and row.accepted_unchanged == frames_unchanged
    assert report.row("tracking").proposals == n - 1 and report.row("model").proposals == 0
    for label in ("apple", "banana"):
        c = report.class_row(COCO_SOURCE, label)
        assert (c.proposed, c.accepted_unchanged) == (expected_proposed.get(label, 0), expected_kept.get(label, 0)), label
    assert report.class_row(COCO_SOURCE, "banana").accepted_unchanged >= n - 1  # the drawn banana, frame after frame
    assert "coco" in report.summary() and f"{n} proposals" in report.summary()
    print(report.summary())
