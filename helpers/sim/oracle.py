"""The oracle labeler: plays the human in headless runs, and the assist-quality report.

In papermill runs and tests nobody clicks Save. The oracle walks the same `LabelQueue` a person
would, looks at the proposal the queue offers first, and saves the synthetic ground truth the
camera recorded in the sample's metadata (`ground_truth`). Because every save goes through
`LabelQueue.save`, the queue records how far each proposal was from the truth; `assist_report`
turns those records into the figures the notebook shows: the share of proposals a labeler could
accept unchanged and their mean IoU, by source (tracking, model, coco, ...) and for what was
offered first, and per class how many boxes each source proposed and how many were kept as
proposed.

With real camera images there is no ground truth: the oracle refuses (DatasetError) instead of
inventing labels.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm

from helpers.errors import DatasetError
from helpers.geometry import BBox
from helpers.labeling.proposals import SOURCES
from helpers.labeling.queue import LabelQueue
from helpers.labeling.records import LabelRecord, QueueItem

GROUND_TRUTH_KEY = "ground_truth"
# Report rows always listed (in this order); other sources follow, sorted by name. `saved` (the
# labeler's own boxes shown again after an undo) is not a proposal source.
REPORT_ROWS = ("offered", *SOURCES)
NOT_A_SOURCE = ("saved",)


def ground_truth(sample: Any) -> list[BBox] | None:
    """The synthetic ground truth boxes of a sample, or None when it has none (a real image).

    Raises:
        DatasetError: the metadata holds something that is not a list of box dicts.
    """
    raw = (sample.metadata or {}).get(GROUND_TRUTH_KEY)
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DatasetError(f"sample {sample.id}: metadata ground_truth is not JSON ({e.msg})") from None
    if not isinstance(raw, list):
        raise DatasetError(f"sample {sample.id}: metadata ground_truth must be a list of boxes, got {type(raw).__name__}")
    try:
        return [b if isinstance(b, BBox) else BBox.from_dict(b) for b in raw]
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"sample {sample.id}: a ground_truth box is malformed ({e}); expected label, x, y, width, height") from None


@dataclass
class AssistRow:
    """Assist quality of one proposal source.

    Attributes:
        source: `offered` (whatever was offered first), `tracking`, `model`, `coco`, or another
            proposer's name.
        proposals: saved samples that had a proposal from this source.
        accepted_unchanged: of those, proposals equal to the saved boxes (same count, same
            labels, IoU >= the threshold each).
        share_unchanged: accepted_unchanged / proposals (0.0 without proposals).
        mean_iou: mean proposal-vs-saved IoU (see `helpers.labeling.proposals.compare_boxes`).
    """

    source: str
    proposals: int
    accepted_unchanged: int
    share_unchanged: float
    mean_iou: float


@dataclass
class AssistClassRow:
    """Box-level assist quality of one source for one class.

    Attributes:
        source: as in `AssistRow`.
        label: the class.
        proposed: boxes of this class the source proposed (on saved samples).
        accepted_unchanged: of those, boxes matched by a saved box of the same class with IoU
            >= the queue's threshold (kept as proposed).
        share_unchanged: accepted_unchanged / proposed (0.0 without proposed boxes).
        saved: boxes of this class saved on the samples this source proposed for
            (accepted_unchanged / saved: the share of the labeler's boxes it got right).
    """

    source: str
    label: str
    proposed: int
    accepted_unchanged: int
    share_unchanged: float
    saved: int = 0


@dataclass
class AssistReport:
    """How much the proposals saved the labeler, from a queue's records.

    Attributes:
        rows: one `AssistRow` for `offered`, `tracking`, `model`, `coco` (in that order), then
            one per other source that proposed, by name.
        saved: samples saved; skipped; deleted: counts of the other actions.
        boxes: boxes saved in total.
        empty_frames: samples saved with no box.
        offered_by: how often each source was offered first.
        classes: per row with proposals and per class (sorted), the box-level counts.
        saved_by_class: boxes saved per class.
    """

    rows: list[AssistRow]
    saved: int
    skipped: int
    deleted: int
    boxes: int
    empty_frames: int
    offered_by: dict[str, int] = field(default_factory=dict)
    classes: list[AssistClassRow] = field(default_factory=list)
    saved_by_class: dict[str, int] = field(default_factory=dict)

    def row(self, source: str) -> AssistRow:
        """The row of `source` (`offered`, `tracking`, `model`, `coco`, ...)."""
        for r in self.rows:
            if r.source == source:
                return r
        raise KeyError(f"no assist row {source!r}; rows: {[r.source for r in self.rows]}")

    def class_row(self, source: str, label: str) -> AssistClassRow:
        """The box-level counts of `source` for class `label`.

        Raises:
            KeyError: no such row (the source proposed nothing, or the class never occurred).
        """
        for r in self.classes:
            if r.source == source and r.label == label:
                return r
        have = sorted({r.source for r in self.classes}), sorted({r.label for r in self.classes})
        raise KeyError(f"no assist class row ({source!r}, {label!r}); sources {have[0]}, classes {have[1]}")

    def source_figures(self, source: str) -> dict[str, Any]:
        """One source's row and per-class rows as plain data (e.g. the COCO model's, for a results file)."""
        return {**asdict(self.row(source)),
                "classes": {c.label: {k: v for k, v in asdict(c).items() if k not in ("source", "label")}
                            for c in self.classes if c.source == source}}

    def table(self) -> list[dict[str, Any]]:
        """Rows as dicts (for display, JSON and the results file)."""
        return [asdict(r) for r in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able data."""
        d = asdict(self)
        d["rows"] = self.table()
        return d

    def summary(self) -> str:
        """A few deterministic lines for a notebook output."""
        lines = [f"saved {self.saved} samples ({self.boxes} boxes, {self.empty_frames} empty), "
                 f"skipped {self.skipped}, deleted {self.deleted}"]
        for r in self.rows:
            lines.append(f"{r.source:>8}: {r.proposals:4d} proposals, {r.share_unchanged:6.1%} accepted unchanged, "
                         f"mean IoU {r.mean_iou:.3f}")
        if self.classes:
            lines.append("boxes accepted unchanged / proposed, per class:")
            for label in sorted({c.label for c in self.classes}):
                parts = [f"{c.source} {c.accepted_unchanged}/{c.proposed}"
                         + (f" ({c.share_unchanged:.0%})" if c.proposed else "")
                         for c in self.classes if c.label == label]
                lines.append(f"{label:>8}: {self.saved_by_class.get(label, 0)} saved; " + ", ".join(parts))
        return "\n".join(lines)


