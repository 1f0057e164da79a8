"""Box proposals for the labeling queue: tracking, the current model, and the COCO model.

Three sources here, each returning a `Proposal` with a score in [0, 1] (the queue takes more:
any callable returning a `Proposal` under its own source name):

- **tracking**: the boxes of the previous labeled frame of the same device, each moved to where
  its object went. The object's pixels in the old frame are the template; OpenCV's normalised
  cross-correlation (`cv2.matchTemplate`, `TM_CCOEFF_NORMED`) finds it in a window around the old
  position of the new frame, at a few scales. The box score is the correlation peak, lowered
  when the box's colour changed (`colour_agreement`: an orange where the apple was).
- **model**: the detections of a registered model (`helpers.inference.onnx.OnnxDetector`); the box score
  is the detector's confidence.
- **coco** (label assist, `CocoProposer`, `coco_assist_proposers`): the COCO-pretrained NanoDet
  (`make weights`) proposes the project's classes COCO knows (apple, banana, orange, ...) before
  any model of ours exists; the box score is its confidence. On the synthetic camera
  (`bench/bench_coco_assist.py`) 82 % of its banana boxes but only 8-31 % of its apple boxes fit
  the fruit to within IoU 0.9, and it calls the drawn lemons and oranges apples; its confidence
  (0.35-0.7) stays below a trusted tracking proposal's correlation (>= 0.85, `SCENE_MIN_MATCH`),
  so it is offered first where tracking has nothing trusted to offer: a camera's first frame,
  after a scene change.

Tracking is only right while the scene stays the same. When someone puts new fruit down or
carries the camera to another table, the template of the old apple matches best on whatever
lies near its old place (an orange, a patch of table) and a confident-looking box lands on the
wrong thing. `detect_scene_change` compares the two frames (the tracked boxes' correlation
peaks, boxes lost, and how much of the frame changed); when the
scene changed, the tracking proposal carries a `warning` and `best_proposal` never offers it
first: a detector's proposal (the model's or the COCO model's, or nothing: draw the boxes) comes first.

`compare_boxes` measures how far a proposal was from what the labeler saved, per sample and per
class; the queue and the oracle use it for the "accepted unchanged" figures.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from helpers.geometry import BBox, iou
from helpers.inference.onnx import OnnxDetector
from helpers.train.pretrained import WeightsMissing, weights_info

COCO_SOURCE = "coco"
# The proposal sources in the order reports list them and ties are broken (tracking first: it
# keeps the labeler's own boxes).
SOURCES = ("tracking", "model", COCO_SOURCE)

# Templates smaller than this (pixels per side) carry too little texture to match reliably.
MIN_TEMPLATE_SIDE = 4


@dataclass
class Proposal:
    """Boxes proposed for one sample by one source.

    Attributes:
        source: `tracking`, `model`, `coco` or a plugged-in proposer's name.
        boxes: proposed boxes in pixels; each box's `value` is its own score.
        score: the proposal's score: the mean box score (0.0 for an empty proposal).
        detail: where it came from (`from_sample`, `frame_gap` / `model_version`), for display.
        warning: why this proposal should not be trusted (e.g. the scene changed since the
            tracked frame); a proposal with a warning is never offered first.
    """

    source: str
    boxes: list[BBox]
    score: float
    detail: dict[str, Any] = field(default_factory=dict)
    warning: str | None = None

    @property
    def empty(self) -> bool:
        return not self.boxes

    def origin(self) -> str:
        """Where the boxes come from, in words: `tracking from #12 (1 frame back)`, `model v3`."""
        d = self.detail
        if self.source == "tracking" and d.get("from_sample") is not None:
            gap = d.get("frame_gap")
            back = f" ({gap} frame{'s' if gap != 1 else ''} back)" if gap is not None else ""
            return f"tracking from #{d['from_sample']}{back}"
        if self.source == "model" and d.get("model_version") is not None:
            return f"model v{d['model_version']}"
        if self.source == COCO_SOURCE and d.get("weights"):
            return f"COCO model ({d['weights']})"
        return self.source

    def describe(self) -> str:
        """One line for a panel: source, box count, confidence, and the warning if any."""
        n = len(self.boxes)
        line = f"{self.origin()}: {n} box{'es' if n != 1 else ''}, confidence {self.score:.2f}"
        return f"{line} (not offered: {self.warning})" if self.warning else line


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
    lost = recoloured = 0
    for box in prev_boxes:
        m = margin if margin is not None else min(0.5 * max(box.width, box.height) * gap + 8.0, max(gray.shape) / 2)
        new = track_box(prev_gray, box, gray, margin=m)
        if new is None or (new.value or 0.0) < min_score:
            lost += 1
            continue
        # the match is on brightness only: an orange put down where the apple was can match the
        # apple's template well. Its colour gives it away: the box's confidence drops with it.
        factor = colour_agreement(colour_distance(prev_rgb, box, rgb, new))
        if factor < 1.0:
            recoloured += 1
            new = BBox(new.label, new.x, new.y, new.width, new.height, value=(new.value or 0.0) * factor)
        moved.append(new)
    detail = {"from_sample": from_sample, "frame_gap": gap, "lost": lost, "recoloured": recoloured}
    return Proposal("tracking", moved, _mean_score(moved), detail)


# Colour check of a tracked box (bench numbers from the synthetic camera, story scenes "apples" and
# "apples_bananas", seeds 0-5, 120 frames each, shuffles every 5 frames): boxes tracked onto their
# own fruit differ by at most 6.1 in CIELAB colour (a*, b*, and L* at half weight, mean of the
# box's inner 60 %); the one confident wrong box of those streams (an orange where the apple was,
# matching at 0.88) differed by 19. Up to COLOUR_TOLERANCE the confidence stays; beyond, it falls
# linearly and is 0 at COLOUR_TOLERANCE + COLOUR_SPAN.
COLOUR_TOLERANCE = 8.0
COLOUR_SPAN = 16.0


def _inner_lab(rgb: np.ndarray, box: BBox) -> np.ndarray | None:
    h, w = rgb.shape[:2]
    x0, y0 = int(box.x + 0.2 * box.width), int(box.y + 0.2 * box.height)
    x1, y1 = int(np.ceil(box.x + 0.8 * box.width)), int(np.ceil(box.y + 0.8 * box.height))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0 or rgb.ndim != 3:
        return None
    lab = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    return lab.mean(axis=0)


def colour_distance(prev_rgb: np.ndarray, prev_box: BBox, rgb: np.ndarray, box: BBox) -> float:
    """How far the colour of `box` in `rgb` is from `prev_box` in `prev_rgb` (CIELAB, 0-255 scale;
    L* at half weight: light changes more than colour); 0.0 for grey images or empty boxes."""
    old, new = _inner_lab(prev_rgb, prev_box), _inner_lab(rgb, box)
    if old is None or new is None:
        return 0.0
    d_l, d_a, d_b = new - old
    return float(np.sqrt((d_l / 2) ** 2 + d_a**2 + d_b**2))


def colour_agreement(distance: float, tolerance: float = COLOUR_TOLERANCE, span: float = COLOUR_SPAN) -> float:
    """The factor a tracked box's confidence is multiplied by: 1 within `tolerance`, 0 beyond `tolerance + span`."""
    return float(min(1.0, max(0.0, 1.0 - (distance - tolerance) / span)))


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


