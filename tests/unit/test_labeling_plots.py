"""Notebook 03's figures: box labels readable in the sample grid, an assist chart without twin groups."""
from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from helpers.geometry import BBox
from helpers.labeling import plots
from helpers.labeling.proposals import compare_boxes
from helpers.labeling.records import LabelRecord
from helpers.sim.oracle import assist_report
from helpers.studio.base import Sample
from helpers.widgets import encode_jpeg

APPLE = BBox("apple", 200, 120, 40, 40)
BANANA = BBox("banana", 20, 2, 60, 30)  # touches the top: its tag goes inside the box


def sample(i: int, boxes: list[BBox]) -> Sample:
    return Sample(id=i, filename=f"s{i}.jpg", category="training", sha256=str(i), width=320, height=320,
                  boxes=boxes, labeled=True, device="pi-1")


def frame(i: int) -> bytes:
    rng = np.random.default_rng(i)
    return encode_jpeg(rng.integers(0, 255, (320, 320, 3), dtype=np.uint8))


def rendered_text(fig, text: str) -> list:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    return [(t, t.get_window_extent(renderer)) for ax in fig.axes for t in ax.findobj(Text) if t.get_text() == text]


def test_sample_grid_box_labels_are_readable_text():
    samples = [sample(i, [APPLE] if i % 2 else [APPLE, BANANA]) for i in range(1, 9)]
    fig = plots.sample_grid(samples, frame, n=8, cols=4)
    apples = rendered_text(fig, "apple")
    bananas = rendered_text(fig, "banana")
    assert len(apples) == 8 and len(bananas) == 4  # one tag per box
    # at the resolution the notebook's PNG has (100 dpi): a tag at least 9 px tall; the text
    # burnt into the 320 px frames before came out about 4 px tall in this grid
    fig.set_dpi(100)
    for _, extent in rendered_text(fig, "apple") + rendered_text(fig, "banana"):
        assert extent.height >= 9, extent
    (t, _), *_ = bananas
    assert t.get_va() == "top"  # a box at the top edge keeps its tag inside the image
    assert {t.get_va() for t, _ in apples} == {"bottom"}
    # the axes still show the whole image (the tags and frames do not widen it)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((-0.5, 319.5)) and ax.get_ylim() == pytest.approx((319.5, -0.5))
    fig.savefig(io.BytesIO(), format="png")


def record(i: int, saved: list[BBox], offered: str | None, proposals: dict[str, list[BBox]]) -> LabelRecord:
    comps = {src: compare_boxes(boxes, saved) for src, boxes in proposals.items()}
    return LabelRecord(i, "pi-1", "saved", offered, offered, len(saved), comps)


def ticks(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_xticklabels()]


def test_assist_chart_has_no_twin_groups_with_one_source():
    moved = BBox("apple", 210, 125, 40, 40)
    # tracking alone, offered on every frame: 'offered' and 'tracking' are the same records
    records = [record(1, [APPLE], None, {}), record(2, [APPLE], "tracking", {"tracking": [APPLE]}),
               record(3, [APPLE], "tracking", {"tracking": [moved]})]
    report = assist_report(records)
    assert report.row("offered").proposals == report.row("tracking").proposals == 2
    groups = plots.assist_groups(report)
    assert [tick for tick, _ in groups] == ["tracking, offered first\n(n=2)"]
    assert ticks(plots.assist_quality(report)) == ["tracking, offered first\n(n=2)"]


def test_assist_chart_keeps_offered_when_it_differs():
    moved = BBox("apple", 210, 125, 40, 40)
    # a scene change: tracking proposed on frame 3 but was not offered; frame 4 offered the model
    records = [record(2, [APPLE], "tracking", {"tracking": [APPLE]}),
               record(3, [APPLE], None, {"tracking": [moved]}),
               record(4, [APPLE], "model", {"tracking": [moved], "model": [APPLE]})]
    report = assist_report(records)
    groups = plots.assist_groups(report)
    assert [tick for tick, _ in groups] == ["offered first\n(n=2)", "tracking\n(n=3)", "model\n(n=1)"]
    offered, tracking, model = (r for _, r in groups)
    assert offered.share_unchanged == 1.0 and tracking.share_unchanged == pytest.approx(1 / 3)
    assert ticks(plots.assist_quality(report)) == [tick for tick, _ in groups]


def test_assist_chart_without_proposals_says_so():
    report = assist_report([record(1, [APPLE], None, {})])
    assert plots.assist_groups(report) == []
    fig = plots.assist_quality(report)
    assert any(t.get_text() == "no proposals were offered" for t in fig.axes[0].texts)
