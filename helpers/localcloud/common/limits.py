"""What a device or a client may send the local cloud: every limit in one place, with its source.

IoT Hub's documented limits where it has them (twin sizes and depth, identity ids, message size),
Edge Impulse's where it has them, and ours (named so) where neither documents a figure. Every
refusal is a `LimitError` (an `ApiError`: a 4xx naming the limit and how to stay under it), and is
counted by kind (`refusal_counts()`, served in `/api/hub/stats`).

    check_json_text(raw, "body")                  # depth and NaN/Infinity, before anything parses it
    check_twin_section(tags, "tags")              # size, depth, finite numbers of a twin document
    DEVICE_ID_RE.fullmatch(device_id)             # IoT Hub's id characters

Sources: IoT Hub "Understand and use device twins" (twin sizes, depth, size formula), the service
SDK's `Twin.device_id` (id characters), "IoT Hub quotas and throttling" (256 KB device-to-cloud
message). The figures marked "ours" bound what the stand-in keeps for one client.
"""
from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from typing import Any

from helpers.localcloud.common.errors import ApiError

# ---------------------------------------------------------------- IoT Hub twins (documented)
#: the size of each twin section, computed as IoT Hub does (`twin_size`)
TWIN_SECTION_BYTES = {"tags": 8 * 1024, "desired": 32 * 1024, "reported": 32 * 1024}
#: nested objects (and arrays) below a section's root
TWIN_MAX_DEPTH = 10

# ---------------------------------------------------------------- identities (IoT Hub, documented)
#: device and module ids: up to 128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '
ID_CHARS = r"A-Za-z0-9\-:.+%_#*?!(),=@;$'"
DEVICE_ID_RE = re.compile(rf"[{ID_CHARS}]{{1,128}}")
MODULE_ID_RE = DEVICE_ID_RE
#: configuration ids: lower-case letters, digits and - : + % _ # * ? ! ( ) , = @ ; $ ' (up to 128)
CONFIGURATION_ID_RE = re.compile(r"[a-z0-9\-:+%_#*?!(),=@;$']{1,128}")

# ---------------------------------------------------------------- MQTT (IoT Hub documented, and ours)
MQTT_MAX_MESSAGE_BYTES = 256 * 1024  # IoT Hub: a device-to-cloud message
#: QoS 1 messages sent to one session and not acknowledged (ours; IoT Hub queues at most 50
#: cloud-to-device messages per device and documents no in-flight figure)
MQTT_MAX_INFLIGHT = 100
MQTT_MAX_INFLIGHT_BYTES = 4 * 1024 * 1024  # ours: the bytes of those messages
MQTT_MAX_QUEUED_BYTES = 1024 * 1024  # ours: bytes written to a client that it has not read yet

# ---------------------------------------------------------------- requests (ours)
#: JSON nesting in any request body (the twin rules are stricter: TWIN_MAX_DEPTH)
MAX_JSON_DEPTH = 32
#: JSON texts longer than this are checked and parsed in a worker thread, not on the event loop
SCAN_ON_LOOP_BYTES = 16 * 1024
#: characters of an IoT Hub query, target condition or metric query
MAX_QUERY_CHARS = 8 * 1024
#: pixels of an uploaded image, read from its header before it is decoded (6000 x 4000)
MAX_IMAGE_PIXELS = 24_000_000
#: the largest integer id a path or query parameter may carry (SQLite's INTEGER)
MAX_INT_PARAM = 2**63 - 1


class LimitError(ApiError):
    """A request over a limit: 400 (or 413 for a size), naming the limit; counted by `kind`."""

    def __init__(self, kind: str, message: str, field: str | None = None, status: int = 400):
        code = "MessageTooLarge" if status == 413 else "ArgumentInvalid"
        super().__init__(status, message, field, code)
        self.kind = kind
        count_refusal(kind)


# ---------------------------------------------------------------- counters
_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


def count_refusal(kind: str) -> None:
    """Count one refusal of `kind` (`twin_depth`, `mqtt_inflight`, `body_size`...)."""
    with _counts_lock:
        _counts[kind] += 1


def refusal_counts() -> dict[str, int]:
    """How many requests, messages and sessions each limit refused since the service started."""
    with _counts_lock:
        return dict(sorted(_counts.items()))


def check_query_length(text: str, field: str = "query") -> str:
    """Refuse an IoT Hub query (or condition) over `MAX_QUERY_CHARS` before it is parsed."""
    if len(text) > MAX_QUERY_CHARS:
        raise LimitError("query_length", f"{field}: {len(text)} characters, over the {MAX_QUERY_CHARS} character limit "
                                         "for a query; select fewer devices per query or simplify the condition", field)
    return text


# ---------------------------------------------------------------- JSON text
# one token outside strings, or a whole string: a JSON string, or an unterminated one running to the
# end, so it always matches; the possessive quantifiers never backtrack. Each byte is read once
# (a string that ends nowhere, `"\"\"\"...`, is not rescanned from each quote: no quadratic case).
_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)|[\[\]{}]|NaN|-?Infinity', re.S)


