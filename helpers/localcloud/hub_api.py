"""The IoT Hub service REST API (api-version 2021-04-12) as the official `azure-iot-hub` SDK calls it.

Served over HTTPS on the workspace's hub address (see `tls.py`) and, for the simulated devices'
HTTP agent, on the plain local listener. Shapes, status codes and error bodies are Azure's, so
`IoTHubRegistryManager` / `IoTHubConfigurationManager` work unmodified and raise their own
`HttpOperationError` on errors:

- device identities (`/devices/{id}`): symmetric keys (`sas`), self-signed X.509 (`selfSigned`,
  thumbprints), CA-signed (`certificateAuthority`); the IoT Edge capability (an IoT Edge device
  gets its `$edgeAgent` and `$edgeHub` modules); status; etags and If-Match; `GET /devices`;
- module identities (`/devices/{id}/modules/{mid}`) and module twins (`/twins/{id}/modules/{mid}`);
- device twins (`/twins/{id}`): tags, desired, reported, `$version`s, etag, If-Match;
- `POST /devices/{id}/applyConfigurationContent`: the device's modulesContent, written into
  its module twins at once;
- configurations (`/configurations/{id}`, `testQueries`): at-scale IoT Edge deployments, applied
  by `hub_deploy` on its evaluation cycle, with IoT Hub's system metrics and custom metric queries;
- `POST /devices/query`: the IoT Hub query language subset of `condition.py`, with
  `x-ms-max-item-count` / `x-ms-continuation` paging;
- `/statistics/devices`, `/statistics/service`;
- errors as `{"Message": "ErrorCode:<Code>;<text>", "ExceptionMessage": ...}` with the
  `iothub-errorcode` header; throttling (off by default) answers 429 with `Retry-After`.

Devices and modules talk to the hub over MQTT (`helpers.localcloud.mqtt`); with their own SAS
token they may also read their twin and get or create their own module identities here (IoT
Hub's device-scoped API, which IoT Edge uses).
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from helpers.errors import InvalidManifest
from helpers.localcloud import hub_store
from helpers.localcloud.common import (
    DEVICE_ID_RE,
    ApiError,
    ctx_of,
    hub_principal,
    json_body,
    require_device_or_service,
    require_service,
)
from helpers.localcloud.condition import ConditionError, parse_condition, parse_query
from helpers.localcloud.db import dumps, loads
from helpers.localcloud.hub_deploy import (
    MAX_CONFIGURATIONS,
    DeploymentTiming,
    execute,
    forget_configuration,
    metrics_json,
    write_content,
)
from helpers.localcloud.hub_store import CONNECTED_WINDOW_S, iso, merge_patch, new_etag, now_iso
from helpers.protocol.sas import new_key

API_VERSION = "2021-04-12"
FAILED_RUNTIME = {"failed", "backoff"}
THUMBPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
MODULE_ID_RE = re.compile(r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$")
MAX_PAGE = 1000
DEFAULT_PAGE = 100


# ---------------------------------------------------------------- errors in IoT Hub's shape
def azure_error_body(status: int, code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """IoT Hub's error body; the legacy keys (`error`, `code`, `field`) ride along for local clients."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return {"Message": f"ErrorCode:{code};{message}",
            "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{stamp}",
            "error": message, "code": code, "field": field}


_AZURE_CODES = {400: "ArgumentInvalid", 401: "IotHubUnauthorizedAccess", 403: "IotHubUnauthorizedAccess",
                404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict", 412: "PreconditionFailed",
                413: "MessageTooLarge", 429: "ThrottlingException", 500: "ServerError", 503: "ServiceUnavailable"}


def azure_error_response(exc: ApiError) -> JSONResponse:
    """The `JSONResponse` of an `ApiError` on a hub path (status, body, `iothub-errorcode`, Retry-After)."""
    generic = {"Error", "BadRequest", "NotFound", "Conflict", "Unauthorized", "Forbidden", "PayloadTooLarge"}
    code = _AZURE_CODES.get(exc.status, "GenericError") if not exc.code or exc.code in generic else exc.code
    headers = {"iothub-errorcode": code, **(getattr(exc, "headers", None) or {})}
    return JSONResponse(azure_error_body(exc.status, code, exc.message, exc.field), status_code=exc.status, headers=headers)


def is_hub_path(path: str) -> bool:
    """True for the IoT Hub API's paths (everything but the studio's `/api/...` and the OpenAPI document)."""
    return not (path.startswith("/api/") or path == "/openapi.json")


class Throttled(ApiError):
    """429 with `Retry-After` (seconds)."""

    def __init__(self, retry_after: float):
        super().__init__(429, f"the hub's request rate limit was exceeded; retry after {retry_after:.1f} s "
                              "(configure it with --throttle-rps / EDGELOOP_HUB_THROTTLE_RPS)", None, "ThrottlingException")
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


