"""Who is calling: a hub SAS token checked as IoT Hub checks it (the service's policy key, or a device's key)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request

from helpers.errors import ServiceError, Unauthorized
from helpers.localcloud.common.context import Context, ctx_of
from helpers.localcloud.common.errors import ApiError, error_from_service_error
from helpers.protocol.sas import ParsedToken, parse_sas_token, verify_sas_token

SERVICE_POLICY = "iothubowner"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the hub owner (`service`), one device, or a studio API key holder."""

    kind: str  # service | device | studio
    device_id: str | None = None
    role: str | None = None  # studio keys: management | device
    model_version: int | None = None  # a device key's model version (None: ingest only)


def _resource_on_this_hub(ctx: Context, sr: str) -> str:
    """The part of a token's resource after this hub's host name (`devices/<id>`, or `` for the hub).

    A token signed for another hub (another host, or this host on another port) is refused even
    when its key matches: a token is only valid for the hub it names, as on Azure IoT Hub.
    """
    host, _, rest = sr.partition("/")
    if host.lower() not in (ctx.hub_hosts or (ctx.service_host.lower(),)):  # issue 13: every name of this hub
        raise Unauthorized(f"the SAS token's resource (sr) names host {host[:80]!r}, not this hub {ctx.service_host!r}: sign "
                           "tokens for the HostName of this hub's connection strings", 401, "Authorization")
    return rest.rstrip("/")


def _sas_principal(ctx: Context, header: str) -> Principal:
    try:
        parsed: ParsedToken = parse_sas_token(header)
        resource = _resource_on_this_hub(ctx, parsed.sr)
        if parsed.skn:
            if parsed.skn != SERVICE_POLICY:
                raise Unauthorized(f"unknown shared access policy {parsed.skn!r}; use {SERVICE_POLICY}", 401, "Authorization")
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
    """Dependency: the service, or the device `device_id` itself (403 for another device)."""
    p = hub_principal(request)
    if p.kind == "device" and p.device_id != device_id:
        raise ApiError(403, f"device {p.device_id!r} may not access device {device_id!r}", "deviceId")
    return p