def _nonfinite(field: str, tok: bytes) -> LimitError:
    return LimitError("json_nonfinite", f"{field}: {tok.decode()} is not a JSON number; send finite numbers (or null)",
                      field)


def check_json_text(raw: bytes | str, field: str = "body", max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON text nested deeper than `max_depth` or holding NaN/Infinity, before it is parsed.

    A linear scan outside strings (no recursion, whatever the input), token by token in Python so
    a long scan in a worker thread lets the event loop run; text with neither enough brackets to
    nest that deep nor the words NaN/Infinity is passed without a scan. Malformed JSON passes
    here and fails in the parser.

    Raises:
        LimitError: 400 naming the depth limit, or the non-finite number.
    """
    data = raw.encode() if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= max_depth and b"NaN" not in data and b"Infinity" not in data:
        return
    depth = 0
    for m in _TOKEN.finditer(data):
        tok = m.group()
        first = tok[:1]
        if first == b'"':
            continue
        if first in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise LimitError("json_depth", f"{field}: JSON nested deeper than {max_depth} levels; flatten it",
                                 field)
        elif first in (b"]", b"}"):
            depth -= 1
        else:
            raise _nonfinite(field, tok)


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON number", name, 0)


def loads(raw: bytes | str, field: str = "body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` within the limits: `LimitError` past `max_depth` or for NaN/Infinity (checked
    first, so no recursive parser meets them), `json.JSONDecodeError` for malformed JSON."""
    check_json_text(raw, field, max_depth)
    return json.loads(raw, parse_constant=_no_constant)


def parse_json(raw: bytes | str, field: str = "body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text parsed within the limits (`loads`); 400 naming `field` when malformed."""
    try:
        return loads(raw, field, max_depth)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON in {field}: {exc}", field) from None


# ---------------------------------------------------------------- twin documents
def _str_size(s: str) -> int:
    return len(s) - len(_CONTROL.findall(s)) if _CONTROL.search(s) else len(s)


def walk_twin(doc: Any, field: str, max_depth: int = TWIN_MAX_DEPTH, stop_above: int | None = None) -> int:
    """IoT Hub's size of a twin section (keys and string values by character, numbers 8, booleans 4).

    Iterative: a document of any depth is measured without recursion, and refused at `max_depth`;
    the walk stops once the size passes `stop_above` (the answer is then over it).

    Raises:
        LimitError: a level below `max_depth`, or a number that is NaN or infinite.
    """
    size = 0
    stack: list[tuple[Any, int, str]] = [(doc, 0, field)]
    while stack:
        if stop_above is not None and size > stop_above:
            break
        value, depth, where = stack.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                raise LimitError("twin_depth", f"{where}: twin documents may nest {max_depth} levels (IoT Hub's limit); "
                                               "flatten it", field)
            for k, v in value.items():
                size += _str_size(str(k))
                stack.append((v, depth + 1, f"{where}.{k}"))
        elif isinstance(value, list):
            if depth > max_depth:
                raise LimitError("twin_depth", f"{where}: twin documents may nest {max_depth} levels (IoT Hub's limit); "
                                               "flatten it", field)
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, bool):
            size += 4
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise LimitError("twin_nonfinite", f"{where}: {value} is not a JSON number; send finite numbers", field)
            size += 8
        elif isinstance(value, str):
            size += _str_size(value)
    return size


def check_twin_section(doc: Any, section: str, field: str | None = None) -> None:
    """Refuse a twin section (`tags`, `desired`, `reported`) over IoT Hub's size, depth or number rules.

    Raises:
        LimitError: 413 over the section's size, 400 too deep or a non-finite number.
    """
    where = field or section
    limit = TWIN_SECTION_BYTES[section]
    size = walk_twin(doc, where, stop_above=limit)
    if size > limit:
        raise LimitError(f"twin_{section}_size", f"{where}: over IoT Hub's {limit // 1024} KB limit for a twin's "
                                                 f"{section} (at least {size} bytes); keep less in it", where, status=413)


# ---------------------------------------------------------------- logs
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    r"""`text` with every control character (newlines too) written as an escape (`\n`, `\x00`)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


__all__ = [
    "TWIN_SECTION_BYTES", "TWIN_MAX_DEPTH", "DEVICE_ID_RE", "MODULE_ID_RE", "CONFIGURATION_ID_RE",
    "MQTT_MAX_MESSAGE_BYTES", "MQTT_MAX_INFLIGHT", "MQTT_MAX_INFLIGHT_BYTES", "MQTT_MAX_QUEUED_BYTES",
    "MAX_JSON_DEPTH", "SCAN_ON_LOOP_BYTES", "MAX_QUERY_CHARS", "MAX_IMAGE_PIXELS", "MAX_INT_PARAM",
    "LimitError", "count_refusal", "refusal_counts", "check_query_length", "check_json_text", "loads", "parse_json", "walk_twin",
    "check_twin_section", "escape_controls",
]