# ---------------------------------------------------------------- the hub's runtime (per service process)
class TokenBucket:
    """`rate` requests per second with bursts of `burst`; `take()` returns 0 or the seconds to wait."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = float(rate), max(1, int(burst))
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


@dataclass
class HubRuntime:
    """Per-process hub settings and counters (`app.state.hub`)."""

    timing: DeploymentTiming = field(default_factory=DeploymentTiming)
    throttle: TokenBucket | None = None
    evaluator: Any = None
    requests: int = 0
    throttled: int = 0

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "throttled": self.throttled,
                "throttle": None if self.throttle is None else {"rate": self.throttle.rate, "burst": self.throttle.burst},
                "deployment_timing": {"initial_delay_s": self.timing.initial_delay_s, "interval_s": self.timing.interval_s},
                "last_evaluation": iso(getattr(self.evaluator, "last_run", None))}


def runtime_of(request: Request) -> HubRuntime:
    rt = getattr(request.app.state, "hub", None)
    if rt is None:
        rt = request.app.state.hub = HubRuntime()
    return rt


_LEGACY_DEVICE_PATHS = re.compile(r"^/api/hub/stats$")


def throttle(request: Request) -> None:
    """Router dependency: count the call; 429 when the configured rate is exceeded (device calls exempt)."""
    rt = runtime_of(request)
    if _LEGACY_DEVICE_PATHS.match(request.url.path):
        return
    rt.requests += 1
    if rt.throttle is not None:
        wait = rt.throttle.take()
        if wait > 0:
            rt.throttled += 1
            raise Throttled(wait)


router = APIRouter(tags=["hub"], dependencies=[Depends(throttle)])


# ---------------------------------------------------------------- helpers
def _if_match(request: Request) -> str | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _check_id(device_id: str) -> None:
    if not DEVICE_ID_RE.match(device_id):
        raise ApiError(400, f"deviceId {device_id[:40]!r} is invalid: use up to 128 letters, digits and -._:", "deviceId",
                       "ArgumentInvalid")


async def _run(fn, *args):
    return await run_in_threadpool(fn, *args)


def _device_connected(row: Any, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if "connected" in row.keys() and row["connected"]:
        return True
    return row["last_report_at"] is not None and now - row["last_report_at"] <= CONNECTED_WINDOW_S


def _generation(row: Any) -> str:
    return str(int(hashlib.sha256(f"{row['device_id']}|{row['created_at']}".encode()).hexdigest()[:15], 16))


def _auth_json(row: Any, with_keys: bool) -> dict[str, Any]:
    kind = row["auth_type"] if "auth_type" in row.keys() and row["auth_type"] else "sas"
    sym = {"primaryKey": row["primary_key"] if with_keys and kind == "sas" else None,
           "secondaryKey": row["secondary_key"] if with_keys and kind == "sas" else None}
    x509 = {"primaryThumbprint": row["primary_thumbprint"] if kind == "selfSigned" else None,
            "secondaryThumbprint": row["secondary_thumbprint"] if kind == "selfSigned" else None}
    return {"symmetricKey": sym, "x509Thumbprint": x509, "type": kind}


def device_json(row: Any, with_keys: bool = True, now: float | None = None) -> dict[str, Any]:
    """A device identity in IoT Hub's shape (`Device` in the service SDK)."""
    connected = _device_connected(row, now)
    out = {
        "deviceId": row["device_id"],
        "generationId": _generation(row),
        "etag": row["device_etag"],
        "connectionState": "Connected" if connected else "Disconnected",
        "status": row["status"],
        "statusReason": row["status_reason"] if "status_reason" in row.keys() else None,
        "connectionStateUpdatedTime": iso(row["last_report_at"]) or "0001-01-01T00:00:00Z",
        "statusUpdatedTime": "0001-01-01T00:00:00Z",
        "lastActivityTime": iso(row["last_report_at"]) or "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": _auth_json(row, with_keys),
        "capabilities": {"iotEdge": bool(row["edge"])},
        "createdTime": row["created_at"],
        "tags": loads(row["tags"], {}),
    }
    if row["edge"]:
        out["deviceScope"] = f"ms-azure-iot-edge://{row['device_id']}-{out['generationId']}"
    return out


def twin_json(row: Any) -> dict[str, Any]:
    """A device twin in IoT Hub's shape (`Twin` in the service SDK); also the query document."""
    kind = row["auth_type"] if "auth_type" in row.keys() and row["auth_type"] else "sas"
    out = {
        "deviceId": row["device_id"],
        "etag": row["etag"],
        "deviceEtag": row["device_etag"],
        "version": row["twin_version"],
        "status": row["status"],
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": "Connected" if _device_connected(row) else "Disconnected",
        "lastActivityTime": iso(row["last_report_at"]) or "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": kind,
        "x509Thumbprint": {"primaryThumbprint": row["primary_thumbprint"] if kind == "selfSigned" else None,
                           "secondaryThumbprint": row["secondary_thumbprint"] if kind == "selfSigned" else None},
        "capabilities": {"iotEdge": bool(row["edge"])},
        "tags": loads(row["tags"], {}),
        "properties": {
            "desired": {**loads(row["desired"], {}), "$version": row["desired_version"]},
            "reported": {**loads(row["reported"], {}), "$version": row["reported_version"]},
        },
    }
    configurations = loads(row["configurations"], {}) if "configurations" in row.keys() else {}
    if configurations:
        out["configurations"] = configurations
    return out


