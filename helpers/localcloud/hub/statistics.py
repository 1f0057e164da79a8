"""Registry and service statistics (`/statistics/...`), and the stand-in's own counters (`/api/hub/stats`)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from helpers.localcloud.common.auth import Principal, require_service
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.limits import refusal_counts
from helpers.localcloud.hub.runtime import runtime_of
from helpers.localcloud.hub.shapes import device_connected

router = APIRouter()


@router.get("/statistics/devices", summary="Device registry statistics")
def device_statistics(request: Request, _: Principal = Depends(require_service)) -> dict[str, int]:
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT status, COUNT(*) AS n FROM devices GROUP BY status").fetchall()
    by = {r["status"]: r["n"] for r in rows}
    return {"totalDeviceCount": sum(by.values()), "enabledDeviceCount": by.get("enabled", 0),
            "disabledDeviceCount": by.get("disabled", 0)}


@router.get("/statistics/service", summary="Service statistics (connected devices)")
def service_statistics(request: Request, _: Principal = Depends(require_service)) -> dict[str, int]:
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM devices").fetchall()
    return {"connectedDeviceCount": sum(1 for r in rows if device_connected(r))}


@router.get("/api/hub/stats", summary="The stand-in's counters: requests, throttled (429) answers, deployment timing, "
                                     "refusals by limit")
def hub_stats(request: Request, _: Principal = Depends(require_service)) -> dict[str, Any]:
    return {**runtime_of(request).stats(), "refused": refusal_counts()}
