"""The assist report's rows and per-class box counts, and switching the COCO label assist on/off."""
from __future__ import annotations

import os

import pytest

from helpers.geometry import BBox
from helpers.labeling import plots
from helpers.labeling.proposals import CocoProposer, coco_assist_proposers, compare_boxes
from helpers.labeling.records import LabelRecord
from helpers.sim.oracle import assist_report
from helpers.train import pretrained

APPLE = BBox("apple", 100, 100, 40, 40)
APPLE2 = BBox("apple", 200, 40, 50, 50)
BANANA = BBox("banana", 10, 10, 80, 30)


def shifted(b: BBox, dx: float) -> BBox:
    return BBox(b.label, b.x + dx, b.y, b.width, b.height, value=0.5)


def record(i: int, saved: list[BBox], offered: str | None, proposals: dict[str, list[BBox]],
           action: str = "saved") -> LabelRecord:
    comps = {src: compare_boxes(boxes, saved, 0.9) for src, boxes in proposals.items()}
    counts: dict[str, int] = {}
    for b in saved:
        counts[b.label] = counts.get(b.label, 0) + 1
    return LabelRecord(i, "cam", action, offered, offered, len(saved), comps if action == "saved" else {}, counts)


def test_compare_boxes_counts_kept_boxes_per_class():
    # apple exact (IoU 1), second apple moved 2 px (IoU 48/52 = 0.92), banana moved 8 px (IoU 72/88 = 0.82)
    c = compare_boxes([APPLE, shifted(APPLE2, 2), shifted(BANANA, 8)], [APPLE, APPLE2, BANANA], 0.9)
    assert not c.unchanged and c.matched == 3
    assert c.proposed_by_class == {"apple": 2, "banana": 1} and c.saved_by_class == {"apple": 2, "banana": 1}
    assert c.unchanged_by_class == {"apple": 2}
    # a box of the wrong class never counts, even on the exact spot
    wrong = compare_boxes([BBox("banana", APPLE.x, APPLE.y, APPLE.width, APPLE.height)], [APPLE])
    assert wrong.unchanged_by_class == {} and wrong.proposed_by_class == {"banana": 1} and wrong.matched == 0
    # at a looser threshold the 0.82 banana is kept
    assert compare_boxes([shifted(BANANA, 8)], [BANANA], 0.8).unchanged_by_class == {"banana": 1}
    assert compare_boxes([], []).unchanged and compare_boxes([], [APPLE]).saved_by_class == {"apple": 1}


def test_report_rows_for_every_source_and_per_class_counts():
    records = [
        # 1: nothing to track yet; coco offered, both boxes right
        record(1, [APPLE, BANANA], "coco", {"coco": [shifted(APPLE, 1), shifted(BANANA, 2)]}),
        # 2: tracking right; coco finds the apple loosely (IoU 0.67) and misses the banana
        record(2, [APPLE, BANANA], "tracking",
               {"tracking": [APPLE, BANANA], "coco": [shifted(APPLE, 8)]}),
        # 3: tracking right, coco calls the banana an apple; a plugged-in source says nothing
        record(3, [APPLE, BANANA], "tracking",
               {"tracking": [APPLE, BANANA], "coco": [APPLE, BBox("apple", 10, 10, 80, 30)], "assist": []}),
        # 4: after an undo: the labeler's own boxes are shown again; not a proposal source
        record(4, [APPLE2], "tracking", {"tracking": [shifted(APPLE2, 20)], "saved": [APPLE2]}),
        record(5, [], None, {}, action="skipped"),
    ]
    report = assist_report(records)
    assert [r.source for r in report.rows] == ["offered", "tracking", "model", "coco", "assist"]
    coco = report.row("coco")
    assert (coco.proposals, coco.accepted_unchanged) == (3, 1) and coco.share_unchanged == pytest.approx(1 / 3)
    assert report.row("model").proposals == 0 and report.row("tracking").accepted_unchanged == 2
    assert report.row("offered").proposals == 4 and report.row("offered").accepted_unchanged == 3
    assert report.saved == 4 and report.skipped == 1 and report.saved_by_class == {"apple": 4, "banana": 3}

    # coco, box level: apples 1 + 1 + 2 proposed, kept on frame 1 and frame 3 (the real apple);
    # bananas 1 proposed, kept on frame 1
    apple, banana = report.class_row("coco", "apple"), report.class_row("coco", "banana")
    assert (apple.proposed, apple.accepted_unchanged, apple.saved) == (4, 2, 3)
    assert apple.share_unchanged == pytest.approx(0.5)
    assert (banana.proposed, banana.accepted_unchanged, banana.saved) == (1, 1, 3)
    t_apple = report.class_row("tracking", "apple")
    assert (t_apple.proposed, t_apple.accepted_unchanged, t_apple.saved) == (3, 2, 3)
    # a source that proposed nothing of a saved class still has its row (0 of 0)
    a = report.class_row("assist", "banana")
    assert (a.proposed, a.accepted_unchanged, a.share_unchanged, a.saved) == (0, 0, 0.0, 1)
    with pytest.raises(KeyError, match="model"):
        report.class_row("model", "apple")  # no model proposals at all: no rows
    with pytest.raises(KeyError, match="rows"):
        report.row("saved")

    d = report.to_dict()
    assert [r["source"] for r in d["rows"]] == ["offered", "tracking", "model", "coco", "assist"]
    assert {"source": "coco", "label": "apple", "proposed": 4, "accepted_unchanged": 2, "share_unchanged": 0.5,
            "saved": 3} in d["classes"]
    text = report.summary()
    assert text == assist_report(list(records)).summary()  # deterministic
    lines = text.splitlines()
    assert lines[4].strip().startswith("coco:    3 proposals,  33.3% accepted unchanged")
    assert lines[6] == "boxes accepted unchanged / proposed, per class:"
    assert lines[7] == "   apple: 4 saved; offered 3/4 (75%), tracking 2/3 (67%), coco 2/4 (50%), assist 0/0"
    assert lines[8] == "  banana: 3 saved; offered 3/3 (100%), tracking 2/2 (100%), coco 1/1 (100%), assist 0/0"