def validate_modules_content(content: Any, field: str = "modulesContent") -> dict[str, Any]:
    """Basic checks of an IoT Edge `modulesContent`, then the manifest module's own.

    Raises:
        ApiError: 400 naming the field that is wrong.
    """
    if not isinstance(content, dict):
        raise ApiError(400, f"{field} must be a JSON object with $edgeAgent and $edgeHub", field, "ArgumentInvalid")
    for system in ("$edgeAgent", "$edgeHub"):
        part = content.get(system)
        if not isinstance(part, dict) or not isinstance(part.get("properties.desired"), dict):
            raise ApiError(400, f"{field}.{system} must be an object with 'properties.desired' (build it with "
                                "helpers.protocol.manifest.build_manifest)", f"{field}.{system}", "ArgumentInvalid")
    modules = content["$edgeAgent"]["properties.desired"].get("modules", {})
    if not isinstance(modules, dict):
        raise ApiError(400, f"{field}.$edgeAgent.properties.desired.modules must be an object of module name -> spec",
                       f"{field}.$edgeAgent", "ArgumentInvalid")
    for name, spec in modules.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("settings"), dict) or not spec["settings"].get("image"):
            raise ApiError(400, f"module {name!r} needs settings.image", f"{field}.$edgeAgent.modules.{name}", "ArgumentInvalid")
    from helpers.protocol.manifest import validate_manifest

    try:
        validate_manifest(content)
    except InvalidManifest as exc:
        raise ApiError(400, str(exc), field, "ArgumentInvalid") from None
    return content


def _parse_auth(body: dict[str, Any], what: str) -> dict[str, Any]:
    """`{auth_type, primary_key, secondary_key, primary_thumbprint, secondary_thumbprint}` from an identity body."""
    auth = body.get("authentication") or {}
    if not isinstance(auth, dict):
        raise ApiError(400, f"{what}: authentication must be an object", "authentication", "ArgumentInvalid")
    kind = auth.get("type") or "sas"
    if kind not in ("sas", "selfSigned", "certificateAuthority"):
        raise ApiError(400, f"{what}: authentication.type {kind!r} is not sas, selfSigned or certificateAuthority "
                            "(the stand-in does not mirror type 'none')", "authentication.type", "ArgumentInvalid")
    sym = auth.get("symmetricKey") or {}
    x509 = auth.get("x509Thumbprint") or {}
    if not isinstance(sym, dict) or not isinstance(x509, dict):
        raise ApiError(400, f"{what}: symmetricKey and x509Thumbprint must be objects", "authentication", "ArgumentInvalid")
    out = {"auth_type": kind, "primary_key": None, "secondary_key": None, "primary_thumbprint": None, "secondary_thumbprint": None}
    if kind == "sas":
        for k, col in (("primaryKey", "primary_key"), ("secondaryKey", "secondary_key")):
            value = sym.get(k)
            if value:
                try:
                    if len(base64.b64decode(str(value), validate=True)) < 16:
                        raise ValueError("short")
                except (binascii.Error, ValueError):
                    raise ApiError(400, f"{what}: authentication.symmetricKey.{k} must be base64 of 16 to 64 bytes",
                                   f"authentication.symmetricKey.{k}", "ArgumentInvalid") from None
                out[col] = value
    elif kind == "selfSigned":
        for k, col in (("primaryThumbprint", "primary_thumbprint"), ("secondaryThumbprint", "secondary_thumbprint")):
            value = x509.get(k)
            if value:
                if not THUMBPRINT_RE.match(str(value)):
                    raise ApiError(400, f"{what}: x509Thumbprint.{k} must be 40 (SHA-1) or 64 (SHA-256) hex digits",
                                   f"authentication.x509Thumbprint.{k}", "ArgumentInvalid")
                out[col] = str(value).upper()
        if not out["primary_thumbprint"]:
            raise ApiError(400, f"{what}: self-signed X.509 authentication needs x509Thumbprint.primaryThumbprint",
                           "authentication.x509Thumbprint.primaryThumbprint", "ArgumentInvalid")
    return out


