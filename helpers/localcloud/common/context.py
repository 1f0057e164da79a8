"""The request context every handler reads (one per service process), and request-body and file plumbing."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from helpers.config import Secret, parse_connection_string
from helpers.localcloud.common.db import Store
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import SCAN_ON_LOOP_BYTES, parse_json


@dataclass
class Context:
    """Everything a request handler needs; one per service process.

    `hub_hosts` are every name the hub answers to (its HTTPS host, the bare address devices and
    MQTT use, the plain-HTTP listener); a SAS token must name one of them.
    """

    workspace: Path
    store: Store
    files: Path
    service_key: Secret
    service_host: str
    studio_api_key: Secret
    max_body_bytes: int
    hub_hosts: tuple[str, ...] = ()

    def tmp_path(self) -> Path:
        """A fresh temporary file name under files/tmp (same filesystem as the final place)."""
        d = self.files / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{uuid.uuid4().hex}.part"


def ctx_of(request: Request) -> Context:
    """The service's `Context` (`app.state.ctx`)."""
    return request.app.state.ctx


def write_file_durable(path: Path, data: bytes) -> None:
    """Write `data` to `path` and fsync it (the caller renames it into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory (so a rename into it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def json_body(request: Request, required: bool = True) -> Any:
    """The request body parsed as JSON (400 naming `body` when malformed, too deep or holding NaN)."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "the request body is empty; send a JSON object", "body")
        return None
    if len(raw) > SCAN_ON_LOOP_BYTES:  # a long text is checked and parsed off the event loop
        return await run_in_threadpool(parse_json, raw, "body")
    return parse_json(raw, "body")


def service_key_from_cs(cs: Secret) -> tuple[str, Secret]:
    """(HostName, SharedAccessKey) of a service connection string."""
    parts = parse_connection_string(cs)
    return parts["HostName"], Secret(parts["SharedAccessKey"], "service_key")
