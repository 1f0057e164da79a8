"""The local cloud's error answer: an HTTP status, a message that says how to fix it, the field to blame."""
from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

from helpers.errors import ServiceError

#: HTTP 507 Insufficient Storage (RFC 4918): the server cannot store what the request needs
INSUFFICIENT_STORAGE = 507


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
                             409: "Conflict", 412: "PreconditionFailed", 413: "PayloadTooLarge",
                             INSUFFICIENT_STORAGE: "InsufficientStorage"}.get(status, "Error")
        self.error_code = error_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": self.message, "code": self.code, "field": self.field}


def error_from_service_error(exc: ServiceError) -> ApiError:
    """The `ApiError` of a `helpers.errors.ServiceError` (its status, message and field)."""
    return ApiError(exc.status or 500, str(exc), exc.field)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the user's quota) is full: `OSError` ENOSPC or EDQUOT, SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def disk_full_error(exc: BaseException, state_dir: Path) -> ApiError:
    """The 507 answer to a write the full disk refused (the handler has removed what it wrote)."""
    said = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ApiError(INSUFFICIENT_STORAGE, f"the local cloud's disk is full ({said}): nothing of this request was stored; "
                                          f"free space on the filesystem of {state_dir} and send it again")
