"""`LocalHub`: the `Hub` protocol against the embedded local cloud's hub endpoints.

Reads `WORKSPACE/localcloud/credentials.json` (the service connection string) and
`service.json` (the URL), signs every call with a fresh SAS token for the `iothubowner`
policy, and maps HTTP errors to `helpers.errors` classes by status code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from helpers.config import Secret, parse_connection_string
from helpers.errors import Conflict
from helpers.hub.base import Deployment, Device, DeviceStatus, ModuleStatus, Twin
from helpers.hub.sas import generate_sas_token
from helpers.localcloud import service
from helpers.localcloud.client import LocalCloudClient


def twin_from_json(d: dict[str, Any]) -> Twin:
    """A `Twin` from Azure's twin JSON (drops the `$version` bookkeeping keys)."""
    props = d.get("properties") or {}
    strip = lambda x: {k: v for k, v in (x or {}).items() if not k.startswith("$")}  # noqa: E731
    return Twin(device_id=d["deviceId"], etag=d.get("etag", ""), version=int(d.get("version", 0)), tags=d.get("tags") or {},
                desired=strip(props.get("desired")), reported=strip(props.get("reported")))


def device_from_json(d: dict[str, Any]) -> Device:
    return Device(device_id=d["deviceId"], edge=bool((d.get("capabilities") or {}).get("iotEdge", False)),
                  status=d.get("status", "enabled"), tags=d.get("tags") or {},
                  connection_state=d.get("connectionState", "Disconnected"), last_activity=d.get("lastActivityTime"))


def module_from_json(name: str, m: dict[str, Any]) -> ModuleStatus:
    port = m.get("hostPort")
    return ModuleStatus(name=name, runtime_status=str(m.get("runtimeStatus", "unknown")), exit_code=m.get("exitCode"),
                        restart_count=int(m.get("restartCount") or 0), start_time=m.get("startTime"), image=m.get("image"),
                        version=m.get("version"), host_port=int(port) if port not in (None, "") else None,
                        telemetry=m.get("telemetry") or {})


def status_from_json(d: dict[str, Any]) -> DeviceStatus:
    lds = d.get("lastDesiredStatus") or {}
    return DeviceStatus(device_id=d["deviceId"], connected=bool(d.get("connected")), last_seen=d.get("lastSeen"),
                        last_desired_status=lds.get("code"), last_desired_description=lds.get("description") or "",
                        deployment=d.get("deployment"), desired_version=d.get("desiredVersion"),
                        reported_version=d.get("reportedVersion"),
                        modules={n: module_from_json(n, m) for n, m in (d.get("modules") or {}).items() if isinstance(m, dict)})


def deployment_from_json(d: dict[str, Any]) -> Deployment:
    return Deployment(name=d["id"], target_condition=d.get("targetCondition", ""), priority=int(d.get("priority", 0)),
                      modules_content=(d.get("content") or {}).get("modulesContent") or {}, created=d.get("createdTimeUtc"),
                      labels=d.get("labels") or {}, metrics=dict(d.get("metrics") or {}))


def modules_content_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """Accept either `modulesContent` itself or `{"modulesContent": ...}` / `{"content": {...}}`."""
    if "modulesContent" in manifest:
        return manifest["modulesContent"]
    if isinstance(manifest.get("content"), dict) and "modulesContent" in manifest["content"]:
        return manifest["content"]["modulesContent"]
    return manifest


