"""Box proposals for the labeling queue: tracking from the previous frame, and the current model.

Two sources, each returning a `Proposal` with a score in [0, 1]:

- **tracking**: the boxes of the previous labeled frame of the same device, each moved to where
  its object went. The object's pixels in the old frame are the template; OpenCV's normalised
  cross-correlation (`cv2.matchTemplate`, `TM_CCOEFF_NORMED`) finds it in a window around the old
  position of the new frame, at a few scales. The box score is the correlation peak.
- **model**: the detections of a registered model (`helpers.detector.OnnxDetector`); the box score
  is the detector's confidence.

`compare_boxes` measures how far a proposal was from what the labeler saved; the queue and the
oracle use it for the "accepted unchanged" figures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from helpers.geometry import BBox, iou

SOURCES = ("tracking", "model")

# Templates smaller than this (pixels per side) carry too little texture to match reliably.
MIN_TEMPLATE_SIDE = 4


@dataclass
class Proposal:
    """Boxes proposed for one sample by one source.

    Attributes:
        source: `tracking` or `model`.
        boxes: proposed boxes in pixels; each box's `value` is its own score.
        score: the proposal's score: the mean box score (0.0 for an empty proposal).
        detail: where it came from (`from_sample`, `frame_gap` / `model_version`), for display.
    """

    source: str
    boxes: list[BBox]
    score: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.boxes

    def describe(self) -> str:
        """One line for a panel: source, box count, score."""
        n = len(self.boxes)
        return f"{self.source}: {n} box{'es' if n != 1 else ''}, score {self.score:.2f}"


def _mean_score(boxes: Sequence[BBox]) -> float:
    values = [b.value for b in boxes if b.value is not None]
    return float(np.mean(values)) if values else 0.0


def _gray(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def track_box(
    prev_gray: np.ndarray,
    box: BBox,
    gray: np.ndarray,
    *,
    margin: float,
    scales: Sequence[float] = (0.9, 1.0, 1.1),
) -> BBox | None:
    """Find `box`'s object of `prev_gray` in `gray`, searching `margin` pixels around it.

    Returns:
        The moved box (same label, `value` = correlation peak in [0, 1]), or None when the box
        is too small or too flat (uniform pixels) to track.
    """
    h_img, w_img = gray.shape[:2]
    b = box.clipped(prev_gray.shape[1], prev_gray.shape[0])
    x0, y0 = int(round(b.x)), int(round(b.y))
    x1, y1 = int(round(b.x + b.width)), int(round(b.y + b.height))
    if x1 - x0 < MIN_TEMPLATE_SIDE or y1 - y0 < MIN_TEMPLATE_SIDE:
        return None
    template = prev_gray[y0:y1, x0:x1]
    if float(template.std()) < 1.0:
        # a uniform patch correlates equally well everywhere: no information about motion
        return None
    best: tuple[float, float, float, float, float] | None = None  # score, x, y, w, h
    m = int(np.ceil(margin))
    for scale in scales:
        tw = max(MIN_TEMPLATE_SIDE, int(round((x1 - x0) * scale)))
        th = max(MIN_TEMPLATE_SIDE, int(round((y1 - y0) * scale)))
        tmpl = template if (tw, th) == template.shape[::-1] else cv2.resize(template, (tw, th), interpolation=cv2.INTER_LINEAR)
        # search window: the old box grown by the margin, clipped to the image
        sx0, sy0 = max(0, x0 - m), max(0, y0 - m)
        sx1, sy1 = min(w_img, x0 + tw + m), min(h_img, y0 + th + m)
        if sx1 - sx0 < tw or sy1 - sy0 < th:
            continue
        window = gray[sy0:sy1, sx0:sx1]
        result = cv2.matchTemplate(window, tmpl, cv2.TM_CCOEFF_NORMED)
        _, peak, _, loc = cv2.minMaxLoc(result)
        if not np.isfinite(peak):
            continue
        # keep the box centred where the scaled template sits
        if best is None or peak > best[0] + 1e-6:
            best = (float(peak), float(sx0 + loc[0]), float(sy0 + loc[1]), float(tw), float(th))
    if best is None:
        return None
    score, x, y, w, h = best
    moved = BBox(box.label, x, y, w, h, value=max(0.0, min(1.0, score)))
    return moved.clipped(w_img, h_img)


def tracking_proposal(
    prev_rgb: np.ndarray,
    prev_boxes: Sequence[BBox],
    rgb: np.ndarray,
    *,
    frame_gap: int = 1,
    margin: float | None = None,
    min_score: float = 0.3,
    from_sample: int | None = None,
) -> Proposal:
    """Move the previous labeled frame's boxes to where their objects went in `rgb`.

    Args:
        prev_rgb: the previous labeled frame of the same device (RGB uint8).
        prev_boxes: its saved boxes.
        rgb: the frame to label.
        frame_gap: how many frames apart the two are; the search window grows with it.
        margin: search margin in pixels around each old box; default grows with the box size
            and the frame gap.
        min_score: boxes whose correlation peak is below this are dropped (the object left
            the frame or is hidden).
        from_sample: the previous sample's id, kept in `detail` for display.

    Returns:
        A `tracking` proposal; its score is the mean correlation peak of the kept boxes.
    """
    if prev_rgb.shape[:2] != rgb.shape[:2]:
        # a different resolution means a different camera setup: nothing to track
        return Proposal("tracking", [], 0.0, {"from_sample": from_sample, "frame_gap": frame_gap, "reason": "image size changed"})
    prev_gray, gray = _gray(prev_rgb), _gray(rgb)
    gap = max(1, int(frame_gap))
    moved: list[BBox] = []
    lost = 0
    for box in prev_boxes:
        m = margin if margin is not None else min(0.5 * max(box.width, box.height) * gap + 8.0, max(gray.shape) / 2)
        new = track_box(prev_gray, box, gray, margin=m)
        if new is None or (new.value or 0.0) < min_score:
            lost += 1
            continue
        moved.append(new)
    detail = {"from_sample": from_sample, "frame_gap": gap, "lost": lost}
    return Proposal("tracking", moved, _mean_score(moved), detail)


def model_proposal(
    detector: Any,
    rgb: np.ndarray,
    *,
    labels: Iterable[str] | None = None,
    score_threshold: float | None = None,
    model_version: int | None = None,
) -> Proposal:
    """The detections of a model as a proposal.

    Args:
        detector: an `OnnxDetector` (anything with `.detect(rgb, score_threshold=...)`).
        rgb: the frame to label.
        labels: keep only boxes of these classes (the project's label set); None keeps all.
        score_threshold: passed to the detector; None uses the model card's default.
        model_version: the registry version, kept in `detail`.

    Returns:
        A `model` proposal; its score is the mean detection confidence.
    """
    boxes = detector.detect(rgb, score_threshold=score_threshold)
    if labels is not None:
        keep = set(labels)
        boxes = [b for b in boxes if b.label in keep]
    h, w = rgb.shape[:2]
    boxes = [b.clipped(w, h) for b in boxes]
    boxes = [b for b in boxes if b.width > 0 and b.height > 0]
    return Proposal("model", boxes, _mean_score(boxes), {"model_version": model_version})


def best_proposal(proposals: dict[str, Proposal]) -> str | None:
    """The source to offer first: the highest score; on a tie, tracking (it keeps the user's own boxes).

    Empty proposals score 0, so a model that sees something beats tracking from an empty frame.
    Returns None when there is no proposal at all.
    """
    if not proposals:
        return None
    order = {s: i for i, s in enumerate(SOURCES)}
    return max(proposals, key=lambda s: (proposals[s].score, -order.get(s, len(order))))


@dataclass
class BoxComparison:
    """How a proposal compares with the boxes finally saved.

    Attributes:
        unchanged: same number of boxes, and every proposed box matched to a saved box of the
            same label with IoU >= the threshold.
        mean_iou: the matched IoUs summed over max(#proposed, #saved) (unmatched boxes count as
            0; 1.0 when both are empty).
        matched: number of label-consistent matches.
        proposed: number of proposed boxes.
        saved: number of saved boxes.
    """

    unchanged: bool
    mean_iou: float
    matched: int
    proposed: int
    saved: int


def compare_boxes(proposed: Sequence[BBox], saved: Sequence[BBox], iou_threshold: float = 0.9) -> BoxComparison:
    """Match proposed to saved boxes one-to-one (Hungarian on IoU, same label only) and score it."""
    n, k = len(proposed), len(saved)
    if n == 0 and k == 0:
        return BoxComparison(True, 1.0, 0, 0, 0)
    if n == 0 or k == 0:
        return BoxComparison(False, 0.0, 0, n, k)
    ious = np.zeros((n, k))
    for i, p in enumerate(proposed):
        for j, s in enumerate(saved):
            if p.label == s.label:
                ious[i, j] = iou(p, s)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    matched = [(i, j) for i, j in zip(rows, cols) if ious[i, j] > 0]
    total = float(sum(ious[i, j] for i, j in matched))
    good = sum(1 for i, j in matched if ious[i, j] >= iou_threshold)
    unchanged = n == k and good == n
    return BoxComparison(unchanged, total / max(n, k), len(matched), n, k)