def assist_report(records: Iterable[LabelRecord]) -> AssistReport:
    """Sum up a queue's records (`LabelQueue.records`) into an `AssistReport`."""
    records = list(records)
    saved = [r for r in records if r.action == "saved"]
    seen = {src for r in saved for src in r.comparisons} - set(REPORT_ROWS) - set(NOT_A_SOURCE)
    rows, classes = [], []
    saved_by_class: Counter[str] = Counter()
    for r in saved:
        saved_by_class.update(r.saved_classes)
    for source in (*REPORT_ROWS, *sorted(seen)):
        comps = []
        for r in saved:
            key = r.offered if source == "offered" else source
            if key is not None and key in r.comparisons:
                comps.append(r.comparisons[key])
        n = len(comps)
        unchanged = sum(1 for c in comps if c.unchanged)
        rows.append(AssistRow(
            source, n, unchanged, unchanged / n if n else 0.0,
            sum(c.mean_iou for c in comps) / n if n else 0.0,
        ))
        if not n:
            continue
        proposed, kept, truth = Counter(), Counter(), Counter()
        for c in comps:
            proposed.update(c.proposed_by_class)
            kept.update(c.unchanged_by_class)
            truth.update(c.saved_by_class)
        for label in sorted(set(proposed) | set(truth) | set(saved_by_class)):
            p, k = proposed[label], kept[label]
            classes.append(AssistClassRow(source, label, p, k, k / p if p else 0.0, truth[label]))
    offered_by: dict[str, int] = {}
    for r in saved:
        offered_by[r.offered or "none"] = offered_by.get(r.offered or "none", 0) + 1
    return AssistReport(
        rows=rows,
        saved=len(saved),
        skipped=sum(1 for r in records if r.action == "skipped"),
        deleted=sum(1 for r in records if r.action == "deleted"),
        boxes=sum(r.boxes for r in saved),
        empty_frames=sum(1 for r in saved if r.boxes == 0),
        offered_by=offered_by,
        classes=classes,
        saved_by_class=dict(sorted(saved_by_class.items())),
    )


class OracleLabeler:
    """Plays the human on a `LabelQueue` from the synthetic ground truth.

    Args:
        queue: the queue to work through.
        labels: the classes the "human" labels (default: the project's label set at each
            save); ground-truth boxes of other classes (distractors, a class not added yet)
            are left out, as a person labeling only those classes would.

    Example:
        >>> report = OracleLabeler(LabelQueue(studio)).run()
        >>> print(report.summary())
    """

    def __init__(self, queue: LabelQueue, labels: Sequence[str] | None = None):
        self.queue = queue
        self.labels = list(labels) if labels is not None else None

    def check(self) -> int:
        """Make sure every sample ahead has ground truth; returns how many there are.

        Raises:
            DatasetError: a sample has no synthetic ground truth (a real camera image).
        """
        pending = self.queue.pending()
        missing = [s for s in pending if ground_truth(s) is None]
        if missing:
            ids = ", ".join(str(s.id) for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DatasetError(
                f"{len(missing)} of {len(pending)} samples have no synthetic ground truth (e.g. sample(s) {ids}): "
                "the oracle labeler only plays the human on synthetic camera data. Label real images in the "
                "panel (helpers.labeling.panel.LabelPanel) or import labels (helpers.datasets.import_dataset)."
            )
        return len(pending)

    def label_one(self) -> QueueItem | None:
        """Save the ground truth of the current sample (as offered first) and move on.

        Returns:
            The next item, or None when the queue is done.
        """
        item = self.queue.current()
        if item is None:
            return None
        truth = ground_truth(item.sample)
        if truth is None:
            raise DatasetError(
                f"sample {item.sample_id} has no synthetic ground truth: label it in the panel "
                "(helpers.labeling.panel.LabelPanel) or import labels (helpers.datasets.import_dataset)"
            )
        keep = set(self.labels if self.labels is not None else self.queue.labels)
        boxes = [BBox(b.label, b.x, b.y, b.width, b.height) for b in truth if b.label in keep]
        return self.queue.save(boxes, source=item.offered)

    def run(self, limit: int | None = None, progress: bool = True) -> AssistReport:
        """Label the whole queue (or `limit` samples) and report the assist quality.

        Raises:
            DatasetError: before labeling anything, when a sample has no ground truth.
        """
        total = self.check()
        n = total if limit is None else min(int(limit), total)
        start = len(self.queue.records)
        for _ in tqdm(range(n), desc="oracle labeling", disable=not progress):
            if self.label_one() is None:
                break
        return assist_report(self.queue.records[start:])