class CocoProposer:
    """Label assist from the COCO-pretrained NanoDet (`make weights`), before any model of ours exists.

    A proposer for `LabelQueue(proposers=[CocoProposer()])`: called with `(rgb, labels)`, it
    returns a `coco` proposal with the boxes of the project's classes that COCO knows (apple,
    banana, orange, ...; a class COCO lacks, such as lemon, is never proposed).

    Args:
        detector: an `OnnxDetector` of the zero-shot model; default: the cached one.
        score_threshold: None uses the zero-shot card's threshold.
        cache: the weights cache folder (default `EDGELOOP_CACHE` or `~/.cache/edgeloop`).

    Raises:
        WeightsMissing: the COCO weights were never fetched (the message names `make weights`).
    """

    def __init__(self, detector: Any = None, score_threshold: float | None = None, cache: Any = None):
        if detector is None:
            info = weights_info(cache)
            detector = OnnxDetector(info["paths"]["zero_shot"])
            self.weights = f"{info['name']} {info['version']}"
        else:
            self.weights = str(getattr(detector, "card", {}).get("arch", "coco"))
        self.detector = detector
        self.score_threshold = score_threshold
        self.known = set(getattr(detector, "labels", []))

    def __call__(self, rgb: np.ndarray, labels: Iterable[str]) -> Proposal:
        wanted = [lb for lb in labels if lb in self.known]
        p = model_proposal(self.detector, rgb, labels=wanted, score_threshold=self.score_threshold)
        return Proposal(COCO_SOURCE, p.boxes, p.score, {"weights": self.weights, "classes": wanted})


