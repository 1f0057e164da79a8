"""The gate's noise bound: paired bootstrap over held-out images (pure, no models)."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.deploy.gate import compare_reports
from helpers.geometry import BBox
from helpers.train.evaluate import ClassMetrics, EvalReport, coco_map, detection_counts
from helpers.train.paired import average_precision, delta_bounds, image_outcomes

LABELS = ["apple", "banana"]


def _scene(rng, n_images=30):
    """Held-out truth: one or two fruits per image."""
    gts = []
    for _ in range(n_images):
        boxes = []
        for k in range(int(rng.integers(1, 3))):
            x = 10 + 70 * k + int(rng.integers(0, 10))
            boxes.append(BBox(LABELS[int(rng.integers(0, 2))], x, 20, 40, 40))
        gts.append(boxes)
    return gts


def _detections(gts, miss, rng, extra=0):
    """Each true box found with a score (unless its (image, box) is in `miss`), plus `extra` false alarms."""
    preds = []
    for i, gt in enumerate(gts):
        p = [BBox(b.label, b.x + 1, b.y, b.width, b.height, float(rng.uniform(0.55, 0.99)))
             for k, b in enumerate(gt) if (i, k) not in miss]
        if i < extra:
            p.append(BBox("apple", 150, 60, 30, 30, float(rng.uniform(0.5, 0.9))))
        preds.append(p)
    return preds


def _apples(gts):
    return [(i, k) for i, gt in enumerate(gts) for k, b in enumerate(gt) if b.label == "apple"]


def test_outcomes_sum_to_the_evaluation_counts():
    rng = np.random.default_rng(1)
    gts = _scene(rng)
    preds = _detections(gts, set(_apples(gts)[:4]), rng, extra=3)
    out = image_outcomes(gts, preds, preds, LABELS)
    per, overall = detection_counts(gts, preds, LABELS)
    for c, name in enumerate(LABELS):
        assert tuple(out.counts[:, c].sum(axis=0)) == (per[name].tp, per[name].fp, per[name].fn)
        assert out.support[:, c].sum() == per[name].support
    assert tuple(out.counts.sum(axis=(0, 1))) == (overall.tp, overall.fp, overall.fn)


def test_average_precision_is_pycocotools_ap50():
    rng = np.random.default_rng(2)
    gts = _scene(rng, 40)
    miss = set(_apples(gts)[::3])
    preds = _detections(gts, miss, rng, extra=12)
    _, _, per = coco_map(gts, preds, LABELS, [(200, 100)] * len(gts))
    out = image_outcomes(gts, preds, preds, LABELS)
    for c, name in enumerate(LABELS):
        scores = np.concatenate([out.scored[i][c][0] for i in range(len(gts))])
        hits = np.concatenate([out.scored[i][c][1] for i in range(len(gts))])
        assert average_precision(scores, hits, int(out.support[:, c].sum())) == pytest.approx(per[name][0], abs=1e-6)


def test_two_flipped_boxes_are_noise_a_lost_class_is_not():
    rng = np.random.default_rng(3)
    gts = _scene(rng, 30)
    apples = _apples(gts)
    production = _detections(gts, {apples[0]}, rng)
    noisy = _detections(gts, set(apples[1:4]), rng)  # two more apples missed: ~7 points of recall
    broken = _detections(gts, set(apples[: len(apples) // 2]), rng)  # half the apples missed
    outcomes = {k: image_outcomes(gts, p, p, LABELS) for k, p in
                {"production": production, "noisy": noisy, "broken": broken}.items()}
    recall = {k: detection_counts(gts, p, LABELS)[0]["apple"].recall for k, p in
              {"production": production, "noisy": noisy, "broken": broken}.items()}
    assert recall["production"] - recall["noisy"] > 0.05  # beyond the default tolerance as measured

    noisy_bounds = delta_bounds(outcomes["production"], outcomes["noisy"], ["apple"], ["recall", "f1", "ap50"])
    broken_bounds = delta_bounds(outcomes["production"], outcomes["broken"], ["apple"], ["recall", "f1", "ap50"])
    assert noisy_bounds[("apple", "recall")] >= 0
    assert broken_bounds[("apple", "recall")] < -0.2 and broken_bounds[("apple", "f1")] < 0
    assert broken_bounds[("apple", "ap50")] < 0 and ("overall", "ap50") not in broken_bounds
    same = delta_bounds(outcomes["production"], outcomes["production"], ["apple"], ["recall"])
    assert same == {("apple", "recall"): 0.0, ("overall", "recall"): 0.0}
    # the same seed gives the same bounds: the gate's verdict is reproducible
    assert delta_bounds(outcomes["production"], outcomes["noisy"], ["apple"], ["recall", "f1", "ap50"]) == noisy_bounds


def test_bound_decides_only_drops_beyond_tolerance():
    def report(recall):
        m = ClassMetrics(precision=0.95, recall=recall, f1=0.9, support=27)
        return EvalReport(labels=["apple"], images=30, iou_threshold=0.5, score_threshold=0.5,
                          per_class={"apple": m}, overall=m, map50=None, map=None, confusion={"names": [], "matrix": []})

    prod, cand = report(0.963), report(0.889)
    measured = {(r.label, r.metric): r.regressed for r in compare_reports(prod, cand)}
    assert measured[("apple", "recall")]  # without a bound: every drop beyond tolerance
    noise = {("apple", "recall"): 0.02, ("overall", "recall"): 0.02}
    rows = {(r.label, r.metric): r for r in compare_reports(prod, cand, upper=noise)}
    assert not rows[("apple", "recall")].regressed and rows[("apple", "recall")].upper == 0.02
    sure = {("apple", "recall"): -0.01}
    assert {(r.label, r.metric): r.regressed for r in compare_reports(prod, cand, upper=sure)}[("apple", "recall")]
    from helpers.deploy.gate import GateResult

    noisy = GateResult(2, 1, list(rows.values()), 0.05, passed=True, confidence=0.9)
    assert "apple recall: 0.963 -> 0.889, beyond tolerance but within the held-out set's noise (upper bound +0.020)" \
        in noisy.summary()
    small = {("apple", "recall"): -0.5}  # sure, but within tolerance: not a regression
    assert not any(r.regressed for r in compare_reports(prod, report(0.95), upper=small))


def test_bad_input_is_named():
    rng = np.random.default_rng(4)
    gts = _scene(rng, 5)
    a = image_outcomes(gts, gts, gts, LABELS)
    b = image_outcomes(gts[:4], gts[:4], gts[:4], LABELS)
    with pytest.raises(ValueError, match="same held-out set"):
        delta_bounds(a, b, ["apple"], ["recall"])
    with pytest.raises(ValueError, match="confidence"):
        delta_bounds(a, a, ["apple"], ["recall"], confidence=1.5)
    with pytest.raises(ValueError, match="pear"):
        delta_bounds(a, a, ["pear"], ["recall"])
    with pytest.raises(ValueError, match="prediction lists"):
        image_outcomes(gts, gts[:2], gts, LABELS)
