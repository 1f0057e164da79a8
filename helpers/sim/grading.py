"""Labels graded against the truth: what the synthetic cameras knew was in each frame.

A person labeling with Enter alone accepts whatever the proposal said; when the COCO model called
an orange an apple and tracking carried that box on, the dataset says "apple" where an orange
was. The simulated cameras recorded what was really there (`ground_truth` in each sample's
metadata, never shown while labeling), so after the queue each saved frame can be graded:

- **right**: a saved box on a true object of the same class (IoU >= `min_iou`);
- **wrong class**: a saved box on a true object of another class (an orange labeled `apple`,
  also when that class is not in the project: it should not have been boxed as an apple);
- **missed**: a true object of a project class with no saved box on it;
- **extra**: a saved box on nothing that was there.

Objects of classes outside the project's label set that nobody boxed are not "missed": a person
labeling apples leaves the lemon alone. Frames without ground truth (a real camera) are counted
as ungraded, never guessed.
"""
from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from helpers.geometry import BBox, iou
from helpers.sim.oracle import ground_truth
from helpers.widgets import draw_boxes, encode_jpeg, html_table

MIN_IOU = 0.5


@dataclass
class FrameGrade:
    """One saved frame against its truth.

    Attributes:
        sample_id: the studio sample.
        right: saved boxes on a true object of their class.
        wrong_class: (saved label, true label) for each box on an object of another class.
        missed: true labels of the project's classes with no saved box.
        extra: labels of saved boxes on nothing.
    """

    sample_id: int
    right: int = 0
    wrong_class: list[tuple[str, str]] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.wrong_class or self.missed or self.extra)

    def describe(self) -> str:
        """`orange labeled apple; missed banana` (empty when the frame is right)."""
        parts = [f"{true} labeled {saved}" for saved, true in self.wrong_class]
        parts += [f"missed {label}" for label in self.missed] + [f"extra {label} box" for label in self.extra]
        return "; ".join(parts)


def grade_frame(sample_id: int, saved: Sequence[BBox], truth: Sequence[BBox], classes: Iterable[str],
                min_iou: float = MIN_IOU) -> FrameGrade:
    """Match saved boxes to true ones: same class first (by IoU), then any class; the rest is missed or extra."""
    classes = set(classes)
    grade = FrameGrade(int(sample_id))
    free_saved, free_truth = set(range(len(saved))), set(range(len(truth)))
    for same_class in (True, False):
        pairs = sorted(((iou(saved[i], truth[j]), i, j) for i in free_saved for j in free_truth
                        if (saved[i].label == truth[j].label) == same_class), reverse=True)
        for overlap, i, j in pairs:
            if overlap < min_iou or i not in free_saved or j not in free_truth:
                continue
            free_saved.discard(i)
            free_truth.discard(j)
            if same_class:
                grade.right += 1
            else:
                grade.wrong_class.append((saved[i].label, truth[j].label))
    grade.extra = sorted(saved[i].label for i in free_saved)
    grade.missed = sorted(truth[j].label for j in free_truth if truth[j].label in classes)
    return grade


