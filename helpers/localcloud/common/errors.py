"""The local cloud's error answer: an HTTP status, a message that says how to fix it, the field to blame."""
from __future__ import annotations

from typing import Any

from helpers.errors import ServiceError


class ApiError(Exception):
    """An error answer: HTTP status, message (how to fix), the request field to blame.

    `code` is the service's error code (IoT Hub's `ErrorCode`, e.g. `DeviceNotFound`); `error_code`
    IoT Hub's numeric one where it has one (direct methods: 404103 DeviceNotOnline); `headers` go
    out with the answer (429's `Retry-After`).
    """

    def __init__(self, status: int, message: str, field: str | None = None, code: str | None = None,
                 error_code: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                             409: "Conflict", 412: "PreconditionFailed", 413: "PayloadTooLarge"}.get(status, "Error")
        self.error_code = error_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": self.message, "code": self.code, "field": self.field}


def error_from_service_error(exc: ServiceError) -> ApiError:
    """The `ApiError` of a `helpers.errors.ServiceError` (its status, message and field)."""
    return ApiError(exc.status or 500, str(exc), exc.field)
