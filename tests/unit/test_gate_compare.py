"""The gate's comparison of two evaluation reports (pure)."""
from __future__ import annotations

import pytest

from helpers.deploy.gate import compare_reports, regression_text
from helpers.errors import DatasetError
from helpers.train.evaluate import ClassMetrics, EvalReport


def _report(labels, per, overall):
    return EvalReport(labels=labels, images=10, iou_threshold=0.5, score_threshold=0.5,
                      per_class={k: ClassMetrics(**v) for k, v in per.items()}, overall=ClassMetrics(**overall),
                      map50=None, map=None, confusion={"names": [], "matrix": []})


def test_compare_flags_only_drops_beyond_tolerance():
    prod = _report(["apple"], {"apple": dict(precision=0.9, recall=0.8, f1=0.85, ap50=0.8, support=20)},
                   dict(precision=0.9, recall=0.8, f1=0.85, support=20))
    cand = _report(["apple", "banana"],
                   {"apple": dict(precision=0.89, recall=0.6, f1=0.7, ap50=0.81, support=20),
                    "banana": dict(precision=0.5, recall=0.5, f1=0.5, ap50=0.4, support=10)},
                   dict(precision=0.9, recall=0.79, f1=0.84, support=30))
    rows = compare_reports(prod, cand, tolerance=0.02)
    regressed = {(r.label, r.metric) for r in rows if r.regressed}
    assert regressed == {("apple", "recall"), ("apple", "f1")}
    assert not any(r.label == "banana" for r in rows)  # new classes are not held to anything
    overall_ap = [r for r in rows if r.label == "overall" and r.metric == "ap50"]
    assert overall_ap == []  # not measured overall: skipped
    text = regression_text([r for r in rows if r.regressed])
    assert "apple" in text and "-0.200" in text


def test_compare_needs_production_classes_in_heldout():
    prod = _report(["apple"], {"apple": dict(support=0)}, dict(support=0))
    with pytest.raises(DatasetError, match="no 'apple' box"):
        compare_reports(prod, prod)