@dataclass
class LabelGrade:
    """The saved labels of a queue against the truth.

    Attributes:
        frames: one `FrameGrade` per graded frame, in the order given.
        classes: the project's label set the frames were graded for.
        ungraded: saved frames without ground truth (real camera images).
    """

    frames: list[FrameGrade]
    classes: list[str]
    ungraded: int = 0

    @property
    def right(self) -> int:
        return sum(f.right for f in self.frames)

    @property
    def wrong_class(self) -> int:
        return sum(len(f.wrong_class) for f in self.frames)

    @property
    def missed(self) -> int:
        return sum(len(f.missed) for f in self.frames)

    @property
    def extra(self) -> int:
        return sum(len(f.extra) for f in self.frames)

    @property
    def share_right(self) -> float:
        """Right boxes over everything that should or should not be there (1.0 with nothing to grade)."""
        total = self.right + self.wrong_class + self.missed + self.extra
        return self.right / total if total else 1.0

    @property
    def to_look_at(self) -> list[FrameGrade]:
        """The frames with a wrong, missing or extra box."""
        return [f for f in self.frames if not f.ok]

    def confusions(self) -> Counter[tuple[str, str]]:
        """(true label, saved label) -> boxes: what was called what."""
        return Counter((true, saved) for f in self.frames for saved, true in f.wrong_class)

    def table(self) -> list[dict[str, Any]]:
        """One row: frames graded, boxes right, wrong class, missed, extra, share right, frames to look at."""
        return [{"frames graded": len(self.frames), "boxes right": self.right, "wrong class": self.wrong_class,
                 "missed": self.missed, "extra": self.extra, "share right": f"{self.share_right:.1%}",
                 "frames to look at": len(self.to_look_at)}]

    def summary(self) -> str:
        """A few deterministic lines for a notebook."""
        lines = [f"{len(self.frames)} labeled frames checked against the camera's truth: {self.right} boxes right, "
                 f"{self.wrong_class} of the wrong class, {self.missed} missed, {self.extra} extra "
                 f"({self.share_right:.1%} right)"]
        for (true, saved), n in sorted(self.confusions().items()):
            lines.append(f"  {n} {true} box{'es' if n != 1 else ''} labeled {saved}")
        if self.ungraded:
            lines.append(f"  {self.ungraded} frames have no ground truth (a real camera): not graded")
        lines.append(f"{len(self.to_look_at)} frames to look at again" if self.to_look_at else "every frame is right")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"frames": len(self.frames), "right": self.right, "wrong_class": self.wrong_class,
                "missed": self.missed, "extra": self.extra, "share_right": round(self.share_right, 4),
                "to_look_at": [f.sample_id for f in self.to_look_at], "ungraded": self.ungraded,
                "confusions": {f"{t} as {s}": n for (t, s), n in sorted(self.confusions().items())}}


def grade_samples(samples: Iterable[Any], classes: Sequence[str], min_iou: float = MIN_IOU) -> LabelGrade:
    """Grade labeled studio samples (`boxes` saved, `metadata.ground_truth` the truth)."""
    frames, ungraded = [], 0
    for s in samples:
        truth = ground_truth(s)
        if truth is None:
            ungraded += 1
            continue
        frames.append(grade_frame(s.id, list(s.boxes), truth, classes, min_iou))
    return LabelGrade(frames, list(classes), ungraded)


def grade_queue(queue: Any, min_iou: float = MIN_IOU) -> LabelGrade:
    """Grade what was saved through `queue` (a `LabelQueue`), as the studio holds it now."""
    saved = {r.sample_id for r in queue.records if r.action == "saved"}
    samples = sorted((s for s in queue.studio.samples(labeled=True) if int(s.id) in saved), key=lambda s: int(s.id))
    return grade_samples(samples, queue.labels, min_iou)


def grade_widget(grade: LabelGrade, queue: Any, n: int = 8, width: int = 160):
    """The grading table, then up to `n` frames to look at again as thumbnails (saved boxes drawn), each captioned."""
    import ipywidgets as w

    parts = [w.HTML(html_table(grade.table()))]
    thumbs = []
    for f in grade.to_look_at[:n]:
        sample = queue.studio.get_sample(f.sample_id)
        rgb = draw_boxes(queue.image(f.sample_id), sample.boxes, queue.labels)
        thumbs.append(w.VBox([w.Image(value=encode_jpeg(rgb, quality=85, max_side=2 * width), format="jpeg", width=width),
                              w.HTML(f"<small>#{f.sample_id}: {html.escape(f.describe())}</small>",
                                     layout=w.Layout(width=f"{width}px"))]))
    if thumbs:
        more = len(grade.to_look_at) - len(thumbs)
        parts.append(w.HTML("<b>Frames to look at again</b> (the boxes as saved)" + (f", and {more} more" if more > 0 else "")))
        parts.append(w.HBox(thumbs, layout=w.Layout(flex_flow="row wrap")))
    return w.VBox(parts)


__all__ = ["MIN_IOU", "FrameGrade", "LabelGrade", "grade_frame", "grade_queue", "grade_samples", "grade_widget"]
