"""What the hub's routes read from a request besides its body: If-Match, identity ids, and running store work off the loop."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import DEVICE_ID_RE, MODULE_ID_RE, count_refusal

T = TypeVar("T")
_ID_RULE = "up to 128 ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ ' (IoT Hub's rule)"


def if_match(request: Request) -> str | None:
    """The If-Match header's etag (quotes and a weak `W/` prefix removed), or None."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def check_etag(given: str | None, current: str, what: str) -> None:
    """412 PreconditionFailed unless `given` is None, `*` or `current`."""
    if given not in (None, "*") and given != current:
        raise ApiError(412, f"If-Match does not match the {what}'s etag; read it again", "If-Match", "PreconditionFailed")


def check_device_id(device_id: str) -> None:
    """400 for a device id IoT Hub would refuse."""
    if not DEVICE_ID_RE.fullmatch(device_id):
        count_refusal("identity_id")
        raise ApiError(400, f"deviceId {device_id[:40]!r} is invalid: use {_ID_RULE}", "deviceId", "ArgumentInvalid")


def check_module_id(module_id: str, writing: bool) -> None:
    """400 for a module id IoT Hub would refuse (`$` ids are the IoT Edge system modules' when writing)."""
    if not MODULE_ID_RE.fullmatch(module_id):
        count_refusal("identity_id")
        raise ApiError(400, f"moduleId {module_id[:40]!r} is invalid: use {_ID_RULE}", "moduleId", "ArgumentInvalid")
    if writing and module_id.startswith("$"):
        raise ApiError(400, f"module ids starting with '$' ({module_id!r}) are reserved for IoT Edge's system modules, "
                            "which the hub creates with the device", "moduleId", "ArgumentInvalid")


def check_body_id(body_value: str | None, url_value: str, field: str) -> None:
    """400 when a body's id differs from the URL's."""
    if body_value not in (None, url_value):
        raise ApiError(400, f"body {field} {body_value!r} differs from the URL's {url_value!r}", field, "ArgumentInvalid")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking store work in the thread pool (SQLite with fsync must not block the event loop)."""
    return await run_in_threadpool(fn, *args)
