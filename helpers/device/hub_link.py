"""The edge agent's connection to its hub: `$edgeAgent` over MQTT with `azure-iot-device`.

What Azure IoT Edge's runtime does with a device's connection string, the simulated device does
here with the same SDK and the same hub APIs, so it works against the local stand-in and a real
IoT Hub alike:

* `ModuleRegistry` gets (or creates, `managedBy: IotEdge`) the device's module identities
  through IoT Hub's device-scoped registry API, signed with the device's own key, as IoT
  Edge's identity service does; it returns each module's connection string.
* `AgentLink` connects as the device's `$edgeAgent` module with `IoTHubModuleClient`, reads
  the deployment from that module twin's desired properties, queues desired-property patches
  (pushed by the hub) and direct-method requests for the agent's loop, and writes reported
  properties from a background thread (only the difference from what the hub acknowledged,
  retried until acknowledged).

TLS: the hub is known by the device's connection string and a CA file (`--ca-file`), as on a
Raspberry Pi: against the local stand-in that file is its CA, trusted for this endpoint only;
against Azure the system's CA bundle (certifi) is used.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import certifi
import requests

from helpers.config import Secret, mask, parse_connection_string
from helpers.errors import ConfigError, ServiceError
from helpers.protocol.sas import generate_sas_token
from helpers.protocol.twinpatch import diff_patch

log = logging.getLogger("helpers.device.hub_link")

API_VERSION = "2021-04-12"
EDGE_AGENT = "$edgeAgent"


def sdk_errors() -> tuple[type[BaseException], ...]:
    """The `azure-iot-device` errors of a call that reached no hub (retried, never fatal)."""
    # imported here: azure-iot-device stays off the import path of the device's modules
    from azure.iot.device.exceptions import ClientError, OperationCancelled, OperationTimeout

    return (ClientError, OperationCancelled, OperationTimeout)


@dataclass(frozen=True)
class HubEndpoint:
    """Where the hub is: its host name (what MQTT connects to and SAS tokens name), its REST API, its CA.

    On Azure both are the connection string's HostName and the system CAs are trusted. The local
    stand-in serves MQTT on port 8883 of its own loopback address and REST on another port, so
    there the REST calls go to `rest_url` and their tokens name `rest_host` (its host and port),
    as the stand-in's REST API checks.
    """

    host: str
    rest_url: str
    rest_host: str
    ca_file: Path | None

    @classmethod
    def for_connection_string(cls, cs: Secret | str, ca_file: str | Path | None = None,
                              rest_url: str | None = None) -> HubEndpoint:
        """The hub of a device connection string.

        Args:
            cs: the device's connection string (its HostName is the hub).
            ca_file: the CA certificate to trust for this hub only (the stand-in's); None: the system's.
            rest_url: the hub's HTTPS base URL when it is not `https://HostName` (the stand-in's REST port).

        Raises:
            ConfigError: the connection string has no HostName, or `ca_file` is not a file.
        """
        host = parse_connection_string(cs)["HostName"]  # it raises ConfigError when there is none
        ca = None
        if ca_file is not None:
            ca = Path(ca_file).expanduser().resolve()  # absolute: modules get it as EdgeModuleCACertificateFile
            if not ca.is_file():
                raise ConfigError(f"--ca-file {ca} is not a file: give the hub's CA certificate (the local stand-in's "
                                  "is endpoints.local_hub(workspace).ca_file), or omit it for Azure IoT Hub")
        url = (rest_url or f"https://{host}").rstrip("/")
        return cls(host=host, rest_url=url, rest_host=urlsplit(url).netloc, ca_file=ca)

    @property
    def verify(self) -> str:
        """What `requests` verifies the hub's certificate with: the CA file, else the system bundle."""
        return str(self.ca_file) if self.ca_file is not None else certifi.where()

    def ca_pem(self) -> str | None:
        return self.ca_file.read_text() if self.ca_file is not None else None

    def ca_bundle_path(self) -> str:
        """A CA file for modules' `EdgeModuleCACertificateFile` (the given CA file, or the system bundle)."""
        return self.verify


