"""IoT Hub's answers as the `Hub` protocol's dataclasses: the SDK's models, query rows, edgeAgent's report."""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from helpers.hub.base import Deployment, Device, DeviceStatus, ModuleStatus, Twin

EDGE_AGENT = "$edgeAgent"


def modules_content_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """Accept either `modulesContent` itself or `{"modulesContent": ...}` / `{"content": {...}}`."""
    if "modulesContent" in manifest:
        return manifest["modulesContent"]
    if isinstance(manifest.get("content"), dict) and "modulesContent" in manifest["content"]:
        return manifest["content"]["modulesContent"]
    return manifest


def strip_meta(props: dict[str, Any] | None) -> dict[str, Any]:
    """Twin properties without IoT Hub's `$metadata` / `$version` keys."""
    return {k: v for k, v in (props or {}).items() if not k.startswith("$")}


def quote(value: str) -> str:
    """A string literal of IoT Hub's query language."""
    return "'" + value.replace("'", "''") + "'"


def iso_time(value: Any) -> str | None:
    """ISO text of an SDK datetime (or text), None for IoT Hub's `0001-01-01` "never"."""
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, _dt.datetime) else str(value)
    return None if text.startswith("0001-01-01") else text


def _host_port(settings: dict[str, Any] | None) -> int | None:
    """The host port bound to the module's first container port, from `settings.createOptions`."""
    opts = (settings or {}).get("createOptions")
    if isinstance(opts, str):
        try:
            opts = json.loads(opts)
        except ValueError:
            return None
    bindings = ((opts or {}).get("HostConfig") or {}).get("PortBindings") or {}
    for binds in bindings.values():
        for b in binds or []:
            if isinstance(b, dict) and str(b.get("HostPort", "")).isdigit():
                return int(b["HostPort"])
    return None


def module_status(name: str, m: dict[str, Any], telemetry: dict[str, Any] | None = None) -> ModuleStatus:
    """A `ModuleStatus` from edgeAgent's reported schema (Azure's, or the HTTP agent's older keys)."""
    settings = m.get("settings") or {}
    port = m.get("hostPort")
    host_port = int(port) if str(port or "").isdigit() else _host_port(settings)
    return ModuleStatus(
        name=name, runtime_status=str(m.get("runtimeStatus", "unknown")), exit_code=m.get("exitCode"),
        restart_count=int(m.get("restartCount") or 0), start_time=m.get("lastStartTimeUtc") or m.get("startTime"),
        image=settings.get("image") or m.get("image"), version=None if m.get("version") is None else str(m.get("version")),
        host_port=host_port, telemetry=telemetry if telemetry is not None else (m.get("telemetry") or {}),
        status_description=m.get("statusDescription"), last_exit_time=m.get("lastExitTimeUtc") or m.get("lastExitTime"))


def twin_from_sdk(t: Any) -> Twin:
    """Our `Twin` from the SDK's `Twin` model."""
    props = t.properties
    desired = (props.desired if props else None) or {}
    reported = (props.reported if props else None) or {}
    return Twin(device_id=t.device_id, etag=t.etag or "", version=int(t.version or 0), tags=t.tags or {},
                desired=strip_meta(desired), reported=strip_meta(reported), module_id=t.module_id,
                desired_version=desired.get("$version"), reported_version=reported.get("$version"))


def deployment_from_sdk(c: Any) -> Deployment:
    """Our `Deployment` from the SDK's `Configuration` model."""
    content = c.content.modules_content if c.content else None
    return Deployment(name=c.id, target_condition=c.target_condition or "", priority=int(c.priority or 0),
                      modules_content=content or {}, created=iso_time(c.created_time_utc), labels=dict(c.labels or {}),
                      metrics={k: int(v) for k, v in ((c.system_metrics.results if c.system_metrics else None) or {}).items()},
                      custom_metrics={k: int(v) for k, v in ((c.metrics.results if c.metrics else None) or {}).items()},
                      etag=c.etag)


