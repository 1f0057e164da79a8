"""Watch what the deployed runners see: their telemetry windows, read from the hub's Event Hubs-compatible endpoint.

Each runner sends one device-to-cloud message per window of `TELEMETRY_INTERVAL_S` seconds
(application properties `type=telemetry`, `model_version`): frames, detections per class and,
with a synthetic camera, ground-truth objects and confusions (`synthetic_check`, e.g.
`"banana->apple"`). The hub client reads them from IoT Hub's built-in Event Hubs-compatible
endpoint with `azure-eventhub` (`hub.read_telemetry`), so the same code reads Azure's hub
(IOTHUB_EVENTHUB_CONNECTION_STRING) and the local stand-in:

    windows = observe.telemetry_windows(s.hub, devices, seconds=4, model_version=3)
    rate = observe.observe_confusion(s.hub, devices, "banana", "apple", seconds=10)

The runner's page (`runner_url`, `collect_results`: `GET /api/results` on the port its agent
reports) stays for a person looking at one device.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from helpers.deploy.drift import ConfusionRate, confusion_from_telemetry, confusion_rate
from helpers.errors import ConfigError, RolloutError
from helpers.hub.telemetry import Telemetry

RUNNER = "runner"


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


# ---------------------------------------------------------------------- the runners' telemetry windows
def utc_now() -> dt.datetime:
    """Now, in UTC (what `since` compares with: the hub's enqueued times)."""
    return dt.datetime.now(dt.UTC)


def window_span(t: Telemetry) -> tuple[dt.datetime, dt.datetime] | None:
    """When a telemetry window began and ended (its enqueued time less its `window_s`); None: not a window."""
    body = t.json
    if not isinstance(body, Mapping) or t.enqueued_time is None or "window_s" not in body:
        return None
    return t.enqueued_time - dt.timedelta(seconds=float(body["window_s"] or 0.0)), t.enqueued_time


def telemetry_windows(hub: Any, device_ids: Sequence[str], seconds: float = 4.0, *, since: dt.datetime | None = None,
                      model_version: int | None = None, module: str = RUNNER,
                      timeout_s: float | None = None) -> dict[str, list[Telemetry]]:
    """Each device's runner telemetry windows that began after `since`, until each device's cover `seconds`.

    Read with `hub.read_telemetry` (the built-in Event Hubs-compatible endpoint): events of
    `module` on `device_ids` with `type=telemetry`, of `model_version` when given, that began at or
    after `since` (default: now, so only what the runners see from now on counts).

    Args:
        hub: the hub client (`IoTHub`: the stand-in's, or Azure's with IOTHUB_EVENTHUB_CONNECTION_STRING).
        device_ids: the devices to hear from.
        seconds: return once every device's windows span this many seconds of frames.
        since: only windows that began at or after this time (UTC; the hub's clock).
        model_version: only windows of the runner running this registry version.
        module: the module sending the windows.
        timeout_s: the most seconds to wait (default `3 * seconds + 30`: a runner's first window
            comes 2 s after it starts, later ones every TELEMETRY_INTERVAL_S); a device that sent
            nothing by then has an empty list.

    Raises:
        ConfigError: `seconds` is not positive, no device is named, or the hub knows no Event Hubs-compatible endpoint.
    """
    ids = list(dict.fromkeys(device_ids))
    if not ids or seconds <= 0:
        raise ConfigError(f"telemetry_windows needs device ids and seconds > 0 (got {ids!r}, {seconds})")
    start = since or utc_now()
    wanted = set(ids)
    version = None if model_version is None else str(int(model_version))

    def keep(t: Telemetry) -> bool:
        span = window_span(t)
        return (t.device_id in wanted and t.module_id == module and t.properties.get("type") == "telemetry"
                and (version is None or t.properties.get("model_version") == version)
                and span is not None and span[0] >= start)

    def covered(got: list[Telemetry]) -> bool:
        span = dict.fromkeys(ids, 0.0)
        for t in got:
            span[t.device_id or ""] += float(t.json["window_s"] or 0.0)
        return all(span[d] >= seconds for d in ids)

    got = hub.read_telemetry(starting_position=start, keep=keep, until=covered,
                             timeout_s=timeout_s if timeout_s is not None else 3 * seconds + 30)
    out: dict[str, list[Telemetry]] = {d: [] for d in ids}
    for t in sorted(got, key=lambda t: t.enqueued_time or start):
        out[t.device_id or ""].append(t)
    return out


def detections(windows: Sequence[Telemetry]) -> dict[str, int]:
    """Detections per class over a device's windows."""
    total: dict[str, int] = {}
    for t in windows:
        for label, n in (t.json.get("detections_per_class") or {}).items():
            total[label] = total.get(label, 0) + int(n)
    return total


def per_frame(windows: Mapping[str, Sequence[Telemetry]], label: str) -> dict[str, float]:
    """`label` detections per frame on each device over its windows (0.0 without frames)."""
    out = {}
    for d, ws in windows.items():
        frames = sum(int(t.json.get("window_frames") or 0) for t in ws)
        out[d] = detections(ws).get(label, 0) / frames if frames else 0.0
    return out


def detected_on_fleet(hub: Any, device_ids: Sequence[str], label: str, seconds: float = 4.0, min_per_frame: float = 0.2,
                      model_version: int | None = None) -> dict[str, bool]:
    """Per device: whether its runner reported at least `min_per_frame` `label` detections per frame in the next `seconds`."""
    rates = per_frame(telemetry_windows(hub, device_ids, seconds, model_version=model_version), label)
    return {d: rate >= min_per_frame for d, rate in rates.items()}


@dataclass
class TelemetryConfusion(ConfusionRate):
    """`ConfusionRate` counted by the runners from ground truth: objects, not frames (`frames_with_true`:
    `true_label` objects seen; `confused`: those reported as `predicted_label`), over `windows` windows."""

    windows: int = 0
    devices: int = 0

    def summary(self) -> str:
        return (f"{self.true_label} called {self.predicted_label}: {self.confused} of {self.frames_with_true} "
                f"{self.true_label}s seen ({self.rate:.0%}), from {self.windows} telemetry windows of {self.devices} "
                f"devices ({self.frames} frames)")


def observe_confusion(hub: Any, device_ids: Sequence[str], true_label: str, predicted_label: str,
                      seconds: float = 10.0, settle_s: float = 2.0, model_version: int | None = None) -> TelemetryConfusion:
    """How often the fleet's runners report `true_label` objects as `predicted_label`, from their telemetry.

    Counts the windows that began `settle_s` from now or later (frames rendered before a scene
    change are not counted) until each device's span `seconds`.

    Raises:
        RolloutError: no window carried the synthetic camera's ground truth (`synthetic_check`): the
            runners run no synthetic camera, or sent nothing (is the runner deployed? notebook 05).
    """
    windows = telemetry_windows(hub, device_ids, seconds, since=utc_now() + dt.timedelta(seconds=settle_s),
                                model_version=model_version)
    every = [t.json for ws in windows.values() for t in ws]
    checked = [w for w in every if w.get("synthetic_check")]
    if not checked:
        silent = [d for d, ws in windows.items() if not ws]
        raise RolloutError(f"no runner telemetry with ground truth (synthetic_check) from {list(windows)}: "
                           + (f"{silent} sent no window (deploy the runner, notebook 05; see hub.module_logs(device, "
                              "'runner'))" if silent else "the runners' cameras are not synthetic"))
    rate = confusion_from_telemetry(checked, true_label, predicted_label)
    return TelemetryConfusion(rate.true_label, rate.predicted_label, rate.frames, rate.frames_with_true, rate.confused,
                              rate.rate, windows=len(checked), devices=sum(1 for ws in windows.values() if ws))