# ---------------------------------------------------------------- device identities
@router.put("/devices/{device_id}", summary="Create or update a device identity (If-Match to update)")
async def put_device(device_id: str, request: Request) -> dict[str, Any]:
    require_service(request)
    _check_id(device_id)
    body = await json_body(request, required=False) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "the device body must be a JSON object", "body", "ArgumentInvalid")
    if body.get("deviceId") not in (None, device_id):
        raise ApiError(400, f"body deviceId {body.get('deviceId')!r} differs from the URL's {device_id!r}", "deviceId", "ArgumentInvalid")
    caps = body.get("capabilities") or {}
    if not isinstance(caps, dict) or not isinstance(caps.get("iotEdge", False), bool):
        raise ApiError(400, "capabilities.iotEdge must be true or false", "capabilities.iotEdge", "ArgumentInvalid")
    status = body.get("status") or "enabled"
    if status not in ("enabled", "disabled"):
        raise ApiError(400, "status must be 'enabled' or 'disabled'", "status", "ArgumentInvalid")
    auth = _parse_auth(body, f"device {device_id!r}")
    has_auth = bool(body.get("authentication"))
    if_match = _if_match(request)
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            row = conn.execute("SELECT * FROM devices WHERE device_id=?", (device_id,)).fetchone()
            if row is None:
                keys = (auth["primary_key"] or new_key(), auth["secondary_key"] or new_key()) if auth["auth_type"] == "sas" \
                    else (new_key(), new_key())  # unused by X.509 devices; the columns are NOT NULL
                conn.execute(
                    "INSERT INTO devices(device_id, edge, status, status_reason, primary_key, secondary_key, auth_type,"
                    " primary_thumbprint, secondary_thumbprint, etag, device_etag, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                    (device_id, int(caps.get("iotEdge", False)), status, body.get("statusReason"), keys[0], keys[1],
                     auth["auth_type"], auth["primary_thumbprint"], auth["secondary_thumbprint"], new_etag(), new_etag(), now_iso()),
                )
            else:
                if if_match is None:
                    raise ApiError(409, f"a device with id {device_id!r} already exists; send If-Match (its etag or *) to update it",
                                   "deviceId", "DeviceAlreadyExists")
                if if_match != "*" and if_match != row["device_etag"]:
                    raise ApiError(412, "If-Match does not match the device's etag; read it again", "If-Match", "PreconditionFailed")
                kind = auth["auth_type"] if has_auth else row["auth_type"]
                pk = auth["primary_key"] or row["primary_key"]
                sk = auth["secondary_key"] or row["secondary_key"]
                pt = auth["primary_thumbprint"] if has_auth else row["primary_thumbprint"]
                st = auth["secondary_thumbprint"] if has_auth else row["secondary_thumbprint"]
                conn.execute(
                    "UPDATE devices SET edge=?, status=?, status_reason=?, primary_key=?, secondary_key=?, auth_type=?,"
                    " primary_thumbprint=?, secondary_thumbprint=?, device_etag=? WHERE device_id=?",
                    (int(caps.get("iotEdge", bool(row["edge"]))), status, body.get("statusReason"), pk, sk, kind, pt, st,
                     new_etag(), device_id),
                )
            row = hub_store.device_row(conn, device_id)
            if row["edge"]:
                hub_store.ensure_edge_modules(conn, device_id)
            return device_json(row, with_keys=True)

    return await _run(work)


@router.get("/devices", summary="List device identities (?top=N, at most 1000)")
def list_devices(request: Request, top: int | None = None) -> list[dict[str, Any]]:
    require_service(request)
    limit = MAX_PAGE if top is None or top < 1 or top > MAX_PAGE else top
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM devices ORDER BY device_id LIMIT ?", (limit,)).fetchall()
    return [device_json(r, with_keys=True) for r in rows]


@router.post("/devices/query", summary="Query twins with the IoT Hub query language (x-ms-max-item-count, x-ms-continuation)")
async def query_devices(request: Request) -> Response:
    require_service(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise ApiError(400, "the body must be {\"query\": \"SELECT * FROM devices WHERE ...\"}", "query", "ArgumentInvalid")
    text = body["query"]
    try:
        query = parse_query(text)
    except ConditionError as exc:
        raise ApiError(400, str(exc), "query", "ArgumentInvalid") from None
    raw_size = request.headers.get("x-ms-max-item-count")
    try:
        size = int(raw_size) if raw_size else DEFAULT_PAGE
    except ValueError:
        raise ApiError(400, f"x-ms-max-item-count {raw_size!r} is not an integer", "x-ms-max-item-count", "ArgumentInvalid") from None
    size = max(1, min(size, MAX_PAGE))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    offset = 0
    token = request.headers.get("x-ms-continuation")
    if token:
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
            offset = int(state["o"])
            if state["q"] != digest or offset < 0:
                raise ValueError("another query")
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "x-ms-continuation is not a token this hub gave for this query; start the query again",
                           "x-ms-continuation", "ArgumentInvalid") from None
    ctx = ctx_of(request)

    def work() -> list[dict[str, Any]]:
        with ctx.store.read() as conn:
            return execute(conn, query)

    items = await _run(work)
    page = items[offset:offset + size]
    headers = {"x-ms-item-type": query.item_type}
    if offset + size < len(items):
        headers["x-ms-continuation"] = base64.urlsafe_b64encode(json.dumps({"o": offset + size, "q": digest}).encode()).decode()
    return JSONResponse(page, headers=headers)


@router.get("/devices/{device_id}", summary="Get a device identity")
def get_device(device_id: str, request: Request) -> dict[str, Any]:
    p = require_device_or_service(request, device_id)
    with ctx_of(request).store.read() as conn:
        row = hub_store.device_row(conn, device_id)
    return device_json(row, with_keys=p.kind == "service")


