"""IoT Hub's error answer: `{"Message": "ErrorCode:<Code>;<text>", "ExceptionMessage": ...}` and `iothub-errorcode`.

The service SDK raises its own `HttpOperationError` from this shape. Every error on a hub path
(an `ApiError` from a handler or the store, a request-validation error, an unknown path, an
unexpected exception) leaves through `azure_error_response`, called by the app's one handler.
"""
from __future__ import annotations

import datetime as _dt
import math
import uuid
from typing import Any

from fastapi.responses import JSONResponse

from helpers.localcloud.common.errors import ApiError

_AZURE_CODES = {400: "ArgumentInvalid", 401: "IotHubUnauthorizedAccess", 403: "IotHubUnauthorizedAccess",
                404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict", 412: "PreconditionFailed",
                413: "MessageTooLarge", 429: "ThrottlingException", 500: "ServerError", 503: "ServiceUnavailable"}
_GENERIC = {"Error", "BadRequest", "NotFound", "Conflict", "Unauthorized", "Forbidden", "PayloadTooLarge"}


def azure_error_body(status: int, code: str, message: str, field: str | None = None,
                     error_code: int | None = None) -> dict[str, Any]:
    """IoT Hub's error body; the legacy keys (`error`, `code`, `field`) ride along for local clients."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    body: dict[str, Any] = {"Message": f"ErrorCode:{code};{message}",
                            "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{stamp}",
                            "error": message, "code": code, "field": field}
    if error_code is not None:  # direct methods carry IoT Hub's numeric code too (404103 DeviceNotOnline)
        body["errorCode"] = error_code
    return body


def azure_error_response(exc: ApiError) -> JSONResponse:
    """The `JSONResponse` of an `ApiError` on a hub path (status, body, `iothub-errorcode`, Retry-After)."""
    code = _AZURE_CODES.get(exc.status, "GenericError") if not exc.code or exc.code in _GENERIC else exc.code
    headers = {"iothub-errorcode": code, **exc.headers}
    return JSONResponse(azure_error_body(exc.status, code, exc.message, exc.field, exc.error_code), status_code=exc.status,
                        headers=headers)


def is_hub_path(path: str) -> bool:
    """True for the IoT Hub API's paths (everything but the studio's `/api/...` and `/v1/api/...` and the OpenAPI document)."""
    return not (path.startswith(("/api/", "/v1/")) or path == "/openapi.json")


class Throttled(ApiError):
    """429 with `Retry-After` (seconds)."""

    def __init__(self, retry_after: float):
        super().__init__(429, f"the hub's request rate limit was exceeded; retry after {retry_after:.1f} s "
                              "(configure it with --throttle-rps / EDGELOOP_HUB_THROTTLE_RPS)", None, "ThrottlingException",
                         headers={"Retry-After": str(max(1, math.ceil(retry_after)))})
