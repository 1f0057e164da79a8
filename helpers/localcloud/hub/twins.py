"""Device and module twins (`/twins/{id}`, `/twins/{id}/modules/{mid}`): tags, desired properties, versions, etags."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from helpers.localcloud.common.auth import Principal, require_device_or_service, require_service
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.db import dumps, loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.hub import store as hub_store
from helpers.localcloud.hub.models import TwinIn
from helpers.localcloud.hub.params import if_match, in_thread
from helpers.localcloud.hub.shapes import module_twin_json, twin_json

router = APIRouter()


def _twin_patch(body: TwinIn, module: bool) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(tags, desired) of a twin write; reported properties in a service write are ignored, as IoT Hub does."""
    desired = body.properties.desired if body.properties is not None else None
    if module and body.tags:
        raise ApiError(400, "module twins have no tags in this hub; set tags on the device twin", "tags", "ArgumentInvalid")
    return body.tags, desired


@router.get("/twins/{device_id}", summary="Get a device twin (the service, or the device itself)")
def get_twin(device_id: str, request: Request, _: Principal = Depends(require_device_or_service)) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return twin_json(hub_store.device_row(conn, device_id))


async def _update_twin(device_id: str, request: Request, body: TwinIn, replace: bool) -> dict[str, Any]:
    tags, desired = _twin_patch(body, module=False)
    match = if_match(request)
    ctx = ctx_of(request)

    def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
        with ctx.store.tx() as conn:
            row = hub_store.device_row(conn, device_id)
            if match not in (None, "*") and match != row["etag"]:
                raise ApiError(412, f"If-Match {match!r} does not match the twin's etag; read the twin again", "If-Match",
                               "PreconditionFailed")
            cur_tags, cur_desired = loads(row["tags"], {}), loads(row["desired"], {})
            clean = {k: v for k, v in (desired or {}).items() if k not in ("$version", "$metadata")}
            new_tags = cur_tags if tags is None else hub_store.checked_merge(cur_tags, tags, "tags", "tags", replace=replace)
            new_desired = cur_desired if desired is None else hub_store.checked_merge(
                cur_desired, clean, "desired", "properties.desired", replace=replace)
            changed = new_desired != cur_desired
            version = row["desired_version"] + (1 if changed else 0)
            conn.execute("UPDATE devices SET tags=?, desired=?, desired_version=?, twin_version=twin_version+1, etag=? WHERE device_id=?",
                         (dumps(new_tags), dumps(new_desired), version, hub_store.new_etag(), device_id))
            push = ({**(new_desired if replace else clean), "$version": version}) if changed else None
            return twin_json(hub_store.device_row(conn, device_id)), push

    twin, push = await in_thread(work)
    hub_store.notify_desired(device_id, None, push)
    return twin


@router.patch("/twins/{device_id}", summary="Merge-patch a twin's tags and desired properties (If-Match honoured)")
async def patch_twin(device_id: str, request: Request, body: TwinIn, _: Principal = Depends(require_service)) -> dict[str, Any]:
    return await _update_twin(device_id, request, body, replace=False)


@router.put("/twins/{device_id}", summary="Replace a twin's tags and desired properties (If-Match honoured)")
async def put_twin(device_id: str, request: Request, body: TwinIn, _: Principal = Depends(require_service)) -> dict[str, Any]:
    return await _update_twin(device_id, request, body, replace=True)


@router.get("/twins/{device_id}/modules/{module_id}", summary="Get a module twin")
def get_module_twin(device_id: str, module_id: str, request: Request, _: Principal = Depends(require_service)) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return module_twin_json(hub_store.module_row(conn, device_id, module_id), hub_store.device_row(conn, device_id))


async def _update_module_twin(device_id: str, module_id: str, request: Request, body: TwinIn, replace: bool) -> dict[str, Any]:
    _, desired = _twin_patch(body, module=True)
    match = if_match(request)
    ctx = ctx_of(request)

    def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
        with ctx.store.tx() as conn:
            return hub_store.set_module_desired(conn, device_id, module_id, desired or {}, replace=replace and desired is not None,
                                                if_match=match)

    twin, push = await in_thread(work)
    hub_store.notify_desired(device_id, module_id, push)
    return twin


@router.patch("/twins/{device_id}/modules/{module_id}", summary="Merge-patch a module twin's desired properties (If-Match honoured)")
async def patch_module_twin(device_id: str, module_id: str, request: Request, body: TwinIn,
                            _: Principal = Depends(require_service)) -> dict[str, Any]:
    return await _update_module_twin(device_id, module_id, request, body, replace=False)


@router.put("/twins/{device_id}/modules/{module_id}", summary="Replace a module twin's desired properties (If-Match honoured)")
async def put_module_twin(device_id: str, module_id: str, request: Request, body: TwinIn,
                          _: Principal = Depends(require_service)) -> dict[str, Any]:
    return await _update_module_twin(device_id, module_id, request, body, replace=True)
