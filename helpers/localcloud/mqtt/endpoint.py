"""The workspace's MQTT endpoint: TLS contexts that take X.509 device certificates, and `start_broker`."""
from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import Any

from helpers.localcloud.common import tls
from helpers.localcloud.mqtt.broker import MQTT_PORT, MqttBroker
from helpers.localcloud.mqtt.store import HubState

log = logging.getLogger("helpers.localcloud.mqtt")


class ClientCertContexts:
    """Server TLS contexts that ask for an (optional) client certificate, for X.509 devices.

    IoT Hub checks a self-signed device certificate by its thumbprint alone. Python's `ssl` can
    only ask for a client certificate together with verifying it against trusted certificates,
    so the stand-in trusts, besides the workspace CA (CA-signed devices), the self-signed device
    certificates the workspace keeps (`WORKSPACE/hub/x509/*.pem`, written by
    `IoTHub.create_edge_device(auth="x509")`); the broker then checks the thumbprint against the
    registry. A context is rebuilt, per TLS handshake, when that folder changes.
    """

    def __init__(self, workspace: Any, address: str):
        self.workspace = Path(workspace)
        self.address = address
        self.folder = self.workspace / "hub" / "x509"
        self._key: tuple[float, int] | None = None
        self._ctx: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self.base = self._build()
        self.base.sni_callback = self._pick

    def _state(self) -> tuple[float, int]:
        try:
            files = list(self.folder.glob("*.pem"))
            return (max((f.stat().st_mtime for f in files), default=0.0), len(files))
        except OSError:
            return (0.0, 0)

    def _build(self) -> ssl.SSLContext:
        ctx = tls.server_ssl_context(self.workspace, self.address)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a trusted self-signed leaf is its own anchor
        ctx.load_verify_locations(cafile=str(tls.ca_file(self.workspace)))
        for pem in sorted(self.folder.glob("*.pem")) if self.folder.is_dir() else []:
            try:
                ctx.load_verify_locations(cadata=pem.read_text())
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.warning("device certificate %s not loaded: %s", pem.name, exc)
        return ctx

    def _pick(self, ssl_obj: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        state = self._state()
        with self._lock:
            if state != self._key or self._ctx is None:
                self._ctx, self._key = self._build(), state
            ctx = self._ctx
        ssl_obj.context = ctx


def start_broker(workspace: Any, store: Any, port: int = MQTT_PORT) -> MqttBroker:
    """The workspace's MQTT endpoint, started on port 8883 of its hub address (`tls.hub_address`).

    Raises:
        ConfigError: the port is taken on that address.
    """
    address = tls.hub_address(workspace)
    broker = MqttBroker(HubState(store, address), ClientCertContexts(workspace, address).base, address, port)
    broker.start()
    return broker


__all__ = ["ClientCertContexts", "start_broker"]
