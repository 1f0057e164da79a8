"""Polling for the integration tests: wait until a real service shows the expected state."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(fn: Callable[[], Any], timeout: float = 15.0, what: str = "condition", interval: float = 0.2) -> Any:
    """Call `fn` every `interval` seconds until it returns something truthy and return that;
    fail with the last value seen after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
