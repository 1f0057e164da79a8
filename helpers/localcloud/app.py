"""The local cloud's ASGI application (hub + studio endpoints) and its server entry point."""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from helpers.config import mask
from helpers.endpoints import cloud_dir, read_service
from helpers.errors import ServiceError
from helpers.localcloud.common import tls
from helpers.localcloud.common.auth import Principal, hub_principal
from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import Context, service_key_from_cs
from helpers.localcloud.common.db import Store
from helpers.localcloud.common.errors import ApiError, disk_full_error, error_from_service_error, is_disk_full
from helpers.localcloud.common.guard import RequestGuard
from helpers.localcloud.common.limits import escape_controls
from helpers.localcloud.eventhub.server import start_for_service as start_eventhub
from helpers.localcloud.hub.deploy import Evaluator
from helpers.localcloud.hub.errors import azure_error_response, is_hub_path
from helpers.localcloud.hub.routes import router as hub_router
from helpers.localcloud.hub.runtime import HubRuntime, hub_runtime_from
from helpers.localcloud.mqtt.api import router as methods_router
from helpers.localcloud.mqtt.endpoint import start_broker
from helpers.localcloud.openapi import document_answers
from helpers.localcloud.service import DEFAULT_MAX_BODY_MB, HOST, ensure_credentials, secure_state, write_service
from helpers.localcloud.studio.auth import require_studio
from helpers.localcloud.studio.routes import router as studio_router
from helpers.localcloud.studio.store import sweep_files

VERSION = "1"
log = logging.getLogger("helpers.localcloud")
access_log = logging.getLogger("helpers.localcloud.access")