def test_assist_chart_draws_the_coco_group():
    records = [record(1, [APPLE], "coco", {"coco": [APPLE]}),
               record(2, [APPLE], "tracking", {"tracking": [APPLE], "coco": [shifted(APPLE, 8)]})]
    report = assist_report(records)
    ticks = [tick for tick, _ in plots.assist_groups(report)]
    assert ticks == ["offered first\n(n=2)", "tracking\n(n=1)", "coco\n(n=2)"]
    fig = plots.assist_quality(report)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ticks


def test_coco_assist_off_or_missing_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGELOOP_CACHE", str(tmp_path / "empty-cache"))
    assert coco_assist_proposers(False) == []
    assert capsys.readouterr().out == ""
    assert coco_assist_proposers("auto") == []
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("COCO label assist off:") and "make weights" in out
    with pytest.raises(pretrained.WeightsMissing, match="make weights"):
        coco_assist_proposers(True)
    with pytest.raises(pretrained.WeightsMissing, match="make weights"):
        coco_assist_proposers(True, cache=tmp_path / "other")
    for bad in ("yes", "on", 1, None):
        with pytest.raises(ValueError, match="'auto', True or False"):
            coco_assist_proposers(bad)


def test_coco_assist_with_cached_weights(capsys):
    try:
        info = pretrained.weights_info()
    except pretrained.WeightsMissing as e:
        if os.environ.get("CI"):
            raise  # CI runs `make weights` first
        pytest.skip(f"COCO weights not fetched here (run `make weights`): {e}")
    for enabled in ("auto", True):
        (proposer,) = coco_assist_proposers(enabled, score_threshold=0.3)
        assert isinstance(proposer, CocoProposer) and proposer.score_threshold == 0.3
        assert proposer.weights == f"{info['name']} {info['version']}"
        assert {"apple", "banana", "orange"} <= proposer.known and "lemon" not in proposer.known
    assert capsys.readouterr().out == ""


def test_source_figures_for_a_results_file():
    records = [record(1, [APPLE, BANANA], "coco", {"coco": [APPLE, shifted(BANANA, 8)]})]
    figures = assist_report(records).source_figures("coco")
    assert figures == {"source": "coco", "proposals": 1, "accepted_unchanged": 0, "share_unchanged": 0.0,
                       "mean_iou": pytest.approx((1 + 72 / 88) / 2),
                       "classes": {"apple": {"proposed": 1, "accepted_unchanged": 1, "share_unchanged": 1.0, "saved": 1},
                                   "banana": {"proposed": 1, "accepted_unchanged": 0, "share_unchanged": 0.0, "saved": 1}}}
    assert assist_report([]).source_figures("coco")["classes"] == {}
