"""Drift checks from what the devices report: "the apple model calls the banana an apple".

The runner's results (`GET /api/results` on its port, or frames it uploaded) are dicts with the
detections of one frame (`boxes`, or `detections`/`results`: lists of box dicts) and, for the
synthetic camera, the frame's ground truth (`ground_truth`). Where a result carries no ground
truth, the scene the device was shown (`{"objects": [...]}`) stands for every frame.

`confusion_rate(results, true_label, predicted_label)`: of the frames with a `true_label` object
in front of the camera, the share that produced a `predicted_label` detection (on the object,
when boxes are known). `banana_called_apple_rate` is the story's case.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from helpers.geometry import BBox, iou

DETECTION_KEYS = ("boxes", "detections", "bounding_boxes", "results")


@dataclass
class ConfusionRate:
    """Attributes:
        true_label: the class in front of the camera.
        predicted_label: the class it was reported as.
        frames: results looked at.
        frames_with_true: frames with a `true_label` object.
        confused: of those, frames with a `predicted_label` detection (on the object when
            ground-truth boxes are known).
        rate: confused / frames_with_true (0.0 when there were none).
    """

    true_label: str
    predicted_label: str
    frames: int
    frames_with_true: int
    confused: int
    rate: float

    def summary(self) -> str:
        return (f"{self.true_label} called {self.predicted_label}: {self.confused} of {self.frames_with_true} frames "
                f"({self.rate:.0%})")


def _boxes(items: Any) -> list[BBox]:
    out = []
    for d in items or []:
        out.append(d if isinstance(d, BBox) else BBox.from_dict(d))
    return out


def _called(truth: BBox, detections: Sequence[BBox], iou_threshold: float) -> str | None:
    """What the detector called the object `truth`: the label of its most confident detection
    overlapping it by at least `iou_threshold` (None: missed). A weak apple box beside a strong
    banana box on the same banana is the model hedging, not calling the banana an apple."""
    over = [d for d in detections if iou(d, truth) >= iou_threshold]
    if not over:
        return None
    return max(over, key=lambda d: (d.value if d.value is not None else 1.0)).label


def detections_of(result: Mapping[str, Any]) -> list[BBox]:
    """The detections of one runner result (first of `boxes`, `detections`, `bounding_boxes`, `results`)."""
    for key in DETECTION_KEYS:
        if key in result and isinstance(result[key], list):
            return _boxes(result[key])
    return []


def confusion_rate(
    results: Iterable[Mapping[str, Any]],
    true_label: str,
    predicted_label: str,
    *,
    scene: Mapping[str, Any] | Sequence[str] | None = None,
    iou_threshold: float | None = 0.3,
    min_score: float | None = None,
) -> ConfusionRate:
    """Share of frames with a `true_label` object that produced a `predicted_label` detection.

    Args:
        results: runner results (dicts with detections and optionally `ground_truth`).
        true_label: e.g. `banana`.
        predicted_label: e.g. `apple`.
        scene: the objects in front of the camera (`{"objects": [...]}` or a list), used for
            results without `ground_truth`.
        iou_threshold: with ground-truth boxes, a `true_label` object counts as called
            `predicted_label` when its most confident detection overlapping it by at least this
            much has that label (so a real apple beside the banana, or a weaker apple box under a
            banana box, does not count); None counts any `predicted_label` detection in the frame.
        min_score: ignore detections scoring below this.
    """
    scene_objects: list[str] = []
    if isinstance(scene, Mapping):
        scene_objects = list(scene.get("objects") or [])
    elif scene is not None:
        scene_objects = list(scene)
    frames = with_true = confused = 0
    for result in results:
        frames += 1
        every = [b for b in detections_of(result) if min_score is None or b.value is None or b.value >= min_score]
        dets = [b for b in every if b.label == predicted_label]
        if result.get("ground_truth") is not None:
            truth = [b for b in _boxes(result["ground_truth"]) if b.label == true_label]
            if not truth:
                continue
            with_true += 1
            if iou_threshold is None:
                hit = bool(dets)
            else:
                hit = any(_called(t, every, iou_threshold) == predicted_label for t in truth)
        else:
            if true_label not in scene_objects:
                continue
            with_true += 1
            hit = bool(dets)
        confused += 1 if hit else 0
    return ConfusionRate(true_label, predicted_label, frames, with_true, confused,
                         confused / with_true if with_true else 0.0)


def confusion_from_telemetry(telemetry: Mapping[str, Any] | Iterable[Mapping[str, Any]], true_label: str,
                             predicted_label: str) -> ConfusionRate:
    """The same question from runner telemetry windows (`ModuleStatus.telemetry`).

    The runner compares each synthetic frame's ground truth with its detections and counts, per
    window, ground-truth objects (`synthetic_check.objects`) and objects reported as another
    class (`synthetic_check.confusions["banana->apple"]`, IoU >= 0.5). Here the unit is the
    *object*, not the frame: `frames_with_true` counts `true_label` objects, `confused` those
    reported as `predicted_label`; `frames` is the number of frames checked.

    Args:
        telemetry: one telemetry dict or several (e.g. one per device, or successive windows).
    """
    windows = [telemetry] if isinstance(telemetry, Mapping) else list(telemetry)
    frames = objects = confused = 0
    for t in windows:
        check = (t or {}).get("synthetic_check") or {}
        frames += int(check.get("frames") or 0)
        objects += int((check.get("objects") or {}).get(true_label) or 0)
        confused += int((check.get("confusions") or {}).get(f"{true_label}->{predicted_label}") or 0)
    return ConfusionRate(true_label, predicted_label, frames, objects, confused, confused / objects if objects else 0.0)


def poll_results(host_port: int, frames: int = 20, timeout: float = 30.0, host: str = "127.0.0.1",
                 interval: float = 0.2) -> list[dict[str, Any]]:
    """Collect `frames` distinct results (by `frame_index`) from a runner's `/api/results`.

    Returns what was collected when `timeout` runs out (possibly fewer).

    Raises:
        requests.RequestException: the runner cannot be reached at all.
    """
    import time

    import requests

    url = f"http://{host}:{int(host_port)}/api/results"
    seen: dict[Any, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < frames and time.monotonic() < deadline:
        r = requests.get(url, timeout=5)
        r.raise_for_status()
        body = r.json()
        key = body.get("frame_index")
        if key is not None and key not in seen:
            seen[key] = body
        time.sleep(interval)
    return [seen[k] for k in sorted(seen)]


def banana_called_apple_rate(results: Iterable[Mapping[str, Any]], **options: Any) -> ConfusionRate:
    """`confusion_rate(results, "banana", "apple", ...)`: how often a banana is reported as an apple."""
    return confusion_rate(results, "banana", "apple", **options)
