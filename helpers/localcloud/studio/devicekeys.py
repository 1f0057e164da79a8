"""`POST /api/devicekeys`: the key a device is given, from the studio (management key only).

As Edge Impulse's project API keys with a role: the notebook deploying a fleet asks the studio
for the key a collector (ingest only) or a runner (ingest and the download of one model version)
gets, and never hands a device the management key.
"""
from __future__ import annotations

from typing import Any

from fastapi import Request

from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio.keys import device_key
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import DeviceKeyBody

router = studio_router(tags=["studio"])


@router.post("/api/devicekeys", summary="A device key: ingestion only (modelVersion null), or also the download of "
             "model version modelVersion")
def create_device_key(request: Request, body: DeviceKeyBody) -> dict[str, Any]:
    version = body.modelVersion
    if version is not None and version < 1:
        raise ApiError(400, f"modelVersion must be a positive integer (a registry version) or null, got {version}",
                       "modelVersion")
    key = device_key(ctx_of(request).studio_api_key, version)
    return {"success": True, "apiKey": key.get_secret_value()}
