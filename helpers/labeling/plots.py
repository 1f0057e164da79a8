"""Dataset plots and the dataset overview for the label-review notebook.

Every plot function returns a `matplotlib.figure.Figure` (built without pyplot, so nothing
piles up in pyplot's global state; Jupyter displays a returned figure). The overview is a
list of dicts (no pandas), with an HTML and an ipywidgets rendering.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from helpers.geometry import BBox
from helpers.labeling.samples import decode_image, sample_device
from helpers.widgets import TAB10, html_table, label_color, show_figures_inline

show_figures_inline()


def _labels_in(samples: Sequence[Any], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        return list(labels)
    seen: list[str] = []
    for s in samples:
        for b in s.boxes:
            if b.label not in seen:
                seen.append(b.label)
    return sorted(seen)


def dataset_overview(samples: Iterable[Any]) -> list[dict[str, Any]]:
    """Samples per device, labeled or not, with box counts; a `total` row last.

    Args:
        samples: studio samples (`studio.samples()`).

    Returns:
        Rows `{"device", "samples", "labeled", "unlabeled", "training", "testing", "boxes",
        "empty"}`; `empty` counts labeled samples with no box.
    """
    rows: dict[str, dict[str, Any]] = {}
    for s in samples:
        dev = sample_device(s) or "(no device)"
        r = rows.setdefault(dev, {"device": dev, "samples": 0, "labeled": 0, "unlabeled": 0,
                                  "training": 0, "testing": 0, "boxes": 0, "empty": 0})
        r["samples"] += 1
        if s.labeled:
            r["labeled"] += 1
            r["boxes"] += len(s.boxes)
            r["empty"] += 0 if s.boxes else 1
        else:
            r["unlabeled"] += 1
        if s.category in ("training", "testing"):
            r[s.category] += 1
    out = [rows[k] for k in sorted(rows)]
    total = {"device": "total"}
    for key in ("samples", "labeled", "unlabeled", "training", "testing", "boxes", "empty"):
        total[key] = sum(r[key] for r in out)
    return out + [total]


def overview_html(rows: Sequence[dict[str, Any]]) -> str:
    """The overview rows as an HTML table."""
    return html_table(rows, caption="dataset by device")


def overview_widget(rows: Sequence[dict[str, Any]]):
    """The overview rows as an `ipywidgets.HTML`."""
    import ipywidgets as w

    return w.HTML(overview_html(rows))


def class_counts(samples: Sequence[Any], labels: Sequence[str] | None = None) -> Figure:
    """Bar chart of boxes per class, split into training and testing."""
    labels = _labels_in(samples, labels)
    counts = {cat: Counter(b.label for s in samples if s.labeled and s.category == cat for b in s.boxes)
              for cat in ("training", "testing")}
    fig = Figure(figsize=(max(4, 1.2 * len(labels) + 2), 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.38
    for i, (cat, color) in enumerate((("training", TAB10[0]), ("testing", TAB10[1]))):
        vals = [counts[cat].get(lab, 0) for lab in labels]
        bars = ax.bar(x + (i - 0.5) * width, vals, width, label=cat, color=color)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("boxes")
    ax.set_title("boxes per class")
    ax.legend(fontsize=8)
    return fig


def box_distributions(samples: Sequence[Any], labels: Sequence[str] | None = None) -> Figure:
    """Box sizes (width/height as a share of the image) and box centre positions, per class."""
    labels = _labels_in(samples, labels)
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax_w, ax_h, ax_pos = fig.subplots(1, 3)
    bins = np.linspace(0, 1, 21)
    for lab in labels:
        ws, hs, cx, cy = [], [], [], []
        for s in samples:
            if not s.labeled or not s.width or not s.height:
                continue
            for b in s.boxes:
                if b.label != lab:
                    continue
                ws.append(b.width / s.width)
                hs.append(b.height / s.height)
                cx.append((b.x + b.width / 2) / s.width)
                cy.append((b.y + b.height / 2) / s.height)
        color = label_color(lab, labels)
        ax_w.hist(ws, bins=bins, alpha=0.6, color=color, label=f"{lab} ({len(ws)})")
        ax_h.hist(hs, bins=bins, alpha=0.6, color=color, label=lab)
        ax_pos.scatter(cx, cy, s=8, alpha=0.6, color=color, label=lab)
    ax_w.set_title("box width / image width")
    ax_h.set_title("box height / image height")
    ax_pos.set_title("box centres")
    ax_pos.set_xlim(0, 1)
    ax_pos.set_ylim(1, 0)  # image coordinates: y grows downwards
    ax_pos.set_aspect("equal")
    if labels:
        ax_w.legend(fontsize=8)
    return fig


# Box labels in figures are matplotlib text in points: readable however small the image is drawn
# (text burnt into a 320 px frame shrank to ~4 px in a grid of four across).
BOX_LABEL_FONTSIZE = 9


def draw_labeled_boxes(ax: Any, boxes: Iterable[BBox], labels: Sequence[str], width: int, height: int) -> None:
    """Draw `boxes` on an axes showing a `width` x `height` image: a frame per box and its label
    on a tag in the label's colour, above the box (inside it when the box touches the top)."""
    from matplotlib.patches import Rectangle

    for b in boxes:
        color = label_color(b.label, labels)
        ax.add_patch(Rectangle((b.x, b.y), b.width, b.height, fill=False, edgecolor=color, linewidth=1.6))
        text = b.label if b.value is None else f"{b.label} {b.value:.2f}"
        inside = b.y < 0.12 * height
        ax.text(b.x, b.y, text, fontsize=BOX_LABEL_FONTSIZE, color="white", ha="left",
                va="top" if inside else "bottom", clip_on=True,
                bbox={"facecolor": color, "edgecolor": "none", "pad": 1.2, "alpha": 0.9})
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)


