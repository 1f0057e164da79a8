"""Per-window statistics of what the model sees, for the twin's reported properties and telemetry.

Detections per class, mean confidence per class, the share of low-confidence frames, the share
of frames where one class takes every detection (a drift sign), and, with a synthetic camera,
recall and confusions against the frame's ground truth (`synthetic_check`).
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

from helpers.geometry import BBox, iou


class Telemetry:
    """Per-window statistics of what the model sees, written to reported.json."""

    def __init__(self, low_confidence: float):
        self.low_confidence = low_confidence
        self.reset()

    def reset(self) -> None:
        self.window_start = time.monotonic()
        self.frames = 0
        self.detections: Counter[str] = Counter()
        self.score_sum: Counter[str] = Counter()
        self.low_frames = 0
        self.multi_frames = 0
        self.single_class_frames = 0
        self.dominant: Counter[str] = Counter()
        self.empty_frames = 0
        self.gt_frames = 0
        self.gt_objects: Counter[str] = Counter()
        self.gt_found: Counter[str] = Counter()
        self.confusions: Counter[str] = Counter()

    def add(self, boxes: list[BBox], ground_truth: list[BBox] | None) -> None:
        self.frames += 1
        if not boxes:
            self.empty_frames += 1
        for b in boxes:
            self.detections[b.label] += 1
            self.score_sum[b.label] += float(b.value or 0.0)
        if any(float(b.value or 0.0) < self.low_confidence for b in boxes):
            self.low_frames += 1
        if len(boxes) >= 2:
            self.multi_frames += 1
            classes = {b.label for b in boxes}
            if len(classes) == 1:
                self.single_class_frames += 1
                self.dominant[next(iter(classes))] += 1
        if ground_truth is not None:
            self.gt_frames += 1
            for gt in ground_truth:
                self.gt_objects[gt.label] += 1
                best = max(boxes, key=lambda b: iou(b, gt), default=None)
                if best is None or iou(best, gt) < 0.5:
                    continue
                if best.label == gt.label:
                    self.gt_found[gt.label] += 1
                else:
                    self.confusions[f"{gt.label}->{best.label}"] += 1

    def snapshot(self) -> dict[str, Any]:
        n = max(self.frames, 1)
        out: dict[str, Any] = {
            "window_s": round(time.monotonic() - self.window_start, 1),
            "window_frames": self.frames,
            "detections_per_class": dict(self.detections),
            "mean_confidence": {k: round(self.score_sum[k] / c, 4) for k, c in self.detections.items() if c},
            "low_confidence_share": round(self.low_frames / n, 4),
            "single_class_share": round(self.single_class_frames / self.multi_frames, 4) if self.multi_frames else None,
            "dominant_class": self.dominant.most_common(1)[0][0] if self.dominant else None,
            "empty_share": round(self.empty_frames / n, 4),
        }
        if self.gt_frames:
            out["synthetic_check"] = {
                "frames": self.gt_frames,
                "objects": dict(self.gt_objects),
                "recall": {k: round(self.gt_found[k] / c, 4) for k, c in self.gt_objects.items() if c},
                "confusions": dict(self.confusions),
            }
        return out


__all__ = ["Telemetry"]
