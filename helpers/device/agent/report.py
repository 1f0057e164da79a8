"""The `$edgeAgent` reported properties, in the schema of Azure IoT Edge's edgeAgent."""
from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Any

from helpers.device.agent.state import ModuleState

AGENT_VERSION = "1.0"
NEVER = "0001-01-01T00:00:00Z"  # what edgeAgent reports for a time that has not happened


def module_report(m: ModuleState) -> dict[str, Any]:
    """A module's entry of `modules` in edgeAgent's reported properties."""
    settings = m.spec.get("settings") or {}
    return {
        "runtimeStatus": m.runtime_status,
        "status": m.desired_status,
        "restartPolicy": m.restart_policy,
        "version": m.version,
        "exitCode": m.exit_code if m.exit_code is not None else 0,
        "statusDescription": m.status_description(),
        "restartCount": m.restart_count,
        "lastStartTimeUtc": m.start_time or NEVER,
        "lastExitTimeUtc": m.last_exit_time or NEVER,
        "lastRestartTimeUtc": m.last_restart_time or NEVER,
        "type": str(m.spec.get("type", "docker")),
        "settings": {"image": m.image, **({"createOptions": settings["createOptions"]}
                                          if isinstance(settings.get("createOptions"), str) else {})},
        "hostPort": m.host_port,
    }


def agent_report(*, status_code: int | None, status_description: str, desired_version: Any, desired: dict[str, Any],
                 module_runtime: str, started_at: str, modules: Iterable[ModuleState]) -> dict[str, Any]:
    """The whole reported properties of `$edgeAgent`.

    Args:
        status_code / status_description: `lastDesiredStatus` (200, 400, 417, 500 and why).
        desired_version: the desired `$version` last applied (`lastDesiredVersion`).
        desired: the desired properties (their `systemModules` name the images reported).
        module_runtime: the name of the runtime that runs the modules (`process`, `container`).
        started_at: when this agent started (UTC, ISO 8601).
        modules: the desired modules' states.
    """
    system = desired.get("systemModules") or {}
    agent_image = ((system.get("edgeAgent") or {}).get("settings") or {}).get("image", "")
    hub_image = ((system.get("edgeHub") or {}).get("settings") or {}).get("image", "")
    return {
        "schemaVersion": "1.1",
        "version": {"version": AGENT_VERSION, "build": "edgeloop-simulated-agent", "commit": ""},
        "lastDesiredStatus": {"code": status_code, "description": status_description},
        "lastDesiredVersion": desired_version,
        "runtime": {"type": "docker", "moduleRuntime": module_runtime,
                    "platform": {"os": platform.system().lower(), "architecture": platform.machine(),
                                 "version": AGENT_VERSION}},
        "systemModules": {
            "edgeAgent": {"runtimeStatus": "running", "exitCode": 0, "statusDescription": "running",
                          "lastStartTimeUtc": started_at, "lastExitTimeUtc": NEVER, "restartCount": 0,
                          "lastRestartTimeUtc": NEVER, "type": "docker", "settings": {"image": agent_image}},
            "edgeHub": {"runtimeStatus": "stopped", "exitCode": 0, "restartCount": 0,
                        "statusDescription": "not run by the simulated agent: its modules connect to the hub "
                                             "directly (the IoT Edge simulator's EdgeHubConnectionString)",
                        "lastStartTimeUtc": NEVER, "lastExitTimeUtc": NEVER, "lastRestartTimeUtc": NEVER,
                        "type": "docker", "settings": {"image": hub_image}},
        },
        "modules": {m.name: module_report(m) for m in modules},
    }


__all__ = ["AGENT_VERSION", "NEVER", "agent_report", "module_report"]
