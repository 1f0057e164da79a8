"""Timestamps in the shape Azure writes them: ISO 8601 UTC with milliseconds and a Z."""
from __future__ import annotations

import datetime as _dt
import time


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds and Z (None stays None)."""
    if epoch is None:
        return None
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds and a Z."""
    return iso(time.time()) or ""