def coco_assist_proposers(enabled: Any = "auto", cache: Any = None, score_threshold: float | None = None) -> list[CocoProposer]:
    """The label-assist proposers for `LabelQueue(proposers=...)`: the COCO model, where it can run.

    Args:
        enabled: `"auto"`: the COCO model when its weights are cached, else none (and one
            printed line saying why and what to run); True: the COCO model or an error;
            False: none.
        cache: the weights cache folder (default `EDGELOOP_CACHE` or `~/.cache/edgeloop`).
        score_threshold: the COCO model's score threshold (None: its card's).

    Returns:
        `[CocoProposer(...)]` or `[]`.

    Raises:
        ValueError: `enabled` is not "auto", True or False.
        WeightsMissing: `enabled` is True and `make weights` has not run.
    """
    if not (enabled == "auto" or enabled is True or enabled is False):
        raise ValueError(f"coco_assist must be 'auto', True or False, got {enabled!r}")
    if enabled is False:
        return []
    try:
        return [CocoProposer(score_threshold=score_threshold, cache=cache)]
    except WeightsMissing as e:
        if enabled is True:
            raise
        print(f"COCO label assist off: {e}")
        return []


def best_proposal(proposals: dict[str, Proposal]) -> str | None:
    """The source to offer first: the highest score; on a tie, tracking (it keeps the user's own boxes).

    Empty proposals score 0, so a model that sees something beats tracking from an empty frame,
    except tracking that passed the scene check (`flag_scene_change` scores "still empty" by how
    little the frame changed). A box's score is a tracking correlation (>= `SCENE_MIN_MATCH`
    when trusted) or a detector's confidence; on the synthetic camera the COCO model's mean
    confidence (0.35-0.7) stayed below every trusted tracking proposal's, so it is offered where
    tracking has nothing trusted to offer (`bench/bench_coco_assist.py`).
    A proposal with a `warning` (tracking across a scene change) is never offered first.
    Returns None when there is no proposal to offer (none at all, or only warned ones).
    """
    trusted = {s: p for s, p in proposals.items() if not p.warning}
    if not trusted:
        return None
    order = {s: i for i, s in enumerate(SOURCES)}
    return max(trusted, key=lambda s: (trusted[s].score, -order.get(s, len(order))))


@dataclass
class SceneChange:
    """Whether the scene changed between the tracked frame and the frame to label.

    Attributes:
        changed: True when tracking should not be trusted.
        reason: what gave it away, in words (empty when unchanged).
        min_match: the lowest correlation peak of the tracked boxes (None without boxes).
        lost: boxes the tracker could not find at all.
        frame_change: share of the frame whose brightness changed noticeably.
        max_change: the frame_change above which the scene counts as changed (the limit for a
            frame with boxes, or the lower one for a frame labeled empty).

    Not detected: a new object put down beside objects that are still tracked well (the
    change outside the boxes was tried as a signal and could not tell a new apple from a
    drifting orange and camera shake on the synthetic camera).
    """

    changed: bool
    reason: str
    min_match: float | None
    lost: int
    frame_change: float
    max_change: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "reason": self.reason, "min_match": self.min_match, "lost": self.lost,
                "frame_change": round(self.frame_change, 4), "max_change": self.max_change}


# Measured on the synthetic camera (bench/bench_scene_change.py): between shuffles a tracked box
# correlates at >= 0.95 and at most 7 % of the (blurred, 64 px) frame changes; right after a
# shuffle the old template's best match is 0.32-0.80, and after a camera move 70-99 % changed.
SCENE_MIN_MATCH = 0.85
SCENE_MAX_FRAME_CHANGE = 0.25
# A frame labeled empty has no box to match: there, a few percent of the frame changing means
# something was put down (between shuffles an empty table changes by up to ~2 %, so one lone
# apple, ~2 % of a 320 px frame, is not caught; two apples and an orange are).
SCENE_MAX_EMPTY_CHANGE = 0.03
_DIFF_SIDE = 64
_DIFF_LEVEL = 12.0


