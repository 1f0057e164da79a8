"""What the labeling queue hands out and keeps: the item in front of the labeler
(`QueueItem`), one record per handled sample (`LabelRecord`, what the assist-quality report
sums up) and the progress counts (`QueueProgress`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from helpers.labeling.proposals import BoxComparison, Proposal
from helpers.labeling.samples import sample_device, sample_frame_index


@dataclass
class QueueItem:
    """The sample in front of the labeler and its proposals.

    Attributes:
        sample: the studio sample (its metadata may hold ground truth: never display it).
        proposals: by source (`tracking`, `model`, `coco`, ...); a source is absent when it has nothing to
            offer (no previous labeled frame, no model).
        offered: the source offered first (the best score), None without proposals.
        position: 1-based position in the queue.
        total: queue length at the last refresh.
    """

    sample: Any
    proposals: dict[str, Proposal]
    offered: str | None
    position: int
    total: int

    @property
    def sample_id(self) -> int:
        return int(self.sample.id)

    @property
    def info(self) -> dict[str, Any]:
        """What a labeling UI may show about the sample (never the ground truth)."""
        return {
            "sample_id": self.sample_id,
            "filename": self.sample.filename,
            "device": sample_device(self.sample),
            "captured_at": self.sample.captured_at or self.sample.metadata.get("captured_at"),
            "frame_index": sample_frame_index(self.sample),
            "width": self.sample.width,
            "height": self.sample.height,
        }


@dataclass
class LabelRecord:
    """One handled sample: what was proposed, shown and saved (or that it was skipped/deleted).

    Attributes:
        sample_id: the studio sample id.
        device: the device it came from.
        action: `saved`, `skipped` or `deleted`.
        offered: the source offered first.
        shown: the source on screen when the labeler saved.
        boxes: number of boxes saved.
        comparisons: per available source, how its proposal compares with the saved boxes.
        saved_classes: boxes saved per class.
    """

    sample_id: int
    device: str
    action: str
    offered: str | None = None
    shown: str | None = None
    boxes: int = 0
    comparisons: dict[str, BoxComparison] = field(default_factory=dict)
    saved_classes: dict[str, int] = field(default_factory=dict)

    @property
    def accepted_unchanged(self) -> bool:
        """The proposal on screen was saved as proposed."""
        return (self.action == "saved" and self.shown != "saved" and self.shown in self.comparisons
                and self.comparisons[self.shown].unchanged)


@dataclass
class QueueProgress:
    """Counts for a progress line."""

    total: int
    handled: int
    saved: int
    accepted_unchanged: int
    skipped: int
    deleted: int
    remaining: int

    @property
    def text(self) -> str:
        """`37 of 120, 31 accepted unchanged` (+ skipped/deleted when there are any)."""
        parts = [f"{self.handled} of {self.total}", f"{self.accepted_unchanged} accepted unchanged"]
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        if self.deleted:
            parts.append(f"{self.deleted} deleted")
        return ", ".join(parts)
