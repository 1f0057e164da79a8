"""Service REST endpoints that reach devices over MQTT: direct methods, as IoT Hub shapes them.

`IoTHubRegistryManager.invoke_device_method(device_id, CloudToDeviceMethod(...))` POSTs to
`/twins/{deviceId}/methods` and `invoke_device_module_method` to
`/twins/{deviceId}/modules/{moduleId}/methods` with `methodName`, `payload`,
`responseTimeoutInSeconds` (5..300, default 30) and `connectTimeoutInSeconds` (0..300, default
0: fail at once when the device is offline). The hub relays the call to the connected client
on `$iothub/methods/POST/{name}/?$rid=` and answers `{"status", "payload"}` with the device's
answer; 404 (error code 404103 DeviceNotOnline) when the client is not connected or has not
subscribed to methods, 504 (504101 GatewayTimeout) when it does not answer in time.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from helpers.localcloud.common.auth import Principal, require_service
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.hub.models import CloudToDeviceMethod
from helpers.localcloud.mqtt.session import MethodError
from helpers.localcloud.mqtt.store import Identity

router = APIRouter(tags=["hub"])

_ERROR_NAMES = {404103: "DeviceNotOnline", 504101: "GatewayTimeout", 503101: "ServiceUnavailable",
                400027: "ArgumentInvalid", 404001: "DeviceNotFound", 404010: "ModuleNotFound"}


def method_error(status: int, error_code: int, message: str) -> ApiError:
    """An `ApiError` with IoT Hub's numeric error code and its name (the app's hub error handler shapes it)."""
    return ApiError(status, message, "methodName", _ERROR_NAMES.get(error_code, "GenericError"), error_code=error_code)


async def _invoke(request: Request, device_id: str, module_id: str | None, body: CloudToDeviceMethod) -> dict[str, Any]:
    broker = getattr(request.app.state, "mqtt", None)
    if broker is None:
        raise ApiError(503, "the hub's MQTT endpoint is not running in this service", "methodName")
    with ctx_of(request).store.read() as conn:
        if conn.execute("SELECT 1 FROM devices WHERE device_id=?", (device_id,)).fetchone() is None:
            raise method_error(404, 404001, f"device {device_id!r} is not registered in this hub")
    try:
        return await run_in_threadpool(broker.invoke_method, Identity(device_id, module_id), body.methodName, body.payload,
                                       30 if body.responseTimeoutInSeconds is None else body.responseTimeoutInSeconds,
                                       0 if body.connectTimeoutInSeconds is None else body.connectTimeoutInSeconds)
    except MethodError as exc:
        raise method_error(exc.status, exc.error_code, exc.message) from None


@router.post("/twins/{device_id}/methods", summary="Invoke a direct method on a device (relayed over MQTT)")
async def invoke_device_method(device_id: str, request: Request, body: CloudToDeviceMethod,
                               _: Principal = Depends(require_service)) -> dict[str, Any]:
    return await _invoke(request, device_id, None, body)


@router.post("/twins/{device_id}/modules/{module_id}/methods",
             summary="Invoke a direct method on a module (relayed over MQTT)")
async def invoke_module_method(device_id: str, module_id: str, request: Request, body: CloudToDeviceMethod,
                               _: Principal = Depends(require_service)) -> dict[str, Any]:
    return await _invoke(request, device_id, module_id, body)


__all__ = ["router", "method_error"]
