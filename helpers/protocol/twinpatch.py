"""JSON merge patches (RFC 7396) as IoT Hub applies them to twins, and the patch between two twins.

Pure functions shared by the hub stand-in (which applies patches) and the device side (which
sends the difference of its reported properties): one implementation, so both agree on what
a `null` means.
"""
from __future__ import annotations

from typing import Any


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch (a `null` deletes), as IoT Hub applies twin patches."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = merge_patch(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = value
    return out


def diff_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `old` into `new` (None deletes a key)."""
    out: dict[str, Any] = {}
    for key in old:
        if key not in new:
            out[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = diff_patch(before, value)
            if sub:
                out[key] = sub
        elif key not in old or before != value:
            out[key] = value
    return out
