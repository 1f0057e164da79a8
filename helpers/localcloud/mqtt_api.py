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

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from helpers.localcloud.common import ApiError, ctx_of, json_body, require_service
from helpers.localcloud.mqtt import MethodError
from helpers.localcloud.mqtt_store import Identity

router = APIRouter(tags=["hub"])

_ERROR_NAMES = {404103: "DeviceNotOnline", 504101: "GatewayTimeout", 503101: "ServiceUnavailable",
                400027: "ArgumentInvalid", 404001: "DeviceNotFound", 404010: "ModuleNotFound"}


def azure_error(status: int, code: int, message: str) -> JSONResponse:
    """An error in IoT Hub's body shape (`Message` with `ErrorCode:...`, `ExceptionMessage`)."""
    name = _ERROR_NAMES.get(code, "GenericError")
    body = {"Message": f"ErrorCode:{name};{message}", "ExceptionMessage": message, "errorCode": code}
    return JSONResponse(body, status_code=status)


def _timeout(body: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{key} must be an integer from {lo} to {hi} seconds")
    return value


async def _invoke(request: Request, device_id: str, module_id: str | None) -> Any:
    require_service(request)
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("methodName"), str) or not body["methodName"]:
        return azure_error(400, 400027, "the body needs methodName (a string), and may carry payload and "
                                        "responseTimeoutInSeconds / connectTimeoutInSeconds")
    try:
        response_timeout = _timeout(body, "responseTimeoutInSeconds", 30, 5, 300)
        connect_timeout = _timeout(body, "connectTimeoutInSeconds", 0, 0, 300)
    except ValueError as exc:
        return azure_error(400, 400027, str(exc))
    broker = getattr(request.app.state, "mqtt", None)
    if broker is None:
        raise ApiError(503, "the hub's MQTT endpoint is not running in this service", "methodName")
    with ctx_of(request).store.read() as conn:
        if conn.execute("SELECT 1 FROM devices WHERE device_id=?", (device_id,)).fetchone() is None:
            return azure_error(404, 404001, f"device {device_id!r} is not registered in this hub")
    ident = Identity(device_id, module_id)
    try:
        result = await run_in_threadpool(broker.invoke_method, ident, body["methodName"], body.get("payload"),
                                         response_timeout, connect_timeout)
    except MethodError as exc:
        return azure_error(exc.status, exc.error_code, exc.message)
    return result


@router.post("/twins/{device_id}/methods", summary="Invoke a direct method on a device (relayed over MQTT)")
async def invoke_device_method(device_id: str, request: Request) -> Any:
    return await _invoke(request, device_id, None)


@router.post("/twins/{device_id}/modules/{module_id}/methods",
             summary="Invoke a direct method on a module (relayed over MQTT)")
async def invoke_module_method(device_id: str, module_id: str, request: Request) -> Any:
    return await _invoke(request, device_id, module_id)


__all__ = ["router", "azure_error"]
