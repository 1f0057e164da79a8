"""The `Hub` protocol: device identities, twins and IoT Edge deployments.

One implementation (`helpers.hub.iothub.IoTHub`, on the `azure-iot-hub` SDK) serves both the
local stand-in and Azure IoT Hub; these dataclasses are what the loop reads from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from helpers.config import Secret


@dataclass
class Device:
    """A device identity."""

    device_id: str
    edge: bool = True
    status: str = "enabled"
    tags: dict[str, Any] = field(default_factory=dict)
    connection_state: str = "Disconnected"
    last_activity: str | None = None
    auth: str = "sas"  # sas | selfSigned | certificateAuthority


@dataclass
class Twin:
    """A device twin: tags, desired and reported properties with versions and etag."""

    device_id: str
    etag: str
    version: int
    tags: dict[str, Any] = field(default_factory=dict)
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    module_id: str | None = None  # set for a module twin
    desired_version: int | None = None  # the desired properties' $version
    reported_version: int | None = None


@dataclass
class ModuleStatus:
    """What the device's edge agent reports for one module (edgeAgent's reported schema)."""

    name: str
    runtime_status: str  # running | stopped | failed | backoff | unknown
    exit_code: int | None = None
    restart_count: int = 0
    start_time: str | None = None  # lastStartTimeUtc
    image: str | None = None
    version: str | None = None
    host_port: int | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)  # the module twin's reported properties
    status_description: str | None = None
    last_exit_time: str | None = None  # lastExitTimeUtc


@dataclass
class DeviceStatus:
    """Connection state, last desired status and per-module runtime state of one device."""

    device_id: str
    connected: bool
    last_seen: str | None
    last_desired_status: int | None  # 200 applied, 400 invalid, 406 offline, 417, 500
    last_desired_description: str = ""
    deployment: str | None = None  # "device" or the at-scale deployment name in effect
    desired_version: str | None = None
    reported_version: str | None = None
    modules: dict[str, ModuleStatus] = field(default_factory=dict)
    # deployment name -> "Applied" | "Targeted", as the hub marks the $edgeAgent module twin
    configurations: dict[str, str] = field(default_factory=dict)
    source: str = "none"  # where modules came from: "moduleTwin" ($edgeAgent reported), "deviceTwin" (legacy agent) or "none"


@dataclass
class Deployment:
    """An at-scale IoT Edge deployment (Azure: a configuration with modulesContent)."""

    name: str
    target_condition: str
    priority: int
    modules_content: dict[str, Any]
    created: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # IoT Hub's system metrics: targetedCount, appliedCount, reportedSuccessfulCount, reportedFailedCount
    metrics: dict[str, int] = field(default_factory=dict)
    custom_metrics: dict[str, int] = field(default_factory=dict)  # results of the deployment's metrics.queries
    etag: str | None = None


@runtime_checkable
class Hub(Protocol):
    """What the notebooks and deploy helpers need from an IoT hub."""

    def create_edge_device(self, device_id: str, tags: dict[str, Any] | None = None, exist_ok: bool = True) -> Device: ...
    def list_devices(self) -> list[Device]: ...
    def get_device(self, device_id: str) -> Device: ...
    def delete_device(self, device_id: str) -> None: ...
    def connection_string(self, device_id: str) -> Secret: ...
    def update_tags(self, device_id: str, tags: dict[str, Any]) -> Twin: ...
    def get_twin(self, device_id: str) -> Twin: ...
    def set_modules(self, device_id: str, manifest: dict[str, Any]) -> None: ...
    def create_deployment(self, name: str, manifest: dict[str, Any], target_condition: str, priority: int = 0, labels: dict[str, str] | None = None) -> Deployment: ...
    def list_deployments(self) -> list[Deployment]: ...
    def delete_deployment(self, name: str) -> None: ...
    def device_status(self, device_id: str) -> DeviceStatus: ...
