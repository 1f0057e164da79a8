"""Hub endpoints in Azure IoT Hub's shapes: device identities, twins, IoT Edge deployments.

Which manifest a device runs (the rule, kept simple and deterministic):
  1. Among the at-scale deployments whose `targetCondition` matches the device, the one with
     the highest `priority` wins; a tie goes to the newest deployment.
  2. If a deployment targets the device, it applies, whatever `applyConfigurationContent`
     (`Hub.set_modules`) set for the device; the device-level content is kept, not cleared,
     and applies again as soon as no deployment targets the device.
  3. Otherwise the device-level content applies (source `"device"`), else nothing.
The version a device must report back (`edgeAgent.lastDesiredVersion`) is `device:<n>` for the
n-th device-level content and `<deployment name>:<sequence>` for a deployment.

Deployment metrics (Azure's portal columns): `targeted` devices match the condition, `applied`
ones run this deployment (it won), `reportingSuccess` applied devices report this version with
lastDesiredStatus 200 and no failed module, `reportingFailure` report this version with
another code or a failed module.

A device's heartbeat is implicit in its reports: it is `connected` when it reported within
`CONNECTED_WINDOW_S`; a device offline with a pending deployment gets lastDesiredStatus 406.
"""
from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from helpers.errors import InvalidManifest
from helpers.hub.sas import new_key
from helpers.localcloud.common import (
    DEVICE_ID_RE,
    ApiError,
    ctx_of,
    json_body,
    require_device_or_service,
    require_service,
    hub_principal,
)
from helpers.localcloud.condition import ConditionError, device_document, parse_condition
from helpers.localcloud.db import dumps, loads
from helpers.localcloud.service import now_iso

CONNECTED_WINDOW_S = 20.0
FAILED_RUNTIME = {"failed", "backoff"}

router = APIRouter(tags=["hub"])


# ---------------------------------------------------------------- helpers
def _etag() -> str:
    return secrets.token_urlsafe(9)


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
        raise ApiError(400, f"deviceId {device_id[:40]!r} is invalid: use up to 128 letters, digits and -._:", "deviceId")


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch (a `null` deletes), as twin PATCH applies it."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, dict):
            out[key] = merge_patch({}, value)
        else:
            out[key] = value
    return out


def validate_modules_content(content: Any, field: str = "modulesContent") -> dict[str, Any]:
    """Basic checks of an IoT Edge `modulesContent`, then the manifest module's own, if present.

    Raises:
        ApiError: 400 naming the field that is wrong.
    """
    if not isinstance(content, dict):
        raise ApiError(400, f"{field} must be a JSON object with $edgeAgent and $edgeHub", field)
    for system in ("$edgeAgent", "$edgeHub"):
        part = content.get(system)
        if not isinstance(part, dict) or not isinstance(part.get("properties.desired"), dict):
            raise ApiError(400, f"{field}.{system} must be an object with 'properties.desired' (build it with helpers.hub.manifest.build_manifest)", f"{field}.{system}")
    agent = content["$edgeAgent"]["properties.desired"]
    modules = agent.get("modules", {})
    if not isinstance(modules, dict):
        raise ApiError(400, f"{field}.$edgeAgent.properties.desired.modules must be an object of module name -> spec", f"{field}.$edgeAgent")
    for name, spec in modules.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("settings"), dict) or not spec["settings"].get("image"):
            raise ApiError(400, f"module {name!r} needs settings.image", f"{field}.$edgeAgent.modules.{name}")
    try:
        from helpers.hub.manifest import validate_manifest  # written beside this module; optional here
    except ImportError:
        return content
    try:
        validate_manifest(content)
    except InvalidManifest as exc:
        raise ApiError(400, str(exc), field) from None
    return content