def sample_grid(samples: Sequence[Any], image_of: Callable[[int], bytes], n: int = 12, cols: int = 4,
                labels: Sequence[str] | None = None) -> Figure:
    """A grid of labeled samples with their saved boxes.

    Args:
        samples: studio samples; the first `n` labeled ones are shown.
        image_of: sample id -> image bytes (`studio.get_image`).
        n: how many to show.
        cols: grid columns.
        labels: class order for colours.
    """
    chosen = [s for s in samples if s.labeled][:n]
    labels = _labels_in(chosen, labels)
    rows = max(1, int(np.ceil(len(chosen) / cols)))
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, s in zip(axes, chosen):
        rgb = decode_image(image_of(s.id))
        ax.imshow(rgb)
        draw_labeled_boxes(ax, s.boxes, labels, rgb.shape[1], rgb.shape[0])
        ax.set_title(f"#{s.id} {sample_device(s)} ({len(s.boxes)})", fontsize=9)
    if not chosen:
        axes[0].text(0.5, 0.5, "no labeled samples yet", ha="center", va="center", transform=axes[0].transAxes)
    return fig


def assist_groups(report: Any) -> list[tuple[str, Any]]:
    """The groups the assist-quality chart draws: (tick label, `AssistRow`).

    One group per source that proposed (`tracking`, `model`, ...), and one for what was offered
    first, unless that is one source's group again: with a single source offered on every frame
    it proposed for (tracking alone, no scene change), `offered` and `tracking` are the same
    records, and the chart said so with two identical groups. Then that source's group says
    "offered first" instead.
    """
    rows = {r.source: r for r in report.rows}
    offered = rows.get("offered")
    sources = [r for r in report.rows if r.source != "offered" and r.proposals > 0]
    first = {k: v for k, v in getattr(report, "offered_by", {}).items() if k != "none" and v}
    same = None
    if offered is not None and len(first) == 1:
        (only,) = first
        # the offered records are a subset of that source's records; equal counts: the same ones
        same = next((r.source for r in sources if r.source == only and r.proposals == offered.proposals), None)
    groups = []
    if offered is not None and offered.proposals > 0 and same is None:
        groups.append((f"offered first\n(n={offered.proposals})", offered))
    for r in sources:
        tick = f"{r.source}, offered first\n(n={r.proposals})" if r.source == same else f"{r.source}\n(n={r.proposals})"
        groups.append((tick, r))
    return groups


def assist_quality(report: Any) -> Figure:
    """Bars of the assist report: share accepted unchanged and mean IoU, per group of `assist_groups`."""
    groups = assist_groups(report)
    x = np.arange(len(groups))
    width = 0.38
    fig = Figure(figsize=(max(4.0, 1.9 * len(groups) + 1.0), 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("labeling assist quality")
    ax.set_ylim(0, 1.3)  # room above the bars (all <= 1) for their values and the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    if not groups:
        ax.text(0.5, 0.5, "no proposals were offered", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        return fig
    b1 = ax.bar(x - width / 2, [r.share_unchanged for _, r in groups], width, label="accepted unchanged", color=TAB10[2])
    b2 = ax.bar(x + width / 2, [r.mean_iou for _, r in groups], width, label="mean IoU", color=TAB10[0])
    ax.bar_label(b1, fmt="%.2f", fontsize=8)
    ax.bar_label(b2, fmt="%.2f", fontsize=8)
    ax.set_xticks(x, [tick for tick, _ in groups])
    ax.set_xlim(-0.7, len(groups) - 0.3)  # one group keeps the bar width of several
    ax.legend(fontsize=8, loc="upper center", ncols=2, frameon=False)
    return fig


def boxes_of(samples: Iterable[Any]) -> list[BBox]:
    """Every saved box of the labeled samples (for custom plots)."""
    return [b for s in samples if s.labeled for b in s.boxes]


def dataset_figures(studio: Any, n: int = 8) -> list[Figure]:
    """The labeled dataset at a glance: class counts, box sizes and positions, a sample grid.

    Args:
        studio: the studio (`samples(labeled=True)` and `get_image` are called).
        n: images in the grid.
    """
    labeled = studio.samples(labeled=True)
    return [class_counts(labeled), box_distributions(labeled), sample_grid(labeled, studio.get_image, n=n)]


def waiting_message(queue: Any) -> str:
    """What a Run-All shows under the panel while a person is still labeling: what to rerun."""
    p = queue.progress()
    return (f"Waiting for labels: {len(queue)} of {p.total} images are still in the panel above "
            f"({p.saved} saved so far). Label them, then rerun this cell, or press "
            "'Show the dataset' at the end of the queue.")
