"""`IoTHub`: the one `Hub` implementation, on the official `azure-iot-hub` SDK.

    hub = IoTHub.local(workspace)                    # the workspace's stand-in (helpers.endpoints.local_hub)
    hub = IoTHub.from_connection_string(cs)          # Azure IoT Hub (IOTHUB_CONNECTION_STRING)
    hub = get_hub()                                  # either, from settings (helpers.hub.get_hub)

Every call goes through `IoTHubRegistryManager`, `IoTHubConfigurationManager` and the SDK's query
operation; nothing here speaks HTTP by hand. The only difference between the stand-in and Azure
is the connection string and, for the stand-in, the CA to trust: it is set on these SDK clients'
own connection settings (msrest `config.connection.verify`), never process-wide.

Errors: the SDK raises `msrest.exceptions.HttpOperationError` (and `ClientRequestError` when the
hub cannot be reached); `_sdk()` turns them, once, into `helpers.errors` classes whose message
carries IoT Hub's error code and says what to do. Throttling (429) and transient 5xx answers
are retried by the SDK's own transport (urllib3 `Retry`, honouring `Retry-After`).
The SDK (`azure.iot.hub`, msrest) is imported inside the methods that call it: it takes a second
to import and `helpers.hub` is imported by paths that never call a hub.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from helpers.config import Secret, load_settings, parse_connection_string
from helpers.endpoints import local_eventhub as local_eventhub_endpoint
from helpers.endpoints import local_hub as local_hub_endpoint
from helpers.endpoints import resolve_workspace
from helpers.errors import ConfigError, Conflict, NotFound, ServiceError
from helpers.hub.base import Deployment, Device, DeviceStatus, ModuleStatus, Twin
from helpers.hub.sdk_errors import http_error, unreachable_error
from helpers.hub.shapes import (
    EDGE_AGENT,
    deployment_from_sdk,
    device_from_row,
    device_from_sdk_twin,
    device_status_from,
    edge_agent_report,
    modules_content_of,
    quote,
    strip_meta,
    twin_from_sdk,
)
from helpers.hub.telemetry import Telemetry, read_telemetry
from helpers.hub.x509 import make_device_certificate

log = logging.getLogger("helpers.hub")
T = TypeVar("T")


class IoTHub:
    """An IoT hub (Azure IoT Hub or the workspace's stand-in) through the `azure-iot-hub` SDK.

    Args:
        connection_string: a service connection string with a shared access policy
            (`HostName=...;SharedAccessKeyName=iothubowner;SharedAccessKey=...`).
        ca_file: a CA certificate to trust for this hub only (the stand-in's); None: the system's.
        workspace: where X.509 device keys are kept (`WORKSPACE/hub/x509/`); default from settings.
        timeout: seconds per HTTP call.
        retries: how often the SDK's transport retries a throttled (429) or failed (5xx) call.
        reload: called when the hub cannot be reached; may return a new (connection string,
            CA file) to try once more (the stand-in restarted on another port).
        eventhub: the hub's built-in Event Hubs-compatible endpoint for `read_telemetry`: its
            connection string (read with `ca_file`), or a callable returning (connection string,
            CA file); None: telemetry cannot be read through this client.
    """

    def __init__(self, connection_string: str | Secret, ca_file: str | Path | None = None, workspace: str | Path | None = None,
                 timeout: float = 30.0, retries: int = 5,
                 reload: Callable[[], tuple[Secret, str | None]] | None = None,
                 eventhub: str | Secret | Callable[[], tuple[Secret, str | None]] | None = None):
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._reload = reload
        if eventhub is None or callable(eventhub):
            self._eventhub = eventhub
        else:
            eh = eventhub if isinstance(eventhub, Secret) else Secret(str(eventhub), "IOTHUB_EVENTHUB_CONNECTION_STRING")
            self._eventhub = lambda: (eh, self.ca_file)
        self._workspace = Path(workspace).expanduser().resolve() if workspace else None
        self._connect(connection_string, ca_file)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_connection_string(cls, connection_string: str | Secret, **kw: Any) -> IoTHub:
        """A hub from a service connection string (Azure's, from the portal or `az iot hub connection-string show`)."""
        return cls(connection_string, **kw)

    @classmethod
    def local(cls, workspace: str | Path | None = None, **kw: Any) -> IoTHub:
        """The workspace's local stand-in: its connection string and CA (`helpers.endpoints.local_hub`).

        Raises:
            ConfigError: the local cloud never started there (`session.connect()` or
                `python -m helpers.localcloud start` starts it).
        """
        ws = resolve_workspace(workspace)

        def creds() -> tuple[Secret, str | None]:
            endpoint = local_hub_endpoint(ws)
            return endpoint.connection_string, str(endpoint.ca_file)

        def events() -> tuple[Secret, str | None]:  # read at each call: a restart may move the endpoint
            endpoint = local_eventhub_endpoint(ws)
            return endpoint.connection_string, str(endpoint.ca_file)

        cs, ca = creds()
        return cls(cs, ca_file=ca, workspace=ws, reload=creds, eventhub=events, **kw)

    def _connect(self, connection_string: str | Secret, ca_file: str | Path | None) -> None:
        import requests
        from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
        from urllib3.util.retry import Retry

        cs = connection_string if isinstance(connection_string, Secret) else Secret(str(connection_string), "connection_string")
        parts = parse_connection_string(cs)
        missing = [k for k in ("SharedAccessKeyName", "SharedAccessKey") if not parts.get(k)]
        if missing or "DeviceId" in parts:
            raise ConfigError("the hub needs a service connection string (HostName=...;SharedAccessKeyName=iothubowner;"
                              "SharedAccessKey=...), not a device's: set IOTHUB_CONNECTION_STRING to the hub's iothubowner policy")
        self._cs = cs
        self.host: str = parts["HostName"]
        self.ca_file = str(ca_file) if ca_file else None
        self._registry = IoTHubRegistryManager.from_connection_string(cs.get_secret_value())
        self._configs = IoTHubConfigurationManager.from_connection_string(cs.get_secret_value())
        for protocol in (self._registry.protocol, self._configs.protocol):
            conn = protocol.config.connection
            conn.timeout = self.timeout
            if self.ca_file:
                conn.verify = self.ca_file  # this client only: never REQUESTS_CA_BUNDLE
            # 429 and 5xx retried for every method, waiting Retry-After when the hub sends it
            policy = Retry(total=self.retries, connect=self.retries, read=min(2, self.retries), status=self.retries, backoff_factor=0.5,
                           status_forcelist=[429, 500, 502, 503, 504], allowed_methods=None, respect_retry_after_header=True,
                           raise_on_status=False, backoff_max=30)
            policy.BACKOFF_MAX = 30  # msrest's ClientRetryPolicy reads the urllib3 1.x name when it logs
            protocol.config.retry_policy.policy = policy
            # msrest mounted its transport's session when the SDK client was built; a fresh session is
            # initialised from config.retry_policy (msrest's RequestsHTTPSender.session setter)
            driver = getattr(getattr(protocol.config.pipeline, "_sender", None), "driver", None)
            if driver is None:
                raise ConfigError("azure-iot-hub's msrest pipeline changed shape: pin azure-iot-hub==2.7.0 (pyproject.toml)")
            driver.session = requests.Session()

    def __repr__(self) -> str:
        return f"IoTHub(host={self.host!r}{', ca_file=' + repr(self.ca_file) if self.ca_file else ''})"

    @property
    def connection_string_service(self) -> Secret:
        """The service connection string, masked."""
        return self._cs

    @property
    def device_host(self) -> str:
        """The host devices connect to (MQTT on 8883): the HostName without a port."""
        return self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host

    @property
    def workspace(self) -> Path:
        if self._workspace is None:
            self._workspace = load_settings().workspace
        return self._workspace

    # ------------------------------------------------------------------ the one place SDK errors are handled
    def _sdk(self, what: str, call: Callable[[], T]) -> T:
        """Run one SDK call; its errors become `helpers.errors` (retried once after a stand-in restart).

        `call` reads `self._registry` / `self._configs` when it runs, so a retry after `_connect`
        goes to the new clients.
        """
        from msrest.exceptions import ClientRequestError, HttpOperationError

        for attempt in (0, 1):
            try:
                return call()
            except HttpOperationError as exc:
                raise http_error(what, exc) from None
            except ClientRequestError as exc:
                if attempt == 0 and self._reload is not None:
                    cs, ca = self._reload()
                    if cs.get_secret_value() != self._cs.get_secret_value() or ca != self.ca_file:
                        self._connect(cs, ca)
                        continue
                raise unreachable_error(what, self.host, exc, local=self._reload is not None) from None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ telemetry: the built-in Event Hubs-compatible endpoint
    def eventhub_endpoint(self) -> tuple[Secret, str | None]:
        """The (connection string, CA file) of this hub's built-in Event Hubs-compatible endpoint.

        Raises:
            ConfigError: none is known (Azure: set IOTHUB_EVENTHUB_CONNECTION_STRING), or the stand-in's did not start.
        """
        if self._eventhub is None:
            raise ConfigError("this hub client knows no Event Hubs-compatible endpoint to read telemetry from: set "
                              "IOTHUB_EVENTHUB_CONNECTION_STRING to the hub's Built-in endpoints > Event Hub-compatible "
                              "endpoint (Azure portal, or `az iot hub connection-string show --default-eventhub`)")
        return self._eventhub()

    def read_telemetry(self, **kw: Any) -> list[Telemetry]:
        """Device-to-cloud messages from the built-in Event Hubs-compatible endpoint, with `azure-eventhub`.

        The same call reads Azure's hub and the stand-in; `kw` as `helpers.hub.telemetry.read_telemetry`
        (`starting_position`, `device_id`, `keep`, `until`, `max_events`, `timeout_s`, `consumer_group`).
        """
        cs, ca = self.eventhub_endpoint()
        return read_telemetry(cs, ca, **kw)

    # ------------------------------------------------------------------ identities
    def create_edge_device(self, device_id: str, tags: dict[str, Any] | None = None, exist_ok: bool = True,
                           auth: str = "sas", edge: bool = True) -> Device:
        """Register an IoT Edge device; with `exist_ok` an existing one is kept as it is.

        Args:
            auth: `sas` (symmetric keys, generated by the hub), `x509` (a self-signed device
                certificate made here, its key kept owner-only in `WORKSPACE/hub/x509/`; the hub
                stores its thumbprint) or `ca` (a certificate signed by a CA registered in the hub).
            edge: the IoT Edge capability (the device gets `$edgeAgent` and `$edgeHub`).
        """
        if auth not in ("sas", "x509", "ca"):
            raise ValueError(f"auth {auth!r}: use 'sas', 'x509' or 'ca'")
        created = True
        try:
            if auth == "sas":
                self._sdk(f"create device {device_id}", lambda: self._registry.create_device_with_sas(device_id, None, None, "enabled", iot_edge=edge))
            elif auth == "x509":
                existing = self._exists(device_id)
                if existing:
                    raise Conflict(f"create device {device_id}: HTTP 409 DeviceAlreadyExists", 409)
                _, _, thumb = make_device_certificate(device_id, self.workspace / "hub" / "x509")
                self._sdk(f"create device {device_id}", lambda: self._registry.create_device_with_x509(device_id, thumb, thumb, "enabled", iot_edge=edge))
            else:
                self._sdk(f"create device {device_id}", lambda: self._registry.create_device_with_certificate_authority(device_id, "enabled", iot_edge=edge))
        except Conflict:
            if not exist_ok:
                raise
            created = False
        if tags:
            self.update_tags(device_id, tags)
        log.info("device %s %s", device_id, "created" if created else "exists")
        return self.get_device(device_id)

    def _exists(self, device_id: str) -> bool:
        try:
            self._sdk(f"get device {device_id}", lambda: self._registry.get_device(device_id))
            return True
        except NotFound:
            return False

    def device_certificate(self, device_id: str) -> tuple[Path, Path]:
        """(certificate, key) files of a device created here with `auth="x509"`."""
        folder = self.workspace / "hub" / "x509"
        cert, key = folder / f"{device_id}.pem", folder / f"{device_id}.key"
        if not cert.is_file() or not key.is_file():
            raise NotFound(f"no X.509 certificate for {device_id!r} in {folder}: create the device with auth='x509'", 404)
        return cert, key

    def list_devices(self) -> list[Device]:
        """Every device, read with the query language (`SELECT * FROM devices`), as IoT Hub recommends."""
        return [device_from_row(d) for d in self.query("SELECT * FROM devices")]

    def get_device(self, device_id: str) -> Device:
        """One device (identity and tags, from its twin)."""
        return device_from_sdk_twin(self._sdk(f"get device {device_id}", lambda: self._registry.get_twin(device_id)))

    def delete_device(self, device_id: str) -> None:
        self._sdk(f"delete device {device_id}", lambda: self._registry.delete_device(device_id))

    def connection_string(self, device_id: str, module_id: str | None = None) -> Secret:
        """The device's (or module's) connection string for the device SDK, masked.

        `HostName` is the hub's host without a port (devices connect to port 8883 of it);
        X.509 identities get `...;x509=true` (the device presents its certificate instead).
        """
        if module_id is None:
            ident = self._sdk(f"get device {device_id}", lambda: self._registry.get_device(device_id))
        else:
            ident = self._sdk(f"get module {device_id}/{module_id}", lambda: self._registry.get_module(device_id, module_id))
        base = f"HostName={self.device_host};DeviceId={device_id}" + (f";ModuleId={module_id}" if module_id else "")
        auth = ident.authentication
        if auth is not None and auth.type == "sas" and auth.symmetric_key and auth.symmetric_key.primary_key:
            value = f"{base};SharedAccessKey={auth.symmetric_key.primary_key}"
        else:
            value = f"{base};x509=true"
        return Secret(value, f"connection_string[{device_id}{'/' + module_id if module_id else ''}]")

    # ------------------------------------------------------------------ modules
    def list_modules(self, device_id: str) -> list[str]:
        """The device's module identities (IoT Edge devices: `$edgeAgent`, `$edgeHub`, and their modules)."""
        return sorted(m.module_id for m in self._sdk(f"list modules of {device_id}", lambda: self._registry.get_modules(device_id)))

    def create_module(self, device_id: str, module_id: str, managed_by: str | None = None, exist_ok: bool = True) -> str:
        """Create a module identity with symmetric keys; returns its id."""
        try:
            self._sdk(f"create module {device_id}/{module_id}", lambda: self._registry.create_module_with_sas(device_id, module_id, managed_by, None, None))
        except Conflict:
            if not exist_ok:
                raise
        return module_id

    def delete_module(self, device_id: str, module_id: str) -> None:
        self._sdk(f"delete module {device_id}/{module_id}", lambda: self._registry.delete_module(device_id, module_id))

    # ------------------------------------------------------------------ twins
    def get_twin(self, device_id: str) -> Twin:
        return twin_from_sdk(self._sdk(f"get twin {device_id}", lambda: self._registry.get_twin(device_id)))

    def update_tags(self, device_id: str, tags: dict[str, Any], etag: str | None = None) -> Twin:
        """Merge-patch the twin's tags (a None value deletes a tag); with `etag`, Conflict if the twin changed."""
        from azure.iot.hub.models import Twin as SdkTwin

        return twin_from_sdk(self._sdk(f"update tags of {device_id}", lambda: self._registry.update_twin(device_id, SdkTwin(tags=tags), etag or "*")))

    def update_desired(self, device_id: str, desired: dict[str, Any], etag: str | None = None) -> Twin:
        """Merge-patch desired properties; with `etag`, Conflict if the twin changed."""
        from azure.iot.hub.models import Twin as SdkTwin
        from azure.iot.hub.models import TwinProperties

        return twin_from_sdk(self._sdk(f"update desired of {device_id}", lambda: self._registry.update_twin(device_id, SdkTwin(properties=TwinProperties(desired=desired)), etag or "*")))

    def get_module_twin(self, device_id: str, module_id: str) -> Twin:
        return twin_from_sdk(self._sdk(f"get module twin {device_id}/{module_id}", lambda: self._registry.get_module_twin(device_id, module_id)))

    def update_module_desired(self, device_id: str, module_id: str, desired: dict[str, Any], etag: str | None = None,
                              replace: bool = False) -> Twin:
        """Patch (or with `replace`, replace) a module twin's desired properties; with `etag`, Conflict if it changed."""
        from azure.iot.hub.models import Twin as SdkTwin
        from azure.iot.hub.models import TwinProperties

        twin = SdkTwin(properties=TwinProperties(desired=desired))
        return twin_from_sdk(self._sdk(
            f"update module twin {device_id}/{module_id}",
            lambda: (self._registry.replace_module_twin if replace else self._registry.update_module_twin)(
                device_id, module_id, twin, etag or "*")))

    # ------------------------------------------------------------------ direct methods
    def invoke_method(self, device_id: str, method: str, payload: Any = None, module_id: str | None = None,
                      timeout_s: int = 30, connect_timeout_s: int = 0) -> tuple[int, Any]:
        """Call a direct method on a connected device or module; `(status, payload)` as it answered.

        For an IoT Edge device, edgeAgent's built-in methods: `invoke_method(dev, "GetModuleLogs",
        {"schemaVersion": "1.0", "items": [{"id": "runner", "filter": {"tail": 20}}]}, module_id="$edgeAgent")`,
        `"RestartModule"` with `{"schemaVersion": "1.0", "id": "runner"}`, `"ping"`.

        Raises:
            NotFound: the device or module is not online (404 DeviceNotOnline) or not registered.
            ServiceError: 504 when it did not answer within `timeout_s` (never retried: a method is not idempotent).
        """
        import requests
        from azure.iot.hub import IoTHubRegistryManager
        from azure.iot.hub.models import CloudToDeviceMethod
        from urllib3.util.retry import Retry

        registry = IoTHubRegistryManager.from_connection_string(self._cs.get_secret_value())
        conn = registry.protocol.config.connection
        conn.timeout = timeout_s + connect_timeout_s + 15
        if self.ca_file:
            conn.verify = self.ca_file
        policy = Retry(total=2, connect=2, read=0, status=0, allowed_methods=None, raise_on_status=False)
        policy.BACKOFF_MAX = 30
        registry.protocol.config.retry_policy.policy = policy
        driver = getattr(getattr(registry.protocol.config.pipeline, "_sender", None), "driver", None)
        if driver is not None:
            driver.session = requests.Session()
        request = CloudToDeviceMethod(method_name=method, payload=payload, response_timeout_in_seconds=timeout_s,
                                      connect_timeout_in_seconds=connect_timeout_s)
        target = device_id if module_id is None else f"{device_id}/{module_id}"
        if module_id is None:
            result = self._sdk(f"invoke {method} on {target}", lambda: registry.invoke_device_method(device_id, request))
        else:
            result = self._sdk(f"invoke {method} on {target}",
                               lambda: registry.invoke_device_module_method(device_id, module_id, request))
        return int(result.status), result.payload

    def module_logs(self, device_id: str, module_id: str, tail: int = 20, since: str | None = None) -> str:
        """The last `tail` lines of a module's log on an IoT Edge device (edgeAgent's `GetModuleLogs`)."""
        filt: dict[str, Any] = {"tail": int(tail)}
        if since:
            filt["since"] = since
        status, payload = self.invoke_method(device_id, "GetModuleLogs", {
            "schemaVersion": "1.0", "items": [{"id": module_id, "filter": filt}], "encoding": "none",
            "contentType": "text"}, module_id="$edgeAgent")
        if status != 200:
            raise ServiceError(f"GetModuleLogs on {device_id}: edgeAgent answered {status}: {payload}", status)
        return "\n".join(str(item.get("payload", "")) for item in payload or [] if item.get("id") == module_id)

    def restart_module(self, device_id: str, module_id: str, timeout: float = 90.0) -> ModuleStatus:
        """Restart a module through edgeAgent's `RestartModule`; returns its status once it runs again.

        Raises:
            ServiceError: edgeAgent refused (unknown module) or the module did not run again within `timeout`.
        """
        before = self.device_status(device_id).modules.get(module_id)
        count = before.restart_count if before is not None else 0
        status, payload = self.invoke_method(device_id, "RestartModule", {"schemaVersion": "1.0", "id": module_id},
                                             module_id="$edgeAgent")
        if status != 200:
            raise ServiceError(f"RestartModule {module_id} on {device_id}: edgeAgent answered {status}: {payload}", status)
        deadline = time.monotonic() + timeout
        while True:
            m = self.device_status(device_id).modules.get(module_id)
            if m is not None and m.restart_count > count and m.runtime_status == "running":
                return m
            if time.monotonic() >= deadline:
                raise ServiceError(f"{module_id} on {device_id} did not report running again within {timeout:.0f} s "
                                   f"after RestartModule (last: {m.runtime_status if m else 'not reported'})", 504)
            time.sleep(1.0)

    # ------------------------------------------------------------------ queries
    def query(self, sql: str, page_size: int = 100) -> list[dict[str, Any]]:
        """Run an IoT Hub query and return every row as JSON, following continuation tokens.

        The SDK's query operation is called with `raw=True`: `query_iot_hub` deserializes rows
        into its `Twin` model, which drops fields the loop reads (`configurations`) and rows of
        projections (`SELECT COUNT() AS n ...`).
        """
        from azure.iot.hub.models import QuerySpecification

        rows: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            raw = self._sdk(f"query {sql[:80]!r}", lambda token=token: self._registry.protocol.query.get_twins(QuerySpecification(query=sql), token, str(page_size), None, True))
            rows.extend(raw.response.json())
            token = raw.headers.get("x-ms-continuation") if raw.headers else None
            if not token:
                return rows

    # ------------------------------------------------------------------ IoT Edge deployments
    def set_modules(self, device_id: str, manifest: dict[str, Any]) -> None:
        """Set the device's modulesContent (`applyConfigurationContent`); an at-scale deployment that
        targets the device overwrites it at the hub's next evaluation."""
        from azure.iot.hub.models import ConfigurationContent

        self._sdk(f"set modules on {device_id}", lambda: self._configs.apply_configuration_on_edge_device(device_id, ConfigurationContent(modules_content=modules_content_of(manifest))))

    def create_deployment(self, name: str, manifest: dict[str, Any], target_condition: str, priority: int = 0,
                          labels: dict[str, str] | None = None, metrics: dict[str, str] | None = None) -> Deployment:
        """Create an at-scale deployment (Conflict if the name exists: its content cannot change).

        Args:
            metrics: custom metric queries, name -> `SELECT deviceId FROM devices.modules WHERE ...`.
        """
        from azure.iot.hub.models import Configuration, ConfigurationContent, ConfigurationMetrics

        config = Configuration(id=name, schema_version="1.0", labels=labels or {}, priority=priority,
                               content=ConfigurationContent(modules_content=modules_content_of(manifest)),
                               target_condition=target_condition,
                               metrics=ConfigurationMetrics(queries=metrics or {}))
        return deployment_from_sdk(self._sdk(f"create deployment {name}", lambda: self._configs.create_configuration(config)))

    def update_deployment(self, name: str, target_condition: str | None = None, priority: int | None = None,
                          labels: dict[str, str] | None = None) -> Deployment:
        """Change a deployment's condition, priority or labels (with its etag; its content is immutable)."""
        cur = self._sdk(f"get deployment {name}", lambda: self._configs.get_configuration(name))
        if target_condition is not None:
            cur.target_condition = target_condition
        if priority is not None:
            cur.priority = priority
        if labels is not None:
            cur.labels = labels
        cur.system_metrics = None
        return deployment_from_sdk(self._sdk(f"update deployment {name}", lambda: self._configs.update_configuration(cur, cur.etag)))

    def list_deployments(self) -> list[Deployment]:
        """The hub's IoT Edge deployments (configurations with modulesContent), with their metrics."""
        return [deployment_from_sdk(c) for c in self._sdk("list deployments", lambda: self._configs.get_configurations())
                if c.content and c.content.modules_content]

    def get_deployment(self, name: str) -> Deployment:
        return deployment_from_sdk(self._sdk(f"get deployment {name}", lambda: self._configs.get_configuration(name)))

    def delete_deployment(self, name: str) -> None:
        """Delete a deployment (the modules it put on devices keep running, as on Azure)."""
        self._sdk(f"delete deployment {name}", lambda: self._configs.delete_configuration(name))

    def test_queries(self, target_condition: str, metrics: dict[str, str] | None = None) -> dict[str, Any]:
        """The hub's verdict on a target condition and metric queries: `{"targetCondition": error or "",
        "metrics": {name: error or ""}}`."""
        from azure.iot.hub.models import ConfigurationQueriesTestInput

        res = self._sdk("test queries", lambda: self._configs.test_configuration_queries(ConfigurationQueriesTestInput(target_condition=target_condition, custom_metric_queries=metrics or {})))
        return {"targetCondition": res.target_condition_error or "", "metrics": dict(res.custom_metric_query_errors or {})}

    def deployed_content(self, device_id: str) -> dict[str, Any] | None:
        """The modulesContent in the device's module twins now (what its edge agent runs), or None."""
        rows = self.query(f"SELECT * FROM devices.modules WHERE deviceId = {quote(device_id)}")
        content = {r["moduleId"]: {"properties.desired": strip_meta((r.get("properties") or {}).get("desired"))}
                   for r in rows if strip_meta((r.get("properties") or {}).get("desired"))}
        return content if EDGE_AGENT in content else None

    def _module_twin_json(self, device_id: str, module_id: str) -> dict[str, Any] | None:
        """A module twin as IoT Hub's JSON (the SDK's `Twin` model drops `configurations`), None when absent."""
        try:
            raw = self._sdk(f"get module twin {device_id}/{module_id}",
                            lambda: self._registry.protocol.modules.get_twin(device_id, module_id, raw=True))
        except NotFound:
            return None
        return raw.response.json()

    # ------------------------------------------------------------------ what the device reports
    def device_status(self, device_id: str) -> DeviceStatus:
        """Connection, deployment and module state of an IoT Edge device.

        Reads the `$edgeAgent` module twin (Azure's edgeAgent schema: `lastDesiredVersion`,
        `lastDesiredStatus`, `modules.<name>.runtimeStatus/exitCode/restartCount/lastStartTimeUtc/
        lastExitTimeUtc/statusDescription/version/settings.image`), each module's own twin
        (its reported properties are its telemetry), and, for the HTTP agent, the device twin's
        `edgeAgent` reported properties; the module twin wins when it carries a report.
        `last_desired_status` is 406 when the device is offline with a deployment pending.

        Only twin reads, no query: IoT Hub allows many more twin reads than queries (S1: about
        20 queries a minute per unit), and a rollout board polls every device every second.
        """
        twin = self._sdk(f"get twin {device_id}", lambda: self._registry.get_twin(device_id))
        agent_twin = self._module_twin_json(device_id, EDGE_AGENT) or {}
        report, source = edge_agent_report(agent_twin, twin)
        telemetry = {}
        if source == "moduleTwin":
            for name in (report.get("modules") or {}):
                module_twin = self._module_twin_json(device_id, name) or {}
                telemetry[name] = strip_meta((module_twin.get("properties") or {}).get("reported"))
        return device_status_from(device_id, twin, agent_twin, report, source, telemetry)


def local_hub(workspace: str | Path | None = None, **kw: Any) -> IoTHub:
    """`get_hub("local")`: the workspace's stand-in (`IoTHub.local`)."""
    return IoTHub.local(workspace, **kw)


def azure_hub(workspace: str | Path | None = None, connection_string: str | Secret | None = None, **kw: Any) -> IoTHub:
    """`get_hub("azure")`: Azure IoT Hub from `connection_string` or IOTHUB_CONNECTION_STRING (its
    telemetry from IOTHUB_EVENTHUB_CONNECTION_STRING when set).

    Raises:
        ConfigError: no connection string is set (the message names the variable).
    """
    settings = load_settings(workspace)
    if connection_string is None:
        connection_string = settings.require("iothub_connection_string")
    if "eventhub" not in kw and settings.iothub_eventhub_connection_string:
        kw["eventhub"] = settings.iothub_eventhub_connection_string
    return IoTHub(connection_string, workspace=workspace, **kw)


__all__ = ["IoTHub", "local_hub", "azure_hub"]