@router.delete("/devices/{device_id}", status_code=204, summary="Delete a device identity (If-Match honoured)")
def delete_device(device_id: str, request: Request) -> Response:
    require_service(request)
    if_match = _if_match(request)
    with ctx_of(request).store.tx() as conn:
        row = hub_store.device_row(conn, device_id)
        if if_match not in (None, "*") and if_match != row["device_etag"]:
            raise ApiError(412, "If-Match does not match the device's etag; read it again", "If-Match", "PreconditionFailed")
        conn.execute("DELETE FROM modules WHERE device_id=?", (device_id,))
        conn.execute("DELETE FROM devices WHERE device_id=?", (device_id,))
    return Response(status_code=204)


# ---------------------------------------------------------------- module identities
def _check_module_id(module_id: str, writing: bool) -> None:
    if not MODULE_ID_RE.match(module_id):
        raise ApiError(400, f"moduleId {module_id[:40]!r} is invalid", "moduleId", "ArgumentInvalid")
    if writing and module_id.startswith("$"):
        raise ApiError(400, f"module ids starting with '$' ({module_id!r}) are reserved for IoT Edge's system modules, "
                            "which the hub creates with the device", "moduleId", "ArgumentInvalid")


@router.put("/devices/{device_id}/modules/{module_id}", summary="Create or update a module identity (If-Match to update)")
async def put_module(device_id: str, module_id: str, request: Request) -> dict[str, Any]:
    # the service, or an IoT Edge device for its own modules (IoT Hub's device-scoped identity API,
    # which IoT Edge's identity service calls with the device's own SAS token)
    require_device_or_service(request, device_id)
    _check_module_id(module_id, writing=True)
    body = await json_body(request, required=False) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "the module body must be a JSON object", "body", "ArgumentInvalid")
    for key, value in (("deviceId", device_id), ("moduleId", module_id)):
        if body.get(key) not in (None, value):
            raise ApiError(400, f"body {key} {body.get(key)!r} differs from the URL's {value!r}", key, "ArgumentInvalid")
    auth = _parse_auth(body, f"module {module_id!r}")
    if_match = _if_match(request)
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            exists = conn.execute("SELECT 1 FROM modules WHERE device_id=? AND module_id=?", (device_id, module_id)).fetchone()
            if exists and if_match is None:
                raise ApiError(409, f"module {module_id!r} already exists on device {device_id!r}; send If-Match to update it",
                               "moduleId", "ModuleAlreadyExistsOnDevice")
            if exists:
                row = hub_store.update_module_identity(conn, device_id, module_id, if_match=if_match, managed_by=body.get("managedBy"),
                                                       auth_type=auth["auth_type"], primary_key=auth["primary_key"],
                                                       secondary_key=auth["secondary_key"],
                                                       primary_thumbprint=auth["primary_thumbprint"],
                                                       secondary_thumbprint=auth["secondary_thumbprint"])
            else:
                row = hub_store.create_module(conn, device_id, module_id, managed_by=body.get("managedBy"),
                                              auth_type=auth["auth_type"], primary_key=auth["primary_key"],
                                              secondary_key=auth["secondary_key"], primary_thumbprint=auth["primary_thumbprint"],
                                              secondary_thumbprint=auth["secondary_thumbprint"])
            return hub_store.module_json(row, with_keys=True)

    return await _run(work)


@router.get("/devices/{device_id}/modules", summary="List a device's module identities")
def list_modules(device_id: str, request: Request) -> list[dict[str, Any]]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        return [hub_store.module_json(r) for r in hub_store.list_modules(conn, device_id)]


@router.get("/devices/{device_id}/modules/{module_id}", summary="Get a module identity")
def get_module(device_id: str, module_id: str, request: Request) -> dict[str, Any]:
    require_device_or_service(request, device_id)  # an edge device reads its own modules' identities
    with ctx_of(request).store.read() as conn:
        return hub_store.module_json(hub_store.module_row(conn, device_id, module_id))


@router.delete("/devices/{device_id}/modules/{module_id}", status_code=204, summary="Delete a module identity (If-Match honoured)")
def delete_module(device_id: str, module_id: str, request: Request) -> Response:
    require_service(request)
    if module_id in hub_store.EDGE_SYSTEM_MODULES:
        raise ApiError(400, f"{module_id} is an IoT Edge system module; it goes away with the device", "moduleId", "ArgumentInvalid")
    with ctx_of(request).store.tx() as conn:
        hub_store.delete_module(conn, device_id, module_id, _if_match(request))
    return Response(status_code=204)