def device_json(row: Any, with_keys: bool, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    connected = row["last_report_at"] is not None and now - row["last_report_at"] <= CONNECTED_WINDOW_S
    out = {
        "deviceId": row["device_id"],
        "etag": row["device_etag"],
        "status": row["status"],
        "connectionState": "Connected" if connected else "Disconnected",
        "lastActivityTime": _iso(row["last_report_at"]),
        "capabilities": {"iotEdge": bool(row["edge"])},
        "createdTime": row["created_at"],
        "authentication": {"type": "sas"},
        "tags": loads(row["tags"], {}),
    }
    if with_keys:
        out["authentication"]["symmetricKey"] = {"primaryKey": row["primary_key"], "secondaryKey": row["secondary_key"]}
    return out


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def twin_json(row: Any) -> dict[str, Any]:
    desired = loads(row["desired"], {})
    reported = loads(row["reported"], {})
    return {
        "deviceId": row["device_id"],
        "etag": row["etag"],
        "version": row["twin_version"],
        "status": row["status"],
        "capabilities": {"iotEdge": bool(row["edge"])},
        "tags": loads(row["tags"], {}),
        "properties": {
            "desired": {**desired, "$version": row["desired_version"]},
            "reported": {**reported, "$version": row["reported_version"]},
        },
        "lastActivityTime": _iso(row["last_report_at"]),
    }


def _get_device(conn: Any, device_id: str) -> Any:
    row = conn.execute("SELECT * FROM devices WHERE device_id=?", (device_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"device {device_id!r} not found; create it with Hub.create_edge_device", "deviceId")
    return row


def _deployments(conn: Any) -> list[dict[str, Any]]:
    out = []
    for r in conn.execute("SELECT * FROM deployments ORDER BY seq"):
        out.append({
            "name": r["name"], "seq": r["seq"], "priority": r["priority"],
            "targetCondition": r["target_condition"], "predicate": parse_condition(r["target_condition"]),
            "modulesContent": loads(r["modules_content"]), "labels": loads(r["labels"], {}),
            "etag": r["etag"], "createdTime": r["created_at"],
        })
    return out


def _doc(row: Any) -> dict[str, Any]:
    return device_document(row["device_id"], loads(row["tags"], {}), loads(row["desired"], {}), loads(row["reported"], {}),
                           bool(row["edge"]), row["status"])


def _winner(row: Any, deployments: list[dict[str, Any]]) -> dict[str, Any] | None:
    doc = _doc(row)
    matching = [d for d in deployments if d["predicate"](doc)]
    if not matching:
        return None
    return max(matching, key=lambda d: (d["priority"], d["seq"]))


def effective_deployment(row: Any, deployments: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`{"modulesContent", "source", "version"}` the device should run, or None."""
    win = _winner(row, deployments)
    if win is not None:
        return {"modulesContent": win["modulesContent"], "source": win["name"], "version": f"{win['name']}:{win['seq']}"}
    if row["modules_content"]:
        return {"modulesContent": loads(row["modules_content"]), "source": "device", "version": f"device:{row['modules_version']}"}
    return None


def _failed_module(reported: dict[str, Any]) -> str | None:
    modules = ((reported.get("edgeAgent") or {}).get("modules")) or {}
    for name, m in modules.items():
        if isinstance(m, dict) and str(m.get("runtimeStatus", "")).lower() in FAILED_RUNTIME:
            return name
    return None


def status_json(row: Any, effective: dict[str, Any] | None, now: float | None = None) -> dict[str, Any]:
    """The device's connection, deployment and module state as the hub sees it."""
    now = time.time() if now is None else now
    reported = loads(row["reported"], {})
    agent = reported.get("edgeAgent") or {}
    last = row["last_report_at"]
    connected = last is not None and now - last <= CONNECTED_WINDOW_S
    desired_version = effective["version"] if effective else None
    reported_version = agent.get("lastDesiredVersion")
    lds = agent.get("lastDesiredStatus") or {}
    if desired_version is not None and reported_version == desired_version:
        code, desc = lds.get("code"), lds.get("description", "")
    elif desired_version is not None and not connected:
        code, desc = 406, f"device offline: deployment {effective['source']!r} version {desired_version} is pending"
    elif desired_version is not None:
        code, desc = None, f"pending: the device has not applied version {desired_version} yet"
    else:
        code, desc = (lds.get("code"), lds.get("description", "")) if reported_version else (None, "")
    return {
        "deviceId": row["device_id"],
        "connected": connected,
        "lastSeen": _iso(last),
        "lastDesiredStatus": {"code": code, "description": desc},
        "deployment": effective["source"] if effective else None,
        "desiredVersion": desired_version,
        "reportedVersion": reported_version,
        "heartbeat": agent.get("heartbeat"),
        "runtime": agent.get("runtime"),
        "modules": agent.get("modules") or {},
    }


def deployment_json(dep: dict[str, Any], rows: list[Any], deployments: list[dict[str, Any]]) -> dict[str, Any]:
    version = f"{dep['name']}:{dep['seq']}"
    targeted = applied = success = failure = 0
    for row in rows:
        if not dep["predicate"](_doc(row)):
            continue
        targeted += 1
        win = _winner(row, deployments)
        if win is None or win["name"] != dep["name"]:
            continue
        applied += 1
        reported = loads(row["reported"], {})
        agent = reported.get("edgeAgent") or {}
        if agent.get("lastDesiredVersion") != version:
            continue
        code = (agent.get("lastDesiredStatus") or {}).get("code")
        if code == 200 and _failed_module(reported) is None:
            success += 1
        else:
            failure += 1
    metrics = {"targeted": targeted, "applied": applied, "reportingSuccess": success, "reportingFailure": failure}
    return {
        "id": dep["name"],
        "schemaVersion": "1.0",
        "labels": dep["labels"],
        "content": {"modulesContent": dep["modulesContent"]},
        "targetCondition": dep["targetCondition"],
        "priority": dep["priority"],
        "createdTimeUtc": dep["createdTime"],
        "etag": dep["etag"],
        "version": version,
        "metrics": metrics,
        "systemMetrics": {"results": {"targetedCount": targeted, "appliedCount": applied,
                                      "reportedSuccessfulCount": success, "reportedFailedCount": failure}},
    }


async def _run(fn, *args):
    return await run_in_threadpool(fn, *args)


# ---------------------------------------------------------------- device identities
@router.put("/devices/{device_id}", summary="Create or update a device identity")
async def put_device(device_id: str, request: Request, response: Response) -> dict[str, Any]:
    require_service(request)
    _check_id(device_id)
    body = await json_body(request, required=False) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "the device body must be a JSON object", "body")
    if body.get("deviceId") not in (None, device_id):
        raise ApiError(400, f"body deviceId {body.get('deviceId')!r} differs from the URL's {device_id!r}", "deviceId")
    caps = body.get("capabilities") or {}
    if not isinstance(caps, dict) or not isinstance(caps.get("iotEdge", True), bool):
        raise ApiError(400, "capabilities.iotEdge must be true or false", "capabilities.iotEdge")
    status = body.get("status", "enabled")
    if status not in ("enabled", "disabled"):
        raise ApiError(400, "status must be 'enabled' or 'disabled'", "status")
    sym = ((body.get("authentication") or {}).get("symmetricKey")) or {}
    if not isinstance(sym, dict):
        raise ApiError(400, "authentication.symmetricKey must be an object", "authentication.symmetricKey")
    for k in ("primaryKey", "secondaryKey"):
        if sym.get(k) is not None:
            try:
                base64.b64decode(str(sym[k]), validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, f"authentication.symmetricKey.{k} must be base64", f"authentication.symmetricKey.{k}") from None
    if_match = _if_match(request)
    ctx = ctx_of(request)

    def work() -> tuple[dict[str, Any], int]:
        with ctx.store.tx() as conn:
            row = conn.execute("SELECT * FROM devices WHERE device_id=?", (device_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO devices(device_id, edge, status, primary_key, secondary_key, etag, device_etag, created_at)"
                    " VALUES(?,?,?,?,?,?,?,?)",
                    (device_id, int(caps.get("iotEdge", True)), status, sym.get("primaryKey") or new_key(),
                     sym.get("secondaryKey") or new_key(), _etag(), _etag(), now_iso()),
                )
                code = 200
            else:
                if if_match is None:
                    raise ApiError(409, f"device {device_id!r} already exists; send If-Match: * to update it", "deviceId", "DeviceAlreadyExists")
                if if_match != "*" and if_match != row["device_etag"]:
                    raise ApiError(412, "If-Match does not match the device's etag; read it again", "If-Match")
                conn.execute(
                    "UPDATE devices SET edge=?, status=?, primary_key=?, secondary_key=?, device_etag=? WHERE device_id=?",
                    (int(caps.get("iotEdge", row["edge"])), status, sym.get("primaryKey") or row["primary_key"],
                     sym.get("secondaryKey") or row["secondary_key"], _etag(), device_id),
                )
                code = 200
            return device_json(_get_device(conn, device_id), with_keys=True), code

    out, code = await _run(work)
    response.status_code = code
    return out


@router.get("/devices", summary="List device identities")
def list_devices(request: Request) -> list[dict[str, Any]]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM devices ORDER BY device_id").fetchall()
    return [device_json(r, with_keys=True) for r in rows]


@router.get("/devices/{device_id}", summary="Get a device identity")
def get_device(device_id: str, request: Request) -> dict[str, Any]:
    p = require_device_or_service(request, device_id)
    with ctx_of(request).store.read() as conn:
        row = _get_device(conn, device_id)
    return device_json(row, with_keys=p.kind == "service")


@router.delete("/devices/{device_id}", status_code=204, summary="Delete a device identity")
def delete_device(device_id: str, request: Request) -> Response:
    require_service(request)
    if_match = _if_match(request)
    with ctx_of(request).store.tx() as conn:
        row = _get_device(conn, device_id)
        if if_match not in (None, "*") and if_match != row["device_etag"]:
            raise ApiError(412, "If-Match does not match the device's etag; read it again", "If-Match")
        conn.execute("DELETE FROM devices WHERE device_id=?", (device_id,))
    return Response(status_code=204)


# ---------------------------------------------------------------- twins
@router.get("/twins/{device_id}", summary="Get a device twin (the service, or the device itself)")
def get_twin(device_id: str, request: Request) -> dict[str, Any]:
    require_device_or_service(request, device_id)
    with ctx_of(request).store.read() as conn:
        return twin_json(_get_device(conn, device_id))


async def _update_twin(device_id: str, request: Request, replace: bool) -> dict[str, Any]:
    require_service(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the twin patch must be a JSON object with tags and/or properties.desired", "body")
    tags = body.get("tags")
    desired = (body.get("properties") or {}).get("desired") if isinstance(body.get("properties"), dict) else None
    if body.get("properties") is not None and not isinstance(body.get("properties"), dict):
        raise ApiError(400, "properties must be an object", "properties")
    if tags is not None and not isinstance(tags, dict):
        raise ApiError(400, "tags must be a JSON object", "tags")
    if desired is not None and not isinstance(desired, dict):
        raise ApiError(400, "properties.desired must be a JSON object", "properties.desired")
    if isinstance(body.get("properties"), dict) and "reported" in body["properties"]:
        raise ApiError(400, "reported properties are written by the device, not the service", "properties.reported")
    if_match = _if_match(request)
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            row = _get_device(conn, device_id)
            if if_match not in (None, "*") and if_match != row["etag"]:
                raise ApiError(412, f"If-Match {if_match!r} does not match the twin's etag; read the twin again", "If-Match")
            cur_tags, cur_desired = loads(row["tags"], {}), loads(row["desired"], {})
            if replace:
                new_tags = tags if tags is not None else cur_tags
                new_desired = desired if desired is not None else cur_desired
            else:
                new_tags = merge_patch(cur_tags, tags or {})
                new_desired = merge_patch(cur_desired, desired or {})
            new_desired = {k: v for k, v in new_desired.items() if k != "$version"}
            desired_version = row["desired_version"] + (1 if new_desired != cur_desired else 0)
            conn.execute(
                "UPDATE devices SET tags=?, desired=?, desired_version=?, twin_version=twin_version+1, etag=? WHERE device_id=?",
                (dumps(new_tags), dumps(new_desired), desired_version, _etag(), device_id),
            )
            return twin_json(_get_device(conn, device_id))

    return await _run(work)


@router.patch("/twins/{device_id}", summary="Merge-patch a twin's tags and desired properties (If-Match honoured)")
async def patch_twin(device_id: str, request: Request) -> dict[str, Any]:
    return await _update_twin(device_id, request, replace=False)


@router.put("/twins/{device_id}", summary="Replace a twin's tags and desired properties (If-Match honoured)")
async def put_twin(device_id: str, request: Request) -> dict[str, Any]:
    return await _update_twin(device_id, request, replace=True)


@router.patch("/devices/{device_id}/twin/properties/reported", summary="Device: merge-patch its reported properties")
async def patch_reported(device_id: str, request: Request) -> dict[str, Any]:
    p = require_device_or_service(request, device_id)
    if p.kind != "device":
        raise ApiError(403, "only the device itself writes reported properties (use its connection string)", "Authorization")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "reported properties must be a JSON object", "body")
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            row = _get_device(conn, device_id)
            reported = merge_patch(loads(row["reported"], {}), {k: v for k, v in body.items() if k != "$version"})
            conn.execute(
                "UPDATE devices SET reported=?, reported_version=reported_version+1, twin_version=twin_version+1,"
                " etag=?, last_report_at=? WHERE device_id=?",
                (dumps(reported), _etag(), time.time(), device_id),
            )
            row = _get_device(conn, device_id)
        return {"$version": row["reported_version"]}

    return await _run(work)


# ---------------------------------------------------------------- edge configuration
@router.post("/devices/{device_id}/applyConfigurationContent", status_code=204,
             summary="Set a device's own IoT Edge modulesContent (Hub.set_modules)")
async def apply_configuration(device_id: str, request: Request) -> Response:
    require_service(request)
    body = await json_body(request)
    if not isinstance(body, dict) or "modulesContent" not in body:
        raise ApiError(400, "body must be {\"modulesContent\": {...}}", "modulesContent")
    content = validate_modules_content(body["modulesContent"])
    ctx = ctx_of(request)

    def work() -> None:
        with ctx.store.tx() as conn:
            _get_device(conn, device_id)
            conn.execute("UPDATE devices SET modules_content=?, modules_version=modules_version+1 WHERE device_id=?",
                         (dumps(content), device_id))

    await _run(work)
    return Response(status_code=204)


@router.get("/devices/{device_id}/deployment", summary="The modulesContent in effect for a device (204 when none)")
def get_effective_deployment(device_id: str, request: Request) -> Any:
    require_device_or_service(request, device_id)
    with ctx_of(request).store.read() as conn:
        row = _get_device(conn, device_id)
        eff = effective_deployment(row, _deployments(conn))
    if eff is None:
        return Response(status_code=204)
    return eff


@router.get("/devices/{device_id}/edgeStatus", summary="Connection, deployment and module status of a device")
def get_status(device_id: str, request: Request) -> dict[str, Any]:
    require_device_or_service(request, device_id)
    with ctx_of(request).store.read() as conn:
        row = _get_device(conn, device_id)
        eff = effective_deployment(row, _deployments(conn))
    return status_json(row, eff)


# ---------------------------------------------------------------- at-scale deployments
@router.put("/configurations/{name}", summary="Create an at-scale IoT Edge deployment (If-Match: update its condition/priority/labels)")
async def put_configuration(name: str, request: Request) -> dict[str, Any]:
    require_service(request)
    if not DEVICE_ID_RE.match(name) or len(name) > 64:
        raise ApiError(400, f"deployment name {name[:40]!r} is invalid: up to 64 letters, digits and -._", "id")
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the deployment must be a JSON object", "body")
    if body.get("id") not in (None, name):
        raise ApiError(400, f"body id {body.get('id')!r} differs from the URL's {name!r}", "id")
    content = body.get("content")
    if not isinstance(content, dict) or "modulesContent" not in content:
        raise ApiError(400, "content must be {\"modulesContent\": {...}}", "content.modulesContent")
    modules = validate_modules_content(content["modulesContent"], "content.modulesContent")
    condition = body.get("targetCondition")
    if not isinstance(condition, str):
        raise ApiError(400, "targetCondition must be a string such as tags.environment='prod'", "targetCondition")
    try:
        parse_condition(condition)
    except ConditionError as exc:
        raise ApiError(400, str(exc), "targetCondition") from None
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise ApiError(400, "priority must be a non-negative integer (higher wins)", "priority")
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ApiError(400, "labels must be an object of string values", "labels")
    if_match = _if_match(request)
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            row = conn.execute("SELECT * FROM deployments WHERE name=?", (name,)).fetchone()
            if row is None:
                seq_row = conn.execute("SELECT value FROM meta WHERE key='deployment_seq'").fetchone()
                seq = int(seq_row["value"]) + 1 if seq_row else 1
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('deployment_seq', ?)", (str(seq),))
                conn.execute(
                    "INSERT INTO deployments(name, seq, target_condition, priority, modules_content, labels, etag, created_at)"
                    " VALUES(?,?,?,?,?,?,?,?)",
                    (name, seq, condition, priority, dumps(modules), dumps(labels), _etag(), now_iso()),
                )
            else:
                if if_match is None:
                    raise ApiError(409, f"deployment {name!r} already exists; deployments are immutable: create a new name, or send If-Match to change its condition/priority/labels", "id", "ConfigurationAlreadyExists")
                if if_match != "*" and if_match != row["etag"]:
                    raise ApiError(412, "If-Match does not match the deployment's etag", "If-Match")
                if dumps(modules) != row["modules_content"]:
                    raise ApiError(400, "a deployment's content cannot change; create a new deployment", "content.modulesContent")
                conn.execute("UPDATE deployments SET target_condition=?, priority=?, labels=?, etag=? WHERE name=?",
                             (condition, priority, dumps(labels), _etag(), name))
            deployments = _deployments(conn)
            rows = conn.execute("SELECT * FROM devices").fetchall()
        dep = next(d for d in deployments if d["name"] == name)
        return deployment_json(dep, rows, deployments)

    return await _run(work)


@router.get("/configurations", summary="List deployments with their metrics")
def list_configurations(request: Request) -> list[dict[str, Any]]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        deployments = _deployments(conn)
        rows = conn.execute("SELECT * FROM devices").fetchall()
    return [deployment_json(d, rows, deployments) for d in deployments]


@router.get("/configurations/{name}", summary="Get one deployment with its metrics")
def get_configuration(name: str, request: Request) -> dict[str, Any]:
    require_service(request)
    with ctx_of(request).store.read() as conn:
        deployments = _deployments(conn)
        rows = conn.execute("SELECT * FROM devices").fetchall()
    for d in deployments:
        if d["name"] == name:
            return deployment_json(d, rows, deployments)
    raise ApiError(404, f"deployment {name!r} not found; list them with Hub.list_deployments", "id")


@router.delete("/configurations/{name}", status_code=204, summary="Delete a deployment")
def delete_configuration(name: str, request: Request) -> Response:
    require_service(request)
    with ctx_of(request).store.tx() as conn:
        if conn.execute("DELETE FROM deployments WHERE name=?", (name,)).rowcount == 0:
            raise ApiError(404, f"deployment {name!r} not found", "id")
    return Response(status_code=204)


__all__ = ["router", "effective_deployment", "status_json", "merge_patch", "validate_modules_content", "hub_principal"]