class ModuleRegistry:
    """The device's module identities, through IoT Hub's device-scoped registry API.

    Args:
        device_cs: the device's connection string (HostName, DeviceId, SharedAccessKey).
        endpoint: where the hub's REST API is.
        timeout: seconds per request.
    """

    def __init__(self, device_cs: Secret, endpoint: HubEndpoint, timeout: float = 10.0):
        parts = parse_connection_string(device_cs)
        if "DeviceId" not in parts or "SharedAccessKey" not in parts:
            raise ConfigError("the edge agent needs the device's connection string (HostName, DeviceId, "
                              "SharedAccessKey): hub.connection_string(device_id)")
        self.device_id = parts["DeviceId"]
        self._key = Secret(parts["SharedAccessKey"], "device_key")
        self.endpoint = endpoint
        self.timeout = timeout
        self._session = requests.Session()

    def _headers(self) -> dict[str, str]:
        token = generate_sas_token(f"{self.endpoint.rest_host}/devices/{self.device_id}", self._key)
        return {"Authorization": token.get_secret_value(), "Content-Type": "application/json"}

    def _url(self, module_id: str) -> str:
        return (f"{self.endpoint.rest_url}/devices/{quote(self.device_id, safe='')}/modules/"
                f"{quote(module_id, safe='')}?api-version={API_VERSION}")

    def _call(self, method: str, module_id: str, body: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._session.request(method, self._url(module_id), headers=self._headers(),
                                         data=json.dumps(body) if body is not None else None, timeout=self.timeout,
                                         verify=self.endpoint.verify)  # per request: REQUESTS_CA_BUNDLE would win over the session's
        except requests.RequestException as exc:
            raise ServiceError(f"{method} module {module_id}: the hub did not answer ({mask(str(exc))})", 0) from None
        return resp

    def connection_string(self, module_id: str) -> Secret:
        """The module's connection string; creates the identity (`managedBy: IotEdge`) when missing.

        Raises:
            ServiceError: the hub refused or did not answer (status in `.status`).
        """
        resp = self._call("GET", module_id)
        if resp.status_code == 404:
            resp = self._call("PUT", module_id, {"deviceId": self.device_id, "moduleId": module_id,
                                                 "managedBy": "IotEdge", "authentication": {"type": "sas"}})
            if resp.status_code == 409:  # created in between
                resp = self._call("GET", module_id)
        if resp.status_code >= 300:
            raise ServiceError(f"the hub refused the identity of module {module_id!r} of {self.device_id!r}: HTTP "
                               f"{resp.status_code} {mask(resp.text[:300])}", resp.status_code)
        key = (((resp.json().get("authentication") or {}).get("symmetricKey")) or {}).get("primaryKey")
        if not key:
            raise ServiceError(f"module {module_id!r} of {self.device_id!r} has no symmetric key (X.509 modules are "
                               "not run by this agent)", 400)
        # GatewayHostName: where the module connects (edgeHub on a real device; here the hub itself),
        # which the SDK's create_from_edge_environment() requires
        return Secret(f"HostName={self.endpoint.host};DeviceId={self.device_id};ModuleId={module_id};"
                      f"SharedAccessKey={key};GatewayHostName={self.endpoint.host}",
                      f"connection_string[{self.device_id}/{module_id}]")


@dataclass
class MethodCall:
    """A direct-method request waiting for the agent's loop; `answer()` sends the response."""

    name: str
    payload: Any
    _request: Any
    _client: Any

    def answer(self, status: int, payload: Any) -> None:
        from azure.iot.device import MethodResponse  # the SDK stays off the modules' import path (see sdk_errors)

        self._client.send_method_response(MethodResponse.create_from_method_request(self._request, status, payload))


class AgentLink:
    """`$edgeAgent`'s connection: deployment in, patches and method calls queued, reports out.

    Args:
        module_cs: the `$edgeAgent` module connection string.
        endpoint: the hub (CA to trust).
        report_retry_s: delay between attempts of an unacknowledged report.
    """

    def __init__(self, module_cs: Secret, endpoint: HubEndpoint, report_retry_s: float = 1.0):
        from azure.iot.device import IoTHubModuleClient  # the SDK stays off the modules' import path (see sdk_errors)

        kw: dict[str, Any] = {"keep_alive": 30}
        ca = endpoint.ca_pem()
        if ca:
            kw["server_verification_cert"] = ca
        self.client = IoTHubModuleClient.create_from_connection_string(module_cs.get_secret_value(), **kw)
        self.patches: queue.Queue[dict[str, Any]] = queue.Queue()
        self.methods: queue.Queue[MethodCall] = queue.Queue()
        self.reconnected = threading.Event()
        self.activity = threading.Event()  # set whenever something arrives: the agent's loop wakes at once
        self.report_retry_s = report_retry_s
        self._acked: dict[str, Any] | None = None
        self._target: dict[str, Any] | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._reporter: threading.Thread | None = None
        self.last_ack_mono = 0.0
        self.report_errors = 0

    # ------------------------------------------------------------ connection
    def connect(self) -> dict[str, Any]:
        """Connect, register the handlers and return the whole twin (`{"desired", "reported"}`)."""
        def on_patch(patch: dict[str, Any]) -> None:
            self.patches.put(patch)
            self.activity.set()

        def on_method(req: Any) -> None:
            self.methods.put(MethodCall(req.name, req.payload, req, self.client))
            self.activity.set()

        self.client.on_twin_desired_properties_patch_received = on_patch
        self.client.on_method_request_received = on_method
        self.client.on_connection_state_change = self._on_state
        self.client.connect()
        twin = self.client.get_twin()
        with self._cond:
            self._acked = {k: v for k, v in (twin.get("reported") or {}).items() if not k.startswith("$")}
        self._reporter = threading.Thread(target=self._report_loop, name="agent-reporter", daemon=True)
        self._reporter.start()
        return twin

    def _on_state(self) -> None:
        if self.client.connected:
            log.info("connected to the hub again")
            self.reconnected.set()
            self.activity.set()
        else:
            log.warning("connection to the hub lost: modules keep running; the SDK reconnects")

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    def get_twin(self) -> dict[str, Any]:
        return self.client.get_twin()

    def close(self, flush_timeout_s: float = 5.0) -> None:
        """Send what is pending (up to `flush_timeout_s`), then disconnect."""
        deadline = time.monotonic() + flush_timeout_s
        with self._cond:
            while self._target is not None and self._target != self._acked and time.monotonic() < deadline \
                    and self.client.connected:
                self._cond.wait(0.1)
            self._closing = True
            self._cond.notify_all()
        try:
            self.client.shutdown()
        except (*sdk_errors(), OSError) as exc:
            log.info("disconnecting from the hub: %s", mask(str(exc)))

    # ------------------------------------------------------------ reporting
    def report(self, state: dict[str, Any]) -> None:
        """Make the hub's reported properties equal `state` (sent in the background, retried)."""
        with self._cond:
            self._target = json.loads(json.dumps(state, default=str))
            self._cond.notify_all()

    def pending(self) -> bool:
        with self._cond:
            return self._target is not None and self._target != self._acked

    def _report_loop(self) -> None:
        errors = (*sdk_errors(), OSError)
        while True:
            with self._cond:
                while not self._closing and (self._target is None or self._target == self._acked):
                    self._cond.wait()
                if self._closing:
                    return
                target, acked = self._target, self._acked or {}
            patch = diff_patch(acked, target)
            try:
                self.client.patch_twin_reported_properties(patch)
            except errors as exc:
                self.report_errors += 1
                log.warning("report not acknowledged (%s); retrying in %.0f s", mask(str(exc)), self.report_retry_s)
                time.sleep(self.report_retry_s)
                continue
            with self._cond:
                self._acked = target
                self.last_ack_mono = time.monotonic()
                self._cond.notify_all()


__all__ = ["AgentLink", "EDGE_AGENT", "HubEndpoint", "MethodCall", "ModuleRegistry", "sdk_errors"]
