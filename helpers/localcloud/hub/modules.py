"""Module identities (`/devices/{id}/modules/{mid}`): the service's, and an IoT Edge device's own (device-scoped API)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from helpers.localcloud.common.auth import Principal, require_device_or_service, require_service
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.hub import store as hub_store
from helpers.localcloud.hub.models import ModuleIn, auth_columns
from helpers.localcloud.hub.params import check_body_id, check_module_id, if_match, in_thread
from helpers.localcloud.hub.shapes import module_json

router = APIRouter()


@router.put("/devices/{device_id}/modules/{module_id}", summary="Create or update a module identity (If-Match to update)")
async def put_module(device_id: str, module_id: str, request: Request, body: ModuleIn | None = None,
                     _: Principal = Depends(require_device_or_service)) -> dict[str, Any]:
    # the service, or an IoT Edge device for its own modules (IoT Hub's device-scoped identity API,
    # which IoT Edge's identity service calls with the device's own SAS token)
    check_module_id(module_id, writing=True)
    body = body or ModuleIn()
    check_body_id(body.deviceId, device_id, "deviceId")
    check_body_id(body.moduleId, module_id, "moduleId")
    auth = auth_columns(body.authentication, f"module {module_id!r}")
    match = if_match(request)
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            exists = conn.execute("SELECT 1 FROM modules WHERE device_id=? AND module_id=?", (device_id, module_id)).fetchone()
            if exists and match is None:
                raise ApiError(409, f"module {module_id!r} already exists on device {device_id!r}; send If-Match to update it",
                               "moduleId", "ModuleAlreadyExistsOnDevice")
            if exists:
                row = hub_store.update_module_identity(conn, device_id, module_id, if_match=match, managed_by=body.managedBy,
                                                       **_auth_kwargs(auth))
            else:
                row = hub_store.create_module(conn, device_id, module_id, managed_by=body.managedBy, **_auth_kwargs(auth))
            return module_json(row, with_keys=True)

    return await in_thread(work)


def _auth_kwargs(auth: dict[str, Any]) -> dict[str, Any]:
    return {"auth_type": auth["auth_type"], "primary_key": auth["primary_key"], "secondary_key": auth["secondary_key"],
            "primary_thumbprint": auth["primary_thumbprint"], "secondary_thumbprint": auth["secondary_thumbprint"]}


@router.get("/devices/{device_id}/modules", summary="List a device's module identities")
def list_modules(device_id: str, request: Request, _: Principal = Depends(require_service)) -> list[dict[str, Any]]:
    with ctx_of(request).store.read() as conn:
        return [module_json(r) for r in hub_store.list_modules(conn, device_id)]


@router.get("/devices/{device_id}/modules/{module_id}", summary="Get a module identity")
def get_module(device_id: str, module_id: str, request: Request,
               _: Principal = Depends(require_device_or_service)) -> dict[str, Any]:
    # an edge device reads its own modules' identities
    with ctx_of(request).store.read() as conn:
        return module_json(hub_store.module_row(conn, device_id, module_id))


@router.delete("/devices/{device_id}/modules/{module_id}", status_code=204, summary="Delete a module identity (If-Match honoured)")
def delete_module(device_id: str, module_id: str, request: Request, _: Principal = Depends(require_service)) -> Response:
    if module_id in hub_store.EDGE_SYSTEM_MODULES:
        raise ApiError(400, f"{module_id} is an IoT Edge system module; it goes away with the device", "moduleId", "ArgumentInvalid")
    with ctx_of(request).store.tx() as conn:
        hub_store.delete_module(conn, device_id, module_id, if_match(request))
    return Response(status_code=204)
