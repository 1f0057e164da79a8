"""A module's log as edgeAgent's `GetModuleLogs` returns it: filtered by time, regex and tail, size-capped."""
from __future__ import annotations

import datetime as _dt
import os
import re
import time
from pathlib import Path
from typing import Any

#: the largest GetModuleLogs answer (a direct method's payload is at most 128 KB)
MAX_LOG_BYTES = 96 * 1024
#: how much of the end of a log file is read at most
READ_BYTES = 4 * 1024 * 1024

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def read_module_log(path: Path, filt: dict[str, Any]) -> str:
    """The end of a module's log file, filtered by `filt` (`since`, `until`, `regex`, `tail`); "" when none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - READ_BYTES))
            lines = fh.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    since, until = log_time(filt.get("since")), log_time(filt.get("until"))
    if since is not None or until is not None:
        kept, stamp = [], None
        for line in lines:
            stamp = line_time(line) or stamp  # a line without a time belongs to the one before
            if stamp is None or ((since is None or stamp >= since) and (until is None or stamp <= until)):
                kept.append(line)
        lines = kept
    if filt.get("regex"):
        rx = re.compile(str(filt["regex"]))
        lines = [ln for ln in lines if rx.search(ln)]
    tail = filt.get("tail")
    if tail is not None:
        lines = lines[-int(tail):] if int(tail) > 0 else []
    text = "\n".join(lines)
    while len(text.encode()) > MAX_LOG_BYTES and "\n" in text:
        text = text[text.index("\n", len(text) // 4) + 1:]
    return text


def log_time(value: Any) -> float | None:
    """A GetModuleLogs `since`/`until`: a duration back from now (`10m`), epoch seconds or ISO 8601."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    m = _DURATION.match(text)
    if m:
        return time.time() - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if text.isdigit():
        return float(text)
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"since/until {text!r}: use a duration (30s, 10m, 2h, 1d), epoch seconds or ISO 8601") from None


def line_time(line: str) -> float | None:
    """The time at the start of a module log line (`2026-01-01 12:00:00,123 ...`), or None."""
    if len(line) < 19 or not line[:4].isdigit():
        return None
    try:
        return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None


__all__ = ["MAX_LOG_BYTES", "line_time", "log_time", "read_module_log"]
