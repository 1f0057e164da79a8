"""The IoT Hub query language over the store, and `POST /devices/query` with `x-ms-max-item-count` / `x-ms-continuation` paging."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from helpers.localcloud.common.auth import Principal, require_service
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import check_query_length
from helpers.localcloud.hub.condition import ConditionError, Query, parse_query, run_query
from helpers.localcloud.hub.models import QuerySpecification
from helpers.localcloud.hub.params import in_thread
from helpers.localcloud.hub.shapes import module_twin_json, twin_json

MAX_PAGE = 1000
DEFAULT_PAGE = 100

router = APIRouter()


def device_docs(conn: Any) -> list[dict[str, Any]]:
    """Every device twin as a query document (IoT Hub's twin JSON)."""
    return [twin_json(r) for r in conn.execute("SELECT * FROM devices ORDER BY device_id")]


def module_docs(conn: Any) -> list[dict[str, Any]]:
    """Every module twin as a query document."""
    devices = {r["device_id"]: r for r in conn.execute("SELECT * FROM devices")}
    return [module_twin_json(r, devices.get(r["device_id"]))
            for r in conn.execute("SELECT * FROM modules ORDER BY device_id, module_id")]


def execute(conn: Any, query: Query | str) -> list[dict[str, Any]]:
    """Run an IoT Hub query over the store."""
    q = parse_query(query) if isinstance(query, str) else query
    docs = device_docs(conn) if q.source == "devices" else module_docs(conn)
    return run_query(q, docs)


def parse_checked(text: str, field: str) -> Query:
    """A query parsed within the length limit (run it off the event loop: `in_thread`); 400 naming `field`."""
    check_query_length(text, field)
    try:
        return parse_query(text)
    except ConditionError as exc:
        raise ApiError(400, f"{field}: {exc}" if field != "query" else str(exc), field, "ArgumentInvalid") from None


def count(conn: Any, query: str) -> int:
    """How many rows `query` selects (a metric's value)."""
    return len(execute(conn, query))


def _page_size(request: Request) -> int:
    raw = request.headers.get("x-ms-max-item-count")
    try:
        size = int(raw) if raw else DEFAULT_PAGE
    except ValueError:
        raise ApiError(400, f"x-ms-max-item-count {raw!r} is not an integer", "x-ms-max-item-count", "ArgumentInvalid") from None
    return max(1, min(size, MAX_PAGE))


def _offset(request: Request, digest: str) -> int:
    token = request.headers.get("x-ms-continuation")
    if not token:
        return 0
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
        offset = int(state["o"])
        if state["q"] != digest or offset < 0:
            raise ValueError("another query")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "x-ms-continuation is not a token this hub gave for this query; start the query again",
                       "x-ms-continuation", "ArgumentInvalid") from None
    return offset


@router.post("/devices/query", summary="Query twins with the IoT Hub query language (x-ms-max-item-count, x-ms-continuation)")
async def query_devices(request: Request, body: QuerySpecification, _: Principal = Depends(require_service)) -> Response:
    size = _page_size(request)
    query = await in_thread(parse_checked, body.query, "query")
    digest = hashlib.sha256(body.query.encode()).hexdigest()[:16]
    offset = _offset(request, digest)
    ctx = ctx_of(request)

    def work() -> list[dict[str, Any]]:
        with ctx.store.read() as conn:
            return execute(conn, query)

    items = await in_thread(work)
    page = items[offset:offset + size]
    headers = {"x-ms-item-type": query.item_type}
    if offset + size < len(items):
        headers["x-ms-continuation"] = base64.urlsafe_b64encode(json.dumps({"o": offset + size, "q": digest}).encode()).decode()
    return JSONResponse(page, headers=headers)
