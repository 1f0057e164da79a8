"""Device identities (`/devices/{id}`): symmetric keys, self-signed or CA-signed X.509, the IoT Edge capability, etags."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from helpers.localcloud.common.auth import Principal, require_device_or_service, require_service
from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.hub import store as hub_store
from helpers.localcloud.hub.models import DeviceIn, auth_columns, auth_given
from helpers.localcloud.hub.params import check_body_id, check_device_id, check_etag, if_match, in_thread
from helpers.localcloud.hub.shapes import device_json
from helpers.protocol.sas import new_key

MAX_PAGE = 1000

router = APIRouter()


@router.put("/devices/{device_id}", summary="Create or update a device identity (If-Match to update)")
async def put_device(device_id: str, request: Request, body: DeviceIn | None = None,
                     _: Principal = Depends(require_service)) -> dict[str, Any]:
    check_device_id(device_id)
    body = body or DeviceIn()
    check_body_id(body.deviceId, device_id, "deviceId")
    edge = body.capabilities.iotEdge if body.capabilities is not None else None
    status = body.status or "enabled"
    auth = auth_columns(body.authentication, f"device {device_id!r}")
    has_auth = auth_given(body.authentication)
    match = if_match(request)
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
                    (device_id, int(bool(edge)), status, body.statusReason, keys[0], keys[1], auth["auth_type"],
                     auth["primary_thumbprint"], auth["secondary_thumbprint"], hub_store.new_etag(), hub_store.new_etag(),
                     now_iso()),
                )
            else:
                if match is None:
                    raise ApiError(409, f"a device with id {device_id!r} already exists; send If-Match (its etag or *) to update it",
                                   "deviceId", "DeviceAlreadyExists")
                check_etag(match, row["device_etag"], "device")
                kind = auth["auth_type"] if has_auth else row["auth_type"]
                pk = auth["primary_key"] or row["primary_key"]
                sk = auth["secondary_key"] or row["secondary_key"]
                pt = auth["primary_thumbprint"] if has_auth else row["primary_thumbprint"]
                st = auth["secondary_thumbprint"] if has_auth else row["secondary_thumbprint"]
                conn.execute(
                    "UPDATE devices SET edge=?, status=?, status_reason=?, primary_key=?, secondary_key=?, auth_type=?,"
                    " primary_thumbprint=?, secondary_thumbprint=?, device_etag=? WHERE device_id=?",
                    (int(bool(row["edge"]) if edge is None else edge), status, body.statusReason, pk, sk, kind, pt, st,
                     hub_store.new_etag(), device_id),
                )
            row = hub_store.device_row(conn, device_id)
            if row["edge"]:
                hub_store.ensure_edge_modules(conn, device_id)
            return device_json(row, with_keys=True)

    return await in_thread(work)


@router.get("/devices", summary="List device identities (?top=N, at most 1000)")
def list_devices(request: Request, top: int | None = None, _: Principal = Depends(require_service)) -> list[dict[str, Any]]:
    limit = MAX_PAGE if top is None or top < 1 or top > MAX_PAGE else top
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM devices ORDER BY device_id LIMIT ?", (limit,)).fetchall()
    return [device_json(r, with_keys=True) for r in rows]


@router.get("/devices/{device_id}", summary="Get a device identity (the service, or the device itself)")
def get_device(device_id: str, request: Request, caller: Principal = Depends(require_device_or_service)) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        row = hub_store.device_row(conn, device_id)
    return device_json(row, with_keys=caller.kind == "service")


@router.delete("/devices/{device_id}", status_code=204, summary="Delete a device identity (If-Match honoured)")
def delete_device(device_id: str, request: Request, _: Principal = Depends(require_service)) -> Response:
    match = if_match(request)
    with ctx_of(request).store.tx() as conn:
        row = hub_store.device_row(conn, device_id)
        check_etag(match, row["device_etag"], "device")
        conn.execute("DELETE FROM modules WHERE device_id=?", (device_id,))
        conn.execute("DELETE FROM devices WHERE device_id=?", (device_id,))
    return Response(status_code=204)