def device_from_sdk_twin(t: Any) -> Device:
    """Our `Device` from the SDK's `Twin` model (a device twin carries the identity's state)."""
    return Device(device_id=t.device_id, edge=bool(t.capabilities and t.capabilities.iot_edge), status=t.status or "enabled",
                  tags=t.tags or {}, connection_state=t.connection_state or "Disconnected",
                  last_activity=iso_time(t.last_activity_time), auth=t.authentication_type or "sas")


def device_from_row(d: dict[str, Any]) -> Device:
    """Our `Device` from a `SELECT * FROM devices` row."""
    return Device(device_id=d["deviceId"], edge=bool((d.get("capabilities") or {}).get("iotEdge")), status=d.get("status", "enabled"),
                  tags=d.get("tags") or {}, connection_state=d.get("connectionState", "Disconnected"),
                  last_activity=iso_time(d.get("lastActivityTime")), auth=d.get("authenticationType") or "sas")


def edge_agent_report(agent_twin: dict[str, Any], device_twin: Any) -> tuple[dict[str, Any], str]:
    """(edgeAgent's report, where it came from): the `$edgeAgent` module twin's reported properties
    ("moduleTwin") when they carry a report, else the device twin's `edgeAgent` ("deviceTwin", the
    HTTP agent), else `({}, "none")`."""
    module_report = strip_meta((agent_twin.get("properties") or {}).get("reported"))
    device_report = ((device_twin.properties.reported if device_twin.properties else None) or {}).get("edgeAgent") or {}
    if module_report.get("lastDesiredVersion") is not None or module_report.get("modules") is not None:
        return module_report, "moduleTwin"
    if device_report:
        return device_report, "deviceTwin"
    return {}, "none"


def device_status_from(device_id: str, device_twin: Any, agent_twin: dict[str, Any], report: dict[str, Any], source: str,
                       telemetry: dict[str, dict[str, Any]]) -> DeviceStatus:
    """A `DeviceStatus` from the device twin (SDK model), the `$edgeAgent` module twin (IoT Hub's
    JSON), edgeAgent's report (`edge_agent_report`) and each module twin's reported properties.

    `last_desired_status` is 406 when the device is offline with a deployment pending.
    """
    desired = (agent_twin.get("properties") or {}).get("desired") or {}
    connected = (device_twin.connection_state == "Connected") or agent_twin.get("connectionState") == "Connected"
    desired_version = str(desired["$version"]) if strip_meta(desired) and desired.get("$version") is not None else None
    reported_version = None if report.get("lastDesiredVersion") is None else str(report.get("lastDesiredVersion"))
    lds = report.get("lastDesiredStatus") or {}
    configurations = {k: str((v or {}).get("status", "")) for k, v in (agent_twin.get("configurations") or {}).items()}
    applied = [k for k, v in configurations.items() if v == "Applied"]
    if desired_version is not None and reported_version == desired_version:
        code, desc = lds.get("code"), lds.get("description") or ""
    elif desired_version is not None and not connected:
        code, desc = 406, f"device offline: desired version {desired_version} is pending"
    elif desired_version is not None:
        code, desc = None, f"pending: the device has not applied desired version {desired_version} yet"
    else:
        code, desc = (lds.get("code"), lds.get("description") or "") if reported_version else (None, "")
    modules = {}
    for name, m in (report.get("modules") or {}).items():
        if isinstance(m, dict):
            modules[name] = module_status(name, m, telemetry.get(name) if source == "moduleTwin" else None)
    last_seen = report.get("heartbeat") or iso_time(agent_twin.get("lastActivityTime")) or iso_time(device_twin.last_activity_time)
    return DeviceStatus(device_id=device_id, connected=connected, last_seen=last_seen, last_desired_status=code,
                        last_desired_description=desc,
                        deployment=(applied[0] if applied else ("device" if desired_version else None)),
                        desired_version=desired_version, reported_version=reported_version, modules=modules,
                        configurations=configurations, source=source)


__all__ = ["EDGE_AGENT", "modules_content_of", "strip_meta", "quote", "iso_time", "module_status", "twin_from_sdk",
           "deployment_from_sdk", "device_from_sdk_twin", "device_from_row", "edge_agent_report", "device_status_from"]