class LocalHub(LocalCloudClient):
    """The local cloud's hub, Azure IoT Hub-shaped.

    Args:
        workspace: workspace folder (default: settings); the local cloud must be running there
            (`helpers.localcloud.ensure_running`), or pass `autostart=True`.
        url: override the service URL (default: service.json).
        timeout: seconds per HTTP call.
        autostart: start the local cloud when it is not running.
    """

    name = "local"

    def __init__(self, workspace: str | Path | None = None, url: str | None = None, timeout: float = 10.0, autostart: bool = False):
        super().__init__(workspace, url, timeout, autostart)

    def _load(self) -> None:
        creds = service.read_credentials(self.workspace)
        self._cs: Secret = creds["service_connection_string"]
        parts = parse_connection_string(self._cs)
        self._host = parts["HostName"]
        self._policy = parts.get("SharedAccessKeyName", "iothubowner")
        self._key = Secret(parts["SharedAccessKey"], "service_key")
        super()._load()

    def __repr__(self) -> str:
        return f"LocalHub(url={self.url!r}, workspace={str(self.workspace)!r})"

    @property
    def connection_string_service(self) -> Secret:
        """The service (iothubowner) connection string, masked."""
        return self._cs

    def _headers(self) -> dict[str, str]:
        return {"Authorization": generate_sas_token(self._host, self._key, self._policy).get_secret_value()}

    @staticmethod
    def _id(device_id: str) -> str:
        return quote(device_id, safe="")

    # -- identities
    def create_edge_device(self, device_id: str, tags: dict[str, Any] | None = None, exist_ok: bool = True) -> Device:
        """Register an IoT Edge device (symmetric keys generated); with `exist_ok` reuse it."""
        try:
            self._req("PUT", f"/devices/{self._id(device_id)}", json={"deviceId": device_id, "capabilities": {"iotEdge": True}})
        except Conflict:
            if not exist_ok:
                raise
        if tags:
            self.update_tags(device_id, tags)
        return self.get_device(device_id)

    def list_devices(self) -> list[Device]:
        return [device_from_json(d) for d in self._req("GET", "/devices").json()]

    def get_device(self, device_id: str) -> Device:
        return device_from_json(self._req("GET", f"/devices/{self._id(device_id)}").json())

    def delete_device(self, device_id: str) -> None:
        self._req("DELETE", f"/devices/{self._id(device_id)}")

    def connection_string(self, device_id: str) -> Secret:
        """The device's connection string (`HostName=127.0.0.1:PORT;DeviceId=...;SharedAccessKey=...`)."""
        d = self._req("GET", f"/devices/{self._id(device_id)}").json()
        key = d["authentication"]["symmetricKey"]["primaryKey"]
        host = self.url.split("//", 1)[-1]
        return Secret(f"HostName={host};DeviceId={device_id};SharedAccessKey={key}", f"connection_string[{device_id}]")

    # -- twins
    def get_twin(self, device_id: str) -> Twin:
        return twin_from_json(self._req("GET", f"/twins/{self._id(device_id)}").json())

    def update_tags(self, device_id: str, tags: dict[str, Any]) -> Twin:
        """Merge-patch the twin's tags (a None value deletes a tag)."""
        return twin_from_json(self._req("PATCH", f"/twins/{self._id(device_id)}", json={"tags": tags}).json())

    def update_desired(self, device_id: str, desired: dict[str, Any], etag: str | None = None) -> Twin:
        """Merge-patch desired properties; with `etag`, fail with Conflict if the twin changed."""
        extra = {"If-Match": f'"{etag}"'} if etag else {}
        return twin_from_json(self._req("PATCH", f"/twins/{self._id(device_id)}", json={"properties": {"desired": desired}},
                                        extra_headers=extra).json())

    # -- edge configuration
    def set_modules(self, device_id: str, manifest: dict[str, Any]) -> None:
        """Set the device's own modulesContent (applies unless an at-scale deployment targets it)."""
        self._req("POST", f"/devices/{self._id(device_id)}/applyConfigurationContent",
                  json={"modulesContent": modules_content_of(manifest)})

    def effective_deployment(self, device_id: str) -> dict[str, Any] | None:
        """`{"modulesContent", "source", "version"}` the device should run now, or None."""
        resp = self._req("GET", f"/devices/{self._id(device_id)}/deployment")
        return None if resp.status_code == 204 else resp.json()

    def create_deployment(self, name: str, manifest: dict[str, Any], target_condition: str, priority: int = 0,
                          labels: dict[str, str] | None = None) -> Deployment:
        """Create an at-scale deployment (Conflict if the name exists: deployments are immutable)."""
        body = {"id": name, "content": {"modulesContent": modules_content_of(manifest)}, "targetCondition": target_condition,
                "priority": priority, "labels": labels or {}}
        return deployment_from_json(self._req("PUT", f"/configurations/{self._id(name)}", json=body).json())

    def update_deployment(self, name: str, target_condition: str | None = None, priority: int | None = None,
                          labels: dict[str, str] | None = None) -> Deployment:
        """Change a deployment's condition, priority or labels (its content is immutable)."""
        cur = self._req("GET", f"/configurations/{self._id(name)}").json()
        body = {"id": name, "content": cur["content"],
                "targetCondition": cur["targetCondition"] if target_condition is None else target_condition,
                "priority": cur["priority"] if priority is None else priority,
                "labels": cur["labels"] if labels is None else labels}
        return deployment_from_json(self._req("PUT", f"/configurations/{self._id(name)}", json=body,
                                              extra_headers={"If-Match": f'"{cur["etag"]}"'}).json())

    def list_deployments(self) -> list[Deployment]:
        return [deployment_from_json(d) for d in self._req("GET", "/configurations").json()]

    def get_deployment(self, name: str) -> Deployment:
        return deployment_from_json(self._req("GET", f"/configurations/{self._id(name)}").json())

    def delete_deployment(self, name: str) -> None:
        self._req("DELETE", f"/configurations/{self._id(name)}")

    def device_status(self, device_id: str) -> DeviceStatus:
        """Connection (report within 20 s), last desired status (406 offline+pending), modules."""
        return status_from_json(self._req("GET", f"/devices/{self._id(device_id)}/edgeStatus").json())
