"""IoT Edge content: `applyConfigurationContent` on one device, and configurations (at-scale deployments) with metrics."""
from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from helpers.localcloud.common.auth import Principal, require_service
from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.db import dumps, loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import CONFIGURATION_ID_RE, check_query_length
from helpers.localcloud.hub import store as hub_store
from helpers.localcloud.hub.condition import ConditionError, parse_condition, parse_query
from helpers.localcloud.hub.content import validate_modules_content
from helpers.localcloud.hub.deploy import MAX_CONFIGURATIONS, forget_configuration, metrics_json, write_content
from helpers.localcloud.hub.models import ApplyConfigurationIn, ConfigurationIn, ConfigurationQueriesTestIn
from helpers.localcloud.hub.params import check_body_id, check_etag, if_match, in_thread
from helpers.localcloud.hub.query import parse_checked
from helpers.localcloud.hub.runtime import runtime_of

router = APIRouter()


# ---------------------------------------------------------------- edge configuration on one device
@router.post("/devices/{device_id}/applyConfigurationContent", status_code=204,
             summary="Set a device's IoT Edge modulesContent (written into its module twins at once)")
async def apply_configuration(device_id: str, request: Request, body: ApplyConfigurationIn,
                              _: Principal = Depends(require_service)) -> Response:
    content = validate_modules_content(body.modulesContent)
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

    for module_id, push in await in_thread(work):
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


def _check_condition(condition: str) -> str:
    check_query_length(condition, "targetCondition")
    try:
        parse_condition(condition)
    except ConditionError as exc:
        raise ApiError(400, str(exc), "targetCondition", "ArgumentInvalid") from None
    return condition


def _check_metric_queries(queries: dict[str, str]) -> dict[str, str]:
    for name, q in queries.items():
        parse_checked(q, f"metrics.queries.{name}")
    return queries


def _error_of(parse: Any, text: str, field: str) -> str:
    check_query_length(text, field)
    try:
        parse(text)
    except ConditionError as exc:
        return str(exc)
    return ""


@router.post("/configurations/testQueries", summary="Validate a target condition and custom metric queries")
async def test_queries(body: ConfigurationQueriesTestIn, _: Principal = Depends(require_service)) -> dict[str, Any]:
    def work() -> dict[str, Any]:  # parsing is CPU work: off the event loop, each text within the length limit
        condition_error = _error_of(parse_condition, body.targetCondition, "targetCondition") if body.targetCondition else ""
        errors = {name: _error_of(parse_query, q, f"customMetricQueries.{name}")
                  for name, q in (body.customMetricQueries or {}).items()}
        return {"targetConditionError": condition_error, "customMetricQueryErrors": errors}

    return await in_thread(work)


@router.put("/configurations/{name}", summary="Create a configuration (If-Match: update its condition, priority, labels, metrics)")
async def put_configuration(name: str, request: Request, body: ConfigurationIn,
                            _: Principal = Depends(require_service)) -> dict[str, Any]:
    if not CONFIGURATION_ID_RE.fullmatch(name):
        raise ApiError(400, f"configuration id {name[:40]!r} is invalid: lower-case letters, digits and -:+%_#*?!(),=@;$' "
                            "(up to 128)", "id", "ArgumentInvalid")
    check_body_id(body.id, name, "id")
    if body.content is None or body.content.modulesContent is None:
        raise ApiError(400, "content must be {\"modulesContent\": {...}}: the stand-in mirrors IoT Edge deployments, not "
                            "device configurations (deviceContent / moduleContent)", "content.modulesContent", "ArgumentInvalid")
    modules = validate_modules_content(body.content.modulesContent, "content.modulesContent")
    condition = await in_thread(_check_condition, body.targetCondition)
    priority = body.priority or 0
    labels = body.labels or {}
    queries = await in_thread(_check_metric_queries, (body.metrics.queries if body.metrics is not None else None) or {})
    match = if_match(request)
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
                    (name, seq, condition, priority, dumps(modules), dumps(labels), hub_store.new_etag(), now_iso(),
                     dumps(queries), now_iso(), now + rt.timing.initial_delay_s),
                )
            else:
                if match is None:
                    raise ApiError(409, f"configuration {name!r} already exists; its content cannot change: create a new id, or "
                                        "send If-Match to change its condition, priority, labels or metrics", "id",
                                   "ConfigurationAlreadyExists")
                check_etag(match, row["etag"], "configuration")
                if dumps(modules) != row["modules_content"]:
                    raise ApiError(400, "a configuration's content cannot change; create a new deployment", "content",
                                   "ArgumentInvalid")
                conn.execute("UPDATE deployments SET target_condition=?, priority=?, labels=?, metrics=?, etag=?, updated_at=?,"
                             " evaluate_after=? WHERE name=?",
                             (condition, priority, dumps(labels), dumps(queries), hub_store.new_etag(), now_iso(),
                              now + rt.timing.initial_delay_s, name))
            return configuration_json(conn, conn.execute("SELECT * FROM deployments WHERE name=?", (name,)).fetchone())

    out = await in_thread(work)
    rt.poke()
    return out


@router.get("/configurations", summary="List configurations with their metrics (?top=N)")
def list_configurations(request: Request, top: int | None = None, _: Principal = Depends(require_service)) -> list[dict[str, Any]]:
    limit = MAX_CONFIGURATIONS if top is None or top < 1 else min(top, MAX_CONFIGURATIONS)
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM deployments ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [configuration_json(conn, r) for r in rows]


@router.get("/configurations/{name}", summary="Get one configuration with its metrics")
def get_configuration(name: str, request: Request, _: Principal = Depends(require_service)) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        row = conn.execute("SELECT * FROM deployments WHERE name=?", (name,)).fetchone()
        if row is None:
            raise ApiError(404, f"configuration {name!r} not found; list them with Hub.list_deployments", "id", "ConfigurationNotFound")
        return configuration_json(conn, row)


@router.delete("/configurations/{name}", status_code=204, summary="Delete a configuration (the modules it deployed keep running)")
def delete_configuration(name: str, request: Request, _: Principal = Depends(require_service)) -> Response:
    match = if_match(request)
    with ctx_of(request).store.tx() as conn:
        row = conn.execute("SELECT etag FROM deployments WHERE name=?", (name,)).fetchone()
        if row is None:
            raise ApiError(404, f"configuration {name!r} not found", "id", "ConfigurationNotFound")
        check_etag(match, row["etag"], "configuration")
        conn.execute("DELETE FROM deployments WHERE name=?", (name,))
        forget_configuration(conn, name)  # the marks go now; the modules keep running what they have
    runtime_of(request).poke()
    return Response(status_code=204)
