"""Watch what the deployed runners see: poll each device's `/api/results` for a while.

The runner answers on the host port its agent reports (`hub.device_status(id).modules["runner"]
.host_port`). Each result carries `frame_index`, so a frame is counted once however often it
is polled.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import requests

from helpers.deploy.drift import ConfusionRate, confusion_rate, detections_of
from helpers.errors import RolloutError


def runner_url(hub: Any, device_id: str, module: str = "runner", host: str = "127.0.0.1") -> str:
    """Base URL of a device's runner page.

    Raises:
        RolloutError: the device reports no runner with a host port (deploy it first).
    """
    m = hub.device_status(device_id).modules.get(module)
    if m is None or not m.host_port:
        raise RolloutError(f"{device_id} reports no running '{module}' module with a port: deploy the runner (notebook 05)")
    return f"http://{host}:{m.host_port}/"


def collect_results(hub: Any, device_ids: Sequence[str], seconds: float = 10.0, poll_s: float = 0.25,
                    min_frames: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Distinct runner results per device over `seconds` (at least `min_frames` each, up to 3x the time)."""
    urls = {d: runner_url(hub, d) for d in device_ids}
    seen: dict[str, dict[int, dict[str, Any]]] = {d: {} for d in device_ids}
    start = time.monotonic()
    while True:
        for d, url in urls.items():
            r = requests.get(url + "api/results", timeout=5)
            r.raise_for_status()
            res = r.json()
            idx = res.get("frame_index")
            if idx is not None:
                seen[d][int(idx)] = res
        elapsed = time.monotonic() - start
        enough = all(len(v) >= min_frames for v in seen.values())
        if (elapsed >= seconds and enough) or elapsed >= 3 * seconds:
            return {d: [v[k] for k in sorted(v)] for d, v in seen.items()}
        time.sleep(poll_s)


def observe_confusion(hub: Any, device_ids: Sequence[str], true_label: str, predicted_label: str,
                      seconds: float = 10.0, settle_s: float = 2.0) -> ConfusionRate:
    """How often the fleet's runners report `true_label` objects as `predicted_label`.

    Waits `settle_s` first, so frames rendered before a scene change are not counted.
    """
    time.sleep(settle_s)
    per_device = collect_results(hub, device_ids, seconds)
    everything = [r for rs in per_device.values() for r in rs]
    return confusion_rate(everything, true_label, predicted_label, iou_threshold=0.3)


def detected_in_recent(hub: Any, device_id: str, label: str, seconds: float = 4.0, min_share: float = 0.5) -> bool:
    """True when `label` was detected in at least `min_share` of the device's recent frames."""
    results = collect_results(hub, [device_id], seconds)[device_id]
    hits = sum(any(b.label == label for b in detections_of(r)) for r in results)
    return bool(results) and hits / len(results) >= min_share


def confusion_on_images(detector: Any, items: Sequence[tuple[Any, Sequence[Any]]], true_label: str,
                        predicted_label: str, iou_threshold: float = 0.3) -> ConfusionRate:
    """The drift question asked of a fixed set of labeled images instead of live frames.

    Which frames a runner happens to score in a few seconds depends on the machine's speed; a
    fixed set (the studio's held-out images) gives the same answer for the same model on every
    run, so the story's before/after figures can be checked and compared across runs.

    Args:
        detector: an `OnnxDetector` (its card's score threshold applies, as on the device).
        items: (RGB image, labeled boxes) pairs; images without a `true_label` box are not counted.
        true_label, predicted_label, iou_threshold: as `confusion_rate`.
    """
    results = [{"bounding_boxes": [b.to_dict() for b in detector.detect(rgb)],
                "ground_truth": [b.to_dict() for b in boxes]} for rgb, boxes in items]
    return confusion_rate(results, true_label, predicted_label, iou_threshold=iou_threshold)