# ---------------------------------------------------------------- twins
def _twin_patch(body: Any, module: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if not isinstance(body, dict):
        raise ApiError(400, "the twin must be a JSON object with tags and/or properties.desired", "body", "ArgumentInvalid")
    props = body.get("properties")
    if props is not None and not isinstance(props, dict):
        raise ApiError(400, "properties must be an object", "properties", "ArgumentInvalid")
    desired = (props or {}).get("desired")
    if desired is not None and not isinstance(desired, dict):
        raise ApiError(400, "properties.desired must be a JSON object", "properties.desired", "ArgumentInvalid")
    tags = body.get("tags")
    if tags is not None and not isinstance(tags, dict):
        raise ApiError(400, "tags must be a JSON object", "tags", "ArgumentInvalid")
    if module and tags:
        raise ApiError(400, "module twins have no tags in this hub; set tags on the device twin", "tags", "ArgumentInvalid")
    # reported properties in a service write are ignored, as IoT Hub does: only the device writes them
    return tags, desired


@router.get("/twins/{device_id}", summary="Get a device twin (the service, or the device itself)")
def get_twin(device_id: str, request: Request) -> dict[str, Any]:
    require_device_or_service(request, device_id)
    with ctx_of(request).store.read() as conn:
        return twin_json(hub_store.device_row(conn, device_id))


async def _update_twin(device_id: str, request: Request, replace: bool) -> dict[str, Any]:
    require_service(request)
    tags, desired = _twin_patch(await json_body(request), module=False)
    if_match = _if_match(request)
    ctx = ctx_of(request)

    def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
        with ctx.store.tx() as conn:
            row = hub_store.device_row(conn, device_id)
            if if_match not in (None, "*") and if_match != row["etag"]:
                raise ApiError(412, f"If-Match {if_match!r} does not match the twin's etag; read the twin again", "If-Match",
                               "PreconditionFailed")
            cur_tags, cur_desired = loads(row["tags"], {}), loads(row["desired"], {})
            clean = {k: v for k, v in (desired or {}).items() if k not in ("$version", "$metadata")}
            if replace:
                new_tags = tags if tags is not None else cur_tags
                new_desired = clean if desired is not None else cur_desired
            else:
                new_tags = merge_patch(cur_tags, tags or {})
                new_desired = merge_patch(cur_desired, clean)
            changed = new_desired != cur_desired
            version = row["desired_version"] + (1 if changed else 0)
            conn.execute("UPDATE devices SET tags=?, desired=?, desired_version=?, twin_version=twin_version+1, etag=? WHERE device_id=?",
                         (dumps(new_tags), dumps(new_desired), version, new_etag(), device_id))
            push = ({**(new_desired if replace else clean), "$version": version}) if changed else None
            return twin_json(hub_store.device_row(conn, device_id)), push

    twin, push = await _run(work)
    hub_store.notify_desired(device_id, None, push)
    return twin


@router.patch("/twins/{device_id}", summary="Merge-patch a twin's tags and desired properties (If-Match honoured)")
async def patch_twin(device_id: str, request: Request) -> dict[str, Any]:
    return await _update_twin(device_id, request, replace=False)


@router.put("/twins/{device_id}", summary="Replace a twin's tags and desired properties (If-Match honoured)")
async def put_twin(device_id: str, request: Request) -> dict[str, Any]:
    return await _update_twin(device_id, request, replace=True)


@router.get("/twins/{device_id}/modules/{module_id}", summary="Get a module twin")
def get_module_twin(device_id: str, module_id: str, request: Request) -> dict[str, Any]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        return hub_store.module_twin_json(hub_store.module_row(conn, device_id, module_id), hub_store.device_row(conn, device_id))


async def _update_module_twin(device_id: str, module_id: str, request: Request, replace: bool) -> dict[str, Any]:
    require_service(request)
    _, desired = _twin_patch(await json_body(request), module=True)
    if_match = _if_match(request)
    ctx = ctx_of(request)

    def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
        with ctx.store.tx() as conn:
            return hub_store.set_module_desired(conn, device_id, module_id, desired or {}, replace=replace and desired is not None,
                                                if_match=if_match)

    twin, push = await _run(work)
    hub_store.notify_desired(device_id, module_id, push)
    return twin


@router.patch("/twins/{device_id}/modules/{module_id}", summary="Merge-patch a module twin's desired properties (If-Match honoured)")
async def patch_module_twin(device_id: str, module_id: str, request: Request) -> dict[str, Any]:
    return await _update_module_twin(device_id, module_id, request, replace=False)


@router.put("/twins/{device_id}/modules/{module_id}", summary="Replace a module twin's desired properties (If-Match honoured)")
async def put_module_twin(device_id: str, module_id: str, request: Request) -> dict[str, Any]:
    return await _update_module_twin(device_id, module_id, request, replace=True)


# ---------------------------------------------------------------- edge configuration on one device
@router.post("/devices/{device_id}/applyConfigurationContent", status_code=204,
             summary="Set a device's IoT Edge modulesContent (written into its module twins at once)")
async def apply_configuration(device_id: str, request: Request) -> Response:
    require_service(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("modulesContent"), dict):
        raise ApiError(400, "body must be {\"modulesContent\": {...}} (device and module content are not mirrored)",
                       "modulesContent", "ArgumentInvalid")
    content = validate_modules_content(body["modulesContent"])
    ctx = ctx_of(request)

    def work() -> list[tuple[str, dict[str, Any]]]:
        with ctx.store.tx() as conn:
            row = hub_store.device_row(conn, device_id)
            if not row["edge"]:
                raise ApiError(400, f"device {device_id!r} is not an IoT Edge device; create it with the IoT Edge capability",
                               "deviceId", "ArgumentInvalid")
            pushes = write_content(conn, device_id, content)
            conn.execute("UPDATE devices SET modules_content=?, modules_version=modules_version+1, applied_source='device',"
                         " applied_seq=modules_version+1 WHERE device_id=?", (dumps(content), device_id))
            return pushes

    for module_id, push in await _run(work):
        hub_store.notify_desired(device_id, module_id, push)
    return Response(status_code=204)


# ---------------------------------------------------------------- configurations (at-scale deployments)
def configuration_json(conn: Any, dep: Any) -> dict[str, Any]:
    """A configuration in IoT Hub's shape, with its metrics evaluated now."""
    system, custom = metrics_json(conn, dep)
    return {
        "id": dep["name"],
        "schemaVersion": "1.0",
        "labels": loads(dep["labels"], {}),
        "content": {"modulesContent": loads(dep["modules_content"])},
        "targetCondition": dep["target_condition"],
        "createdTimeUtc": dep["created_at"],
        "lastUpdatedTimeUtc": dep["updated_at"] or dep["created_at"],
        "priority": dep["priority"],
        "systemMetrics": system,
        "metrics": custom,
        "etag": dep["etag"],
    }


def _check_condition(condition: Any) -> str:
    if not isinstance(condition, str):
        raise ApiError(400, "targetCondition must be a string such as tags.environment='prod'", "targetCondition", "ArgumentInvalid")
    try:
        parse_condition(condition)
    except ConditionError as exc:
        raise ApiError(400, str(exc), "targetCondition", "ArgumentInvalid") from None
    return condition


def _check_metric_queries(metrics: Any) -> dict[str, str]:
    queries = (metrics or {}).get("queries") if isinstance(metrics, dict) else None
    if metrics is not None and not isinstance(metrics, dict):
        raise ApiError(400, "metrics must be {\"queries\": {name: query}}", "metrics", "ArgumentInvalid")
    queries = queries or {}
    if not isinstance(queries, dict) or not all(isinstance(v, str) for v in queries.values()):
        raise ApiError(400, "metrics.queries must map names to query strings", "metrics.queries", "ArgumentInvalid")
    for name, q in queries.items():
        try:
            parse_query(q)
        except ConditionError as exc:
            raise ApiError(400, f"metrics.queries.{name}: {exc}", f"metrics.queries.{name}", "ArgumentInvalid") from None
    return queries


@router.post("/configurations/testQueries", summary="Validate a target condition and custom metric queries")
async def test_queries(request: Request) -> dict[str, Any]:
    require_service(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "body must be {\"targetCondition\": ..., \"customMetricQueries\": {...}}", "body", "ArgumentInvalid")
    condition_error = ""
    if body.get("targetCondition"):
        try:
            parse_condition(body["targetCondition"])
        except ConditionError as exc:
            condition_error = str(exc)
    errors = {}
    for name, q in (body.get("customMetricQueries") or {}).items():
        try:
            parse_query(q)
            errors[name] = ""
        except ConditionError as exc:
            errors[name] = str(exc)
    return {"targetConditionError": condition_error, "customMetricQueryErrors": errors}


@router.put("/configurations/{name}", summary="Create a configuration (If-Match: update its condition, priority, labels, metrics)")
async def put_configuration(name: str, request: Request) -> dict[str, Any]:
    require_service(request)
    if not re.match(r"^[a-z0-9\-:+%_#*?!(),=@;$']{1,128}$", name):
        raise ApiError(400, f"configuration id {name[:40]!r} is invalid: lower-case letters, digits and -:+%_#*?!(),=@;$' "
                            "(up to 128)", "id", "ArgumentInvalid")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the configuration must be a JSON object", "body", "ArgumentInvalid")
    if body.get("id") not in (None, name):
        raise ApiError(400, f"body id {body.get('id')!r} differs from the URL's {name!r}", "id", "ArgumentInvalid")
    content = body.get("content")
    if not isinstance(content, dict) or not isinstance(content.get("modulesContent"), dict):
        raise ApiError(400, "content must be {\"modulesContent\": {...}}: the stand-in mirrors IoT Edge deployments, not "
                            "device configurations (deviceContent / moduleContent)", "content.modulesContent", "ArgumentInvalid")
    modules = validate_modules_content(content["modulesContent"], "content.modulesContent")
    condition = _check_condition(body.get("targetCondition"))
    priority = body.get("priority", 0)
    if priority is None:
        priority = 0
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise ApiError(400, "priority must be a non-negative integer (higher wins)", "priority", "ArgumentInvalid")
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ApiError(400, "labels must be an object of string values", "labels", "ArgumentInvalid")
    queries = _check_metric_queries(body.get("metrics"))
    if_match = _if_match(request)
    ctx = ctx_of(request)
    rt = runtime_of(request)

    def work() -> dict[str, Any]:
        now = time.time()
        with ctx.store.tx() as conn:
            row = conn.execute("SELECT * FROM deployments WHERE name=?", (name,)).fetchone()
            if row is None:
                n = conn.execute("SELECT COUNT(*) AS n FROM deployments").fetchone()["n"]
                if n >= MAX_CONFIGURATIONS:
                    raise ApiError(409, f"this hub already has {n} configurations, IoT Hub's limit; delete old deployments "
                                        "(deploy.remove_deployments)", "id", "ConfigurationCountLimitExceeded")
                seq_row = conn.execute("SELECT value FROM meta WHERE key='deployment_seq'").fetchone()
                seq = int(seq_row["value"]) + 1 if seq_row else 1
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('deployment_seq', ?)", (str(seq),))
                conn.execute(
                    "INSERT INTO deployments(name, seq, target_condition, priority, modules_content, labels, etag, created_at,"
                    " metrics, updated_at, evaluate_after) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                    (name, seq, condition, priority, dumps(modules), dumps(labels), new_etag(), now_iso(), dumps(queries),
                     now_iso(), now + rt.timing.initial_delay_s),
                )
            else:
                if if_match is None:
                    raise ApiError(409, f"configuration {name!r} already exists; its content cannot change: create a new id, or "
                                        "send If-Match to change its condition, priority, labels or metrics", "id",
                                   "ConfigurationAlreadyExists")
                if if_match != "*" and if_match != row["etag"]:
                    raise ApiError(412, "If-Match does not match the configuration's etag; read it again", "If-Match",
                                   "PreconditionFailed")
                if dumps(modules) != row["modules_content"]:
                    raise ApiError(400, "a configuration's content cannot change; create a new deployment", "content",
                                   "ArgumentInvalid")
                conn.execute("UPDATE deployments SET target_condition=?, priority=?, labels=?, metrics=?, etag=?, updated_at=?,"
                             " evaluate_after=? WHERE name=?",
                             (condition, priority, dumps(labels), dumps(queries), new_etag(), now_iso(),
                              now + rt.timing.initial_delay_s, name))
            return configuration_json(conn, conn.execute("SELECT * FROM deployments WHERE name=?", (name,)).fetchone())

    out = await _run(work)
    if rt.evaluator is not None:
        rt.evaluator.poke()
    return out


