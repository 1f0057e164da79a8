"""The `azure-iot-hub` SDK's failures as `helpers.errors` classes, with IoT Hub's error code and a hint."""
from __future__ import annotations

from typing import Any

from helpers.config import mask
from helpers.errors import Conflict, Forbidden, NotFound, ServiceError, ServiceUnavailable, Unauthorized

_BY_STATUS: dict[int, type[ServiceError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 412: Conflict,
                                             429: ServiceUnavailable, 502: ServiceUnavailable, 503: ServiceUnavailable,
                                             504: ServiceUnavailable}
_HINTS = {401: "check the hub connection string (IOTHUB_CONNECTION_STRING, or the workspace's credentials.json)",
          403: "the connection string's policy lacks a permission; use an iothubowner connection string",
          412: "the object changed since it was read: read it again for its current etag",
          429: "the hub throttled the calls and the retries ran out; slow down or raise the hub's tier"}


def http_error(what: str, exc: Any) -> ServiceError:
    """The `helpers.errors` class of an `HttpOperationError`'s status; `.error_code` is IoT Hub's code."""
    resp = getattr(exc, "response", None)
    status = getattr(resp, "status_code", 0) or 0
    code, message = "", ""
    if resp is not None:
        code = resp.headers.get("iothub-errorcode", "") if resp.headers is not None else ""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            raw = str(body.get("Message") or body.get("message") or "")
            if raw.startswith("ErrorCode:"):
                head, _, message = raw.partition(";")
                code = code or head[len("ErrorCode:"):]
            else:
                message = raw
        if not message:
            message = (getattr(resp, "text", "") or getattr(resp, "reason", "") or "")[:300]
    cls = _BY_STATUS.get(status, ServiceError)
    hint = _HINTS.get(status)
    text = f"{what}: HTTP {status}{' ' + code if code else ''}: {message}".rstrip(": ")
    if hint:
        text += f" ({hint})"
    err = cls(mask(text), status, None)
    err.error_code = code  # type: ignore[attr-defined]
    return err


def unreachable_error(what: str, host: str, exc: Exception, local: bool) -> ServiceUnavailable:
    """A `ClientRequestError` (the hub at `host` cannot be reached) as `ServiceUnavailable` saying what to check."""
    hint = ("is the local cloud running? `python -m helpers.localcloud start --workspace ...`" if local
            else "check the network and the HostName of IOTHUB_CONNECTION_STRING")
    inner = getattr(exc, "inner_exception", None) or exc
    return ServiceUnavailable(mask(f"{what}: the hub at https://{host} cannot be reached ({type(inner).__name__}); {hint}"), 0)


__all__ = ["http_error", "unreachable_error"]
