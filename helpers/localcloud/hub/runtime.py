"""The hub's per-process runtime: throttling (a token bucket answering 429 + Retry-After), deployment timing, counters."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from helpers.errors import ConfigError
from helpers.localcloud.common.clock import iso
from helpers.localcloud.hub.deploy import DeploymentTiming
from helpers.localcloud.hub.errors import Throttled

_STATS_PATH = "/api/hub/stats"  # the stand-in's own counters are not counted or throttled


class TokenBucket:
    """`rate` requests per second with bursts of `burst`; `take()` returns 0 or the seconds to wait."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = float(rate), max(1, int(burst))
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


@dataclass
class HubRuntime:
    """Per-process hub settings and counters (`app.state.hub`)."""

    timing: DeploymentTiming = field(default_factory=DeploymentTiming)
    throttle: TokenBucket | None = None
    evaluator: Any = None
    requests: int = 0
    throttled: int = 0

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "throttled": self.throttled,
                "throttle": None if self.throttle is None else {"rate": self.throttle.rate, "burst": self.throttle.burst},
                "deployment_timing": {"initial_delay_s": self.timing.initial_delay_s, "interval_s": self.timing.interval_s},
                "last_evaluation": iso(getattr(self.evaluator, "last_run", None))}

    def poke(self) -> None:
        """A deployment changed: let the evaluator look at its schedule now."""
        if self.evaluator is not None:
            self.evaluator.poke()


def runtime_of(request: Request) -> HubRuntime:
    """The process's `HubRuntime` (`app.state.hub`; a default one when the app was built without)."""
    rt = getattr(request.app.state, "hub", None)
    if rt is None:
        rt = request.app.state.hub = HubRuntime()
    return rt


def throttle(request: Request) -> None:
    """Router dependency: count the call; 429 when the configured rate is exceeded (device calls exempt)."""
    rt = runtime_of(request)
    if request.url.path == _STATS_PATH:
        return
    rt.requests += 1
    if rt.throttle is not None:
        wait = rt.throttle.take()
        if wait > 0:
            rt.throttled += 1
            raise Throttled(wait)


def hub_runtime_from(throttle_rps: float | None = None, throttle_burst: int | None = None,
                     deployment_timing: str | None = None) -> HubRuntime:
    """The hub's runtime settings from arguments, else the environment.

    `EDGELOOP_HUB_THROTTLE_RPS` (requests per second before 429 + Retry-After; empty or 0: off),
    `EDGELOOP_HUB_THROTTLE_BURST` (default: the rate, at least 1), `EDGELOOP_HUB_DEPLOYMENT_TIMING`
    (`fast` = evaluate at once then every second, `azure` = about 30 s after a change then every
    5 minutes, or `DELAY,INTERVAL` in seconds).
    """
    rps_text = os.environ.get("EDGELOOP_HUB_THROTTLE_RPS", "") if throttle_rps is None else str(throttle_rps)
    burst_text = os.environ.get("EDGELOOP_HUB_THROTTLE_BURST", "") if throttle_burst is None else str(throttle_burst)
    try:
        rps = float(rps_text) if rps_text.strip() else 0.0
        burst = int(burst_text) if burst_text.strip() else max(1, int(rps))
        timing = DeploymentTiming.parse(os.environ.get("EDGELOOP_HUB_DEPLOYMENT_TIMING") if deployment_timing is None
                                        else deployment_timing)
    except ValueError as exc:
        raise ConfigError(f"hub settings: {exc} (EDGELOOP_HUB_THROTTLE_RPS is a number, EDGELOOP_HUB_THROTTLE_BURST an "
                          "integer, EDGELOOP_HUB_DEPLOYMENT_TIMING 'fast', 'azure' or 'DELAY,INTERVAL')") from None
    return HubRuntime(timing=timing, throttle=TokenBucket(rps, burst) if rps > 0 else None)