@router.get("/configurations", summary="List configurations with their metrics (?top=N)")
def list_configurations(request: Request, top: int | None = None) -> list[dict[str, Any]]:
    require_service(request)
    limit = MAX_CONFIGURATIONS if top is None or top < 1 else min(top, MAX_CONFIGURATIONS)
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM deployments ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [configuration_json(conn, r) for r in rows]


@router.get("/configurations/{name}", summary="Get one configuration with its metrics")
def get_configuration(name: str, request: Request) -> dict[str, Any]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        row = conn.execute("SELECT * FROM deployments WHERE name=?", (name,)).fetchone()
        if row is None:
            raise ApiError(404, f"configuration {name!r} not found; list them with Hub.list_deployments", "id", "ConfigurationNotFound")
        return configuration_json(conn, row)


@router.delete("/configurations/{name}", status_code=204, summary="Delete a configuration (the modules it deployed keep running)")
def delete_configuration(name: str, request: Request) -> Response:
    require_service(request)
    if_match = _if_match(request)
    with ctx_of(request).store.tx() as conn:
        row = conn.execute("SELECT etag FROM deployments WHERE name=?", (name,)).fetchone()
        if row is None:
            raise ApiError(404, f"configuration {name!r} not found", "id", "ConfigurationNotFound")
        if if_match not in (None, "*") and if_match != row["etag"]:
            raise ApiError(412, "If-Match does not match the configuration's etag; read it again", "If-Match", "PreconditionFailed")
        conn.execute("DELETE FROM deployments WHERE name=?", (name,))
        forget_configuration(conn, name)  # the marks go now; the modules keep running what they have
    rt = runtime_of(request)
    if rt.evaluator is not None:
        rt.evaluator.poke()
    return Response(status_code=204)


# ---------------------------------------------------------------- statistics and the stand-in's own counters
@router.get("/statistics/devices", summary="Device registry statistics")
def device_statistics(request: Request) -> dict[str, int]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT status, COUNT(*) AS n FROM devices GROUP BY status").fetchall()
    by = {r["status"]: r["n"] for r in rows}
    return {"totalDeviceCount": sum(by.values()), "enabledDeviceCount": by.get("enabled", 0),
            "disabledDeviceCount": by.get("disabled", 0)}


@router.get("/statistics/service", summary="Service statistics (connected devices)")
def service_statistics(request: Request) -> dict[str, int]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM devices").fetchall()
    return {"connectedDeviceCount": sum(1 for r in rows if _device_connected(r))}


@router.get("/api/hub/stats", summary="The stand-in's counters: requests, throttled (429) answers, deployment timing")
def hub_stats(request: Request) -> dict[str, Any]:
    require_service(request)
    return runtime_of(request).stats()


__all__ = ["router", "merge_patch", "validate_modules_content", "hub_principal", "twin_json", "device_json",
           "azure_error_response", "is_hub_path", "HubRuntime", "TokenBucket", "API_VERSION", "CONNECTED_WINDOW_S"]
