"""The device side of the local hub: what an edge agent calls with its connection string.

    client = DeviceClient.from_connection_string(cs)
    client.get_deployment()   # {"modulesContent", "source", "version"} or None
    client.get_twin()         # {"tags", "desired", "reported", "version", "etag"}
    client.report({"edgeAgent": {...}})   # merge-patch of reported properties (the heartbeat)

The service URL comes from `url=`, else the environment variable `EDGELOOP_HUB_URL`, else
with `workspace=` the local cloud's plain-HTTP URL from `WORKSPACE/localcloud/service.json`,
else `http://<HostName>` of the connection string. With `workspace=`, a device that cannot reach the hub
re-reads `WORKSPACE/localcloud/service.json` once, in case the service moved to a new port.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from helpers.config import Secret, parse_connection_string
from helpers.errors import ConfigError
from helpers.hub.sas import generate_sas_token
from helpers.localcloud.http import call


class DeviceClient:
    """A device's authenticated view of the hub (its own twin and deployment only)."""

    def __init__(self, host: str, device_id: str, key: Secret, url: str | None = None, timeout: float = 10.0,
                 workspace: str | Path | None = None):
        self.host = host
        self.device_id = device_id
        self._key = key if isinstance(key, Secret) else Secret(key, "device_key")
        self.workspace = Path(workspace) if workspace else None
        base = url or os.environ.get("EDGELOOP_HUB_URL") or self._service_url() or (host if "://" in host else f"http://{host}")
        self.url = base.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    @classmethod
    def from_connection_string(cls, cs: str | Secret, url: str | None = None, timeout: float = 10.0,
                               workspace: str | Path | None = None) -> "DeviceClient":
        """Build a client from `HostName=...;DeviceId=...;SharedAccessKey=...`.

        Raises:
            ConfigError: DeviceId or SharedAccessKey is missing (a service connection string?).
        """
        parts = parse_connection_string(cs)
        if "DeviceId" not in parts or "SharedAccessKey" not in parts:
            raise ConfigError("a device connection string needs HostName, DeviceId and SharedAccessKey; "
                              "get it with hub.connection_string(device_id)")
        return cls(parts["HostName"], parts["DeviceId"], Secret(parts["SharedAccessKey"], "device_key"), url=url,
                   timeout=timeout, workspace=workspace)

    def __repr__(self) -> str:
        return f"DeviceClient(device_id={self.device_id!r}, url={self.url!r})"

    def _headers(self) -> dict[str, str]:
        token = generate_sas_token(f"{self.host}/devices/{self.device_id}", self._key)
        return {"Authorization": token.get_secret_value()}

    def _service_url(self) -> str | None:
        """The local cloud's plain-HTTP URL from the workspace's service.json (device connection
        strings name the hub's bare address, where this HTTP client has no listener)."""
        if self.workspace is None:
            return None
        from helpers.localcloud.service import read_service

        return (read_service(self.workspace) or {}).get("url")

    def _reload_url(self) -> str | None:
        if self.workspace is None:
            return None
        from helpers.localcloud.service import read_service

        info = read_service(self.workspace) or {}
        new = (info.get("url") or "").rstrip("/")
        if new and new != self.url:
            # a local hub's HostName is its address: when the service moved, tokens name the new one
            if self.host == urlsplit(self.url).netloc:
                self.host = urlsplit(new).netloc
            self.url = new
            return new
        return None

    def _req(self, method: str, path: str, **kw: Any) -> requests.Response:
        return call(self._session, method, self.url + path, headers=self._headers, timeout=self.timeout,
                    on_unreachable=self._reload_url, **kw)

    @property
    def _path(self) -> str:
        return quote(self.device_id, safe="")

    def get_deployment(self) -> dict[str, Any] | None:
        """The modulesContent in effect for this device with its source and version, or None."""
        resp = self._req("GET", f"/devices/{self._path}/deployment")
        return None if resp.status_code == 204 else resp.json()

    def get_twin(self) -> dict[str, Any]:
        """This device's twin: `{"tags", "desired", "reported", "version", "etag"}`."""
        d = self._req("GET", f"/twins/{self._path}").json()
        props = d.get("properties") or {}
        return {"deviceId": d["deviceId"], "tags": d.get("tags") or {}, "desired": props.get("desired") or {},
                "reported": props.get("reported") or {}, "version": d.get("version"), "etag": d.get("etag")}

    def report(self, patch: dict[str, Any]) -> None:
        """Merge-patch reported properties (None deletes a key); also the device's heartbeat."""
        self._req("PATCH", f"/devices/{self._path}/twin/properties/reported", json=patch)
