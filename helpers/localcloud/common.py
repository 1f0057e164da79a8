"""Pieces the hub and studio routers share: the service context, errors, authentication."""
from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from helpers.config import Secret, parse_connection_string
from helpers.errors import ServiceError, Unauthorized
from helpers.localcloud.db import Store
from helpers.localcloud.keys import endpoint_access, key_role
from helpers.protocol.sas import ParsedToken, parse_sas_token, verify_sas_token

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$")


class ApiError(Exception):
    """An error answer: HTTP status, message (how to fix), the request field to blame."""

    def __init__(self, status: int, message: str, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                             409: "Conflict", 412: "PreconditionFailed", 413: "PayloadTooLarge"}.get(status, "Error")

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": self.message, "code": self.code, "field": self.field}


def error_from_service_error(exc: ServiceError) -> ApiError:
    return ApiError(exc.status or 500, str(exc), exc.field)


@dataclass
class Context:
    """Everything a request handler needs; one per service process."""

    workspace: Path
    store: Store
    files: Path
    service_key: Secret
    service_host: str
    studio_api_key: Secret
    max_body_bytes: int

    def tmp_path(self) -> Path:
        """A fresh temporary file name under files/tmp (same filesystem as the final place)."""
        d = self.files / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{uuid.uuid4().hex}.part"


def write_file_durable(path: Path, data: bytes) -> None:
    """Write `data` to `path` and fsync it (the caller renames it into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the hub owner (`service`), one device, or a studio API key holder."""

    kind: str  # service | device | studio
    device_id: str | None = None
    role: str | None = None  # studio keys: management | device
    model_version: int | None = None  # a device key's model version (None: ingest only)


def ctx_of(request: Request) -> Context:
    return request.app.state.ctx


def _resource_on_this_hub(ctx: Context, sr: str) -> str:
    """The part of a token's resource after this hub's host name (`devices/<id>`, or `` for the hub).

    A token signed for another hub (another host, or this host on another port) is refused even
    when its key matches: a token is only valid for the hub it names, as on Azure IoT Hub.
    """
    host, _, rest = sr.partition("/")
    if host.lower() not in (getattr(ctx, "hub_hosts", None) or (ctx.service_host.lower(),)):  # issue 13: every name of this hub
        raise Unauthorized(f"the SAS token's resource (sr) names host {host[:80]!r}, not this hub {ctx.service_host!r}: sign "
                           "tokens for the HostName of this hub's connection strings", 401, "Authorization")
    return rest.rstrip("/")


def _sas_principal(ctx: Context, header: str) -> Principal:
    try:
        parsed: ParsedToken = parse_sas_token(header)
        resource = _resource_on_this_hub(ctx, parsed.sr)
        if parsed.skn:
            if parsed.skn != "iothubowner":
                raise Unauthorized(f"unknown shared access policy {parsed.skn!r}; use iothubowner", 401, "Authorization")
            if resource:
                raise Unauthorized(f"a service token's resource (sr) is the hub's host {ctx.service_host!r} alone, "
                                   f"not {parsed.sr[:120]!r}", 401, "Authorization")
            verify_sas_token(parsed, [ctx.service_key])
            return Principal("service")
        m = re.match(r"^devices/([^/]+)(?:/modules/[^/]+)?$", resource)
        if not m:
            raise Unauthorized("device SAS token resource (sr) must be <host>/devices/<deviceId>", 401, "Authorization")
        device_id = m.group(1)
        with ctx.store.read() as conn:
            row = conn.execute("SELECT primary_key, secondary_key, status FROM devices WHERE device_id=?", (device_id,)).fetchone()
        if row is None:
            raise Unauthorized(f"device {device_id!r} is not registered in this hub; create it and use its connection string", 401, "Authorization")
        if row["status"] != "enabled":
            raise Unauthorized(f"device {device_id!r} is disabled; enable it in the hub", 401, "Authorization")
        verify_sas_token(parsed, [row["primary_key"], row["secondary_key"]])
        return Principal("device", device_id)
    except ServiceError as exc:
        raise error_from_service_error(exc) from None


def hub_principal(request: Request) -> Principal:
    """The caller of a hub endpoint from its SAS token (401 when missing or wrong)."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "missing Authorization header: send a SAS token (SharedAccessSignature sr=...&sig=...&se=...)", "Authorization")
    return _sas_principal(ctx_of(request), header)


def require_service(request: Request) -> Principal:
    """Dependency: only the hub owner (service SAS token)."""
    p = hub_principal(request)
    if p.kind != "service":
        raise ApiError(403, "this call needs the service connection string (iothubowner), not a device credential", "Authorization")
    return p


def require_device_or_service(request: Request, device_id: str) -> Principal:
    """The service, or the device `device_id` itself (403 for another device)."""
    p = hub_principal(request)
    if p.kind == "device" and p.device_id != device_id:
        raise ApiError(403, f"device {p.device_id!r} may not access device {device_id!r}", "deviceId")
    return p


def require_studio(request: Request) -> Principal:
    """Dependency: a studio call with a valid `x-api-key`, allowed for the key's role.

    The management key may call everything. A device key (`helpers.localcloud.keys`) may call
    only the endpoints marked with `device_access` (403 elsewhere), and a `model` endpoint with
    a `version` path parameter only for the version its key names.
    """
    key = request.headers.get("x-api-key")
    if not key:
        raise ApiError(401, "missing x-api-key header: send the studio API key (credentials.json studio_api_key)", "x-api-key")
    role = key_role(key, ctx_of(request).studio_api_key)
    if role is None:
        raise ApiError(401, "wrong x-api-key: use the studio API key from the workspace's credentials.json", "x-api-key")
    if role.role == "management":
        return Principal("studio", role="management")
    access = endpoint_access(request.scope.get("endpoint"))
    if access is None or (access == "model" and role.model_version is None):
        raise ApiError(403, f"a device key may only upload samples{' and download its model' if role.model_version else ''}; "
                            f"{request.method} {request.url.path} needs the studio's management API key", "x-api-key")
    version = request.path_params.get("version")
    if access == "model" and version is not None and str(version) != str(role.model_version):
        raise ApiError(403, f"this device key may download model version {role.model_version} only, not {version}; "
                            "deploy the runner with the key for the version it runs (studio.device_key(version))", "x-api-key")
    return Principal("studio", role="device", model_version=role.model_version)


def require_any(request: Request) -> Principal:
    """Dependency for service-wide endpoints (health, OpenAPI): a studio key or a hub SAS token."""
    if request.headers.get("x-api-key"):
        return require_studio(request)
    if request.headers.get("authorization"):
        return hub_principal(request)
    raise ApiError(401, "authentication required: send x-api-key (studio) or Authorization (hub SAS token)", "Authorization")


async def json_body(request: Request, required: bool = True) -> Any:
    """The request body parsed as JSON (400 naming `body` when malformed)."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "the request body is empty; send a JSON object", "body")
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON body: {exc}", "body") from None


def service_key_from_cs(cs: Secret) -> tuple[str, Secret]:
    parts = parse_connection_string(cs)
    return parts["HostName"], Secret(parts["SharedAccessKey"], "service_key")
