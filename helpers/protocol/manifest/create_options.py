"""Docker createOptions as Azure stores them: a JSON string split into 512-character settings keys."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from helpers.errors import InvalidManifest

#: Azure stores createOptions as strings of at most this many characters:
#: `createOptions`, `createOptions01`, `createOptions02`, ...
CREATE_OPTIONS_CHUNK = 512
#: More chunks than this (4096 characters) is more than Azure tooling writes.
CREATE_OPTIONS_MAX_CHUNKS = 8

CHUNK_KEY = re.compile(r"^createOptions(\d{2})?$")


def split_create_options(options: Mapping[str, Any] | str, chunk: int = CREATE_OPTIONS_CHUNK) -> dict[str, str]:
    """Stringify createOptions and split it into Azure's 512-character settings keys.

    Args:
        options: the Docker create options (a dict) or an already stringified JSON object.
        chunk: the chunk length (Azure: 512).

    Returns:
        `{"createOptions": "..."}`, plus `createOptions01`, `createOptions02`, ... when longer.
    """
    text = options if isinstance(options, str) else json.dumps(options, separators=(",", ":"), sort_keys=True)
    parts = [text[i : i + chunk] for i in range(0, len(text), chunk)] or ["{}"]
    out = {"createOptions": parts[0]}
    for i, part in enumerate(parts[1:], start=1):
        out[f"createOptions{i:02d}"] = part
    return out


def chunk_keys(settings: Mapping[str, Any]) -> list[str]:
    """The createOptions keys of a module's `settings`, in chunk order (by suffix number)."""
    keys = []
    for key in settings:
        m = CHUNK_KEY.match(key)
        if m:
            keys.append((int(m.group(1) or 0), key))
    return [key for _, key in sorted(keys)]


def _create_options_text(settings: Mapping[str, Any]) -> str | None:
    keys = chunk_keys(settings)
    if not keys:
        return None
    pieces = []
    for key in keys:
        value = settings[key]
        if isinstance(value, Mapping):  # a template-style object rather than a string
            value = json.dumps(value, separators=(",", ":"), sort_keys=True)
        pieces.append(str(value))
    return "".join(pieces)


def parse_create_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Re-join `createOptions`, `createOptions01`, ... of a module's settings and parse them.

    Args:
        settings: a module's `settings` dict.

    Returns:
        The Docker create options as a dict (`{}` when there are none).

    Raises:
        InvalidManifest: the joined text is not a JSON object.
    """
    text = _create_options_text(settings)
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidManifest(
            [f"createOptions is not valid JSON ({e.msg} at character {e.pos}); build it with "
             "split_create_options(dict) instead of by hand"]
        ) from None
    if not isinstance(value, dict):
        raise InvalidManifest([f"createOptions must be a JSON object, got {type(value).__name__}"])
    return value