def _small_gray(rgb: np.ndarray) -> np.ndarray:
    g = cv2.resize(_gray(rgb), (_DIFF_SIDE, _DIFF_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(g, (5, 5), 0)


def detect_scene_change(
    prev_rgb: np.ndarray,
    prev_boxes: Sequence[BBox],
    rgb: np.ndarray,
    tracked: Proposal,
    *,
    min_match: float = SCENE_MIN_MATCH,
    max_frame_change: float = SCENE_MAX_FRAME_CHANGE,
    max_empty_change: float = SCENE_MAX_EMPTY_CHANGE,
) -> SceneChange:
    """Did the scene change between `prev_rgb` (with its saved boxes) and `rgb`?

    Args:
        prev_rgb: the tracked-from frame.
        prev_boxes: its saved boxes.
        rgb: the frame to label.
        tracked: `tracking_proposal(prev_rgb, prev_boxes, rgb, ...)`.
        min_match: a tracked box correlating below this means its object is not there any more.
        max_frame_change: more of the frame than this changed: the camera moved or the light changed.
        max_empty_change: the same when the tracked-from frame was labeled empty (no box).

    Returns:
        A `SceneChange`; `changed` is True when any of the three tests fires.
    """
    if prev_rgb.shape[:2] != rgb.shape[:2]:
        return SceneChange(True, "the image size changed", None, len(prev_boxes), 1.0)
    diff = np.abs(_small_gray(prev_rgb) - _small_gray(rgb)) > _DIFF_LEVEL
    frame_change = float(diff.mean())
    scores = [b.value for b in tracked.boxes if b.value is not None]
    lowest = float(min(scores)) if scores else None
    lost = int(tracked.detail.get("lost", max(0, len(prev_boxes) - len(tracked.boxes))))
    reasons = []
    if lost:
        reasons.append(f"{lost} tracked box{'es' if lost != 1 else ''} not found")
    recoloured = int(tracked.detail.get("recoloured", 0))
    if recoloured:
        reasons.append(f"{recoloured} tracked box{'es' if recoloured != 1 else ''} changed colour")
    if lowest is not None and lowest < min_match:
        reasons.append(f"a tracked box matches at {lowest:.2f} only")
    limit = max_frame_change if prev_boxes else max_empty_change
    if frame_change > limit:
        reasons.append(f"{frame_change:.0%} of the frame changed")
    return SceneChange(bool(reasons), "; ".join(reasons), lowest, lost, frame_change, limit)


def flag_scene_change(tracked: Proposal, change: SceneChange) -> Proposal:
    """`tracked` with the scene-change verdict in `detail` and, when it changed, a `warning`.

    An empty tracking proposal (the tracked-from frame was labeled empty) from an unchanged
    scene says "still nothing here" with evidence: its score becomes the share of the change
    limit left unused, `1 - frame_change / max_change` (0.7 % of a frame changed against the
    3 % limit: 0.77), instead of the 0 of an empty box list. A detector's false box at a
    modest confidence (the COCO model calls the synthetic orange an apple at 0.35-0.40) is then
    not offered over it, while one lone apple put down (~2 % of the frame, under the limit:
    0.33) is still offered when a detector is reasonably sure of it.
    """
    detail = {**tracked.detail, "scene_change": change.to_dict()}
    warning = f"scene changed: {change.reason}" if change.changed else tracked.warning
    score = tracked.score
    if not change.changed and tracked.empty and change.max_change > 0:
        score = max(0.0, 1.0 - change.frame_change / change.max_change)
    return Proposal(tracked.source, list(tracked.boxes), score, detail, warning)


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
        proposed_by_class: proposed boxes per class.
        unchanged_by_class: per class, proposed boxes matched to a saved box of that class with
            IoU >= the threshold (boxes a labeler kept as proposed).
        saved_by_class: saved boxes per class.
    """

    unchanged: bool
    mean_iou: float
    matched: int
    proposed: int
    saved: int
    proposed_by_class: dict[str, int] = field(default_factory=dict)
    unchanged_by_class: dict[str, int] = field(default_factory=dict)
    saved_by_class: dict[str, int] = field(default_factory=dict)


def compare_boxes(proposed: Sequence[BBox], saved: Sequence[BBox], iou_threshold: float = 0.9) -> BoxComparison:
    """Match proposed to saved boxes one-to-one (Hungarian on IoU, same label only) and score it."""
    n, k = len(proposed), len(saved)
    by_class = dict(Counter(b.label for b in proposed)), dict(Counter(b.label for b in saved))
    if n == 0 and k == 0:
        return BoxComparison(True, 1.0, 0, 0, 0)
    if n == 0 or k == 0:
        return BoxComparison(False, 0.0, 0, n, k, by_class[0], {}, by_class[1])
    ious = np.zeros((n, k))
    for i, p in enumerate(proposed):
        for j, s in enumerate(saved):
            if p.label == s.label:
                ious[i, j] = iou(p, s)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    matched = [(i, j) for i, j in zip(rows, cols) if ious[i, j] > 0]
    total = float(sum(ious[i, j] for i, j in matched))
    good = [proposed[i].label for i, j in matched if ious[i, j] >= iou_threshold]
    unchanged = n == k and len(good) == n
    return BoxComparison(unchanged, total / max(n, k), len(matched), n, k, by_class[0], dict(Counter(good)), by_class[1])