class MaskingFilter(logging.Filter):
    """Masks secret-looking values (keys, SAS signatures) in every log record, and writes it on one line.

    Control characters (newlines, NUL...) a client put into an id or a topic are escaped, so no
    request can forge a log line or write raw bytes into `service.log`; a traceback
    (`exc_info`) is added below the line by the formatter.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(escape_controls(record.getMessage()))
        record.args = ()
        return True


def require_any(request: Request) -> Principal:
    """Dependency for service-wide endpoints (health, OpenAPI): a studio key or a hub SAS token."""
    if request.headers.get("x-api-key"):
        return require_studio(request)
    if request.headers.get("authorization"):
        return hub_principal(request)
    raise ApiError(401, "authentication required: send x-api-key (studio) or Authorization (hub SAS token)", "Authorization")


def create_app(workspace: str | Path, port: int, max_body_mb: float = DEFAULT_MAX_BODY_MB, hub_port: int | None = None,
               hub: HubRuntime | None = None, service_info: dict[str, Any] | None = None) -> Any:
    """The ASGI app for `workspace`, served on `port` (plain HTTP) and `hub_port` (HTTPS, the hub's address).

    Args:
        hub_port: the IoT Hub REST API's HTTPS port on `tls.hub_address(workspace)`; it names
            the hub in the service connection string (`HostName=ADDRESS:HUB_PORT`).
        hub: the hub's runtime settings (throttling, deployment timing); default ones when None.
        service_info: filled at startup with what service.json tells of the endpoints the app
            starts itself (the Event Hubs-compatible endpoint's address and name, or its error).
    """
    ws = Path(workspace).resolve()
    d = cloud_dir(ws)
    address = tls.hub_address(ws)
    hub_host = f"{address}:{hub_port}" if hub_port else f"{HOST}:{port}"
    creds = ensure_credentials(ws, port, hub_host=hub_host)
    host, service_key = service_key_from_cs(creds["service_connection_string"])
    store = Store(d / "state.db")
    # every name this hub answers to: HTTPS (service SDK), the bare address (device/module
    # connection strings, MQTT) and the plain-HTTP listener (the HTTP edge agent)
    hub_hosts = tuple(dict.fromkeys(h.lower() for h in (host, address, f"{HOST}:{port}")))
    ctx = Context(workspace=ws, store=store, files=d / "files", service_key=service_key, service_host=host,
                  studio_api_key=creds["studio_api_key"], max_body_bytes=int(max_body_mb * 1e6), hub_hosts=hub_hosts)
    ctx.files.mkdir(parents=True, exist_ok=True)
    started_at = now_iso()
    runtime = hub or HubRuntime()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        removed = sweep_files(ctx)
        if any(removed.values()):
            log.info("removed files left by an interrupted run: %s", removed)
        app.state.mqtt = start_broker(ws, store)  # IoT Hub's device endpoint (MQTT over TLS, port 8883)
        # IoT Hub's built-in Event Hubs-compatible endpoint (AMQP over TLS, port 5671); the rest serves without it
        app.state.eventhub, eventhub_info = start_eventhub(ws, store, service_key)
        if service_info is not None:
            service_info.update(eventhub_info)
        runtime.evaluator = Evaluator(store, runtime.timing).start()  # at-scale deployments on IoT Hub's cycle
        yield
        runtime.evaluator.stop()
        if app.state.eventhub is not None:
            app.state.eventhub.stop()
        app.state.mqtt.stop()
        store.close()
        info = read_service(ws) or {}
        if info.get("pid") == os.getpid():
            write_service(ws, {**info, "running": False, "stopped_at": now_iso()})
        log.info("local cloud stopped cleanly")

    app = FastAPI(
        title="edgeloop local cloud",
        version=VERSION,
        description="Embedded IoT hub (Azure IoT Hub shapes, SAS auth) and studio (Edge Impulse ingestion, x-api-key).",
        openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.hub = runtime

    def error_response_for(path: str, err: ApiError) -> JSONResponse:
        """The one place an error answer is shaped: IoT Hub's on hub paths (so the service SDK raises its own errors)."""
        if is_hub_path(path):
            return azure_error_response(err)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers or None)

    def error_response(request: Request, err: ApiError) -> JSONResponse:
        return error_response_for(request.url.path, err)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(request, error_from_service_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error_response(request, ApiError(400, f"{field or 'request'}: {first.get('msg', 'invalid value')}", field))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = f"no such endpoint {request.method} {request.url.path}; see /openapi.json" if exc.status_code in (404, 405) else str(exc.detail)
        return error_response(request, ApiError(exc.status_code, msg))

    @app.exception_handler(OSError)
    @app.exception_handler(sqlite3.Error)
    async def _storage(request: Request, exc: Exception) -> JSONResponse:
        if not is_disk_full(exc):
            return await _unexpected(request, exc)
        log.warning("%s %s refused: the disk is full (%s)", request.method, request.url.path, exc)
        return error_response(request, disk_full_error(exc, d))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request, ApiError(500, f"internal error ({type(exc).__name__}); see {d / 'service.log'}"))

    @app.middleware("http")
    async def _access(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        # the path only: query strings can carry sig=... and are never logged
        access_log.info("%s %s %d %.1fms", request.method, request.url.path, response.status_code, (time.perf_counter() - t0) * 1e3)
        return response

    @app.get("/api/health", tags=["service"], summary="Liveness and identity of this service")
    def health(caller=Depends(require_any)) -> dict[str, Any]:
        body = {"status": "ok", "started_at": started_at, "version": VERSION}
        if caller.kind == "service" or caller.role == "management":  # the owner: which process, which workspace
            body.update(pid=os.getpid(), port=port, workspace=str(ws))
        return body

    @app.get("/openapi.json", tags=["service"], include_in_schema=False)
    def openapi(_=Depends(require_any)) -> dict[str, Any]:
        return document_answers(app.openapi())  # the 400s and error bodies this app sends, not FastAPI's 422

    app.include_router(hub_router)
    app.include_router(methods_router)
    app.include_router(studio_router)
    return RequestGuard(app, ctx.max_body_bytes, lambda path, err: error_response_for(path, err))


def serve(workspace: str | Path, port: int, max_body_mb: float | None = None, hub_port: int | None = None,
          hub: HubRuntime | None = None) -> None:
    """Run the service in the foreground until SIGTERM/SIGINT (what `start` runs detached).

    Two listeners share one app: plain HTTP on 127.0.0.1:`port` (studio, the HTTP edge agent)
    and HTTPS on the workspace's hub address:`hub_port` with the workspace CA's certificate (the
    IoT Hub REST API the service SDK calls). The MQTT endpoint starts in the app's lifespan.
    """
    ws = Path(workspace).resolve()
    # Everything this process writes (database, WAL, sample and model files, TLS keys) is owner-only,
    # and what an earlier run or a person left looser is tightened now.
    os.umask(0o077)
    secure_state(ws)
    cloud_dir(ws)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskingFilter())
    root = logging.getLogger("helpers.localcloud")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    if max_body_mb is None:
        max_body_mb = float(os.environ.get("EDGELOOP_LOCALCLOUD_MAX_BODY_MB", DEFAULT_MAX_BODY_MB))
    hub = hub or hub_runtime_from()
    address = tls.hub_address(ws)
    cert = tls.ensure_server_cert(ws, address)
    endpoints_info: dict[str, Any] = {}  # filled by the app's lifespan (the Event Hubs-compatible endpoint)
    app = create_app(ws, port, max_body_mb, hub_port=hub_port, hub=hub, service_info=endpoints_info)
    secure: uvicorn.Server | None = None
    if hub_port:
        secure = uvicorn.Server(uvicorn.Config(app, host=address, port=hub_port, access_log=False, log_level="warning",
                                               lifespan="off", timeout_graceful_shutdown=5,
                                               ssl_certfile=str(cert.cert), ssl_keyfile=str(cert.key)))

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.should_exit:
                return
            while secure is not None and not secure.started:
                if secure.should_exit:
                    self.should_exit = True
                    return
                await asyncio.sleep(0.02)
            info = {"url": f"http://{HOST}:{port}", "pid": os.getpid(), "host": HOST, "port": port,
                    "started_at": now_iso(), "running": True, "max_body_mb": max_body_mb,
                    "hub_address": address, "ca_file": str(cert.ca)}
            if hub_port:
                info.update({"hub_port": hub_port, "hub_url": f"https://{address}:{hub_port}"})
            info.update(endpoints_info)
            write_service(ws, info)
            log.info("local cloud listening on http://%s:%d and https://%s:%s (workspace %s)", HOST, port, address, hub_port, ws)

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if secure is not None:
                secure.should_exit = True

    main = Server(uvicorn.Config(app, host=HOST, port=port, access_log=False, log_level="warning", lifespan="on",
                                 timeout_graceful_shutdown=5))

    async def run_main() -> None:
        try:
            await main.serve()
        finally:  # however the main server ends (signal, failed startup), the HTTPS listener ends with it
            if secure is not None:
                secure.should_exit = True

    async def run_all() -> None:
        tasks = [run_main()]
        if secure is not None:
            tasks.append(secure._serve())  # no signal capture of its own: the main server stops it
        await asyncio.gather(*tasks)

    asyncio.run(run_all())
