"""The IoT hub client: one `Hub` implementation (`IoTHub`, on `azure-iot-hub`), two endpoints.

    hub = get_hub()                 # from settings: the local stand-in, or Azure when configured
    hub = get_hub("local", workspace="/tmp/ws")    # the workspace's stand-in (started by session.connect)
    hub = get_hub("azure")          # Azure IoT Hub from IOTHUB_CONNECTION_STRING

Both names build the same class, `helpers.hub.iothub.IoTHub`; they differ only in the service
connection string (and, for the stand-in, the CA certificate trusted for its endpoint). With
no name and no explicit EDGELOOP_HUB, a set IOTHUB_CONNECTION_STRING selects Azure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.config import load_settings
from helpers.hub.base import Deployment, Device, DeviceStatus, Hub, ModuleStatus, Twin
from helpers.registry import BackendRegistry

HUB_BACKENDS: dict[str, str] = {
    "local": "helpers.hub.iothub:local_hub",
    "azure": "helpers.hub.iothub:azure_hub",
}
_REGISTRY = BackendRegistry("hub", HUB_BACKENDS, setting="hub_backend")


def register_hub(name: str, target: str) -> None:
    """Register a backend: `target` is "package.module:factory" (a class or a function returning a `Hub`)."""
    _REGISTRY.register(name, target)


def default_hub_name(workspace: str | Path | None = None) -> str:
    """EDGELOOP_HUB when set; else `azure` when IOTHUB_CONNECTION_STRING is set; else `local`."""
    settings = load_settings(workspace)
    if settings.source.get("hub_backend") == "default" and settings.iothub_connection_string:
        return "azure"
    return settings.hub_backend


def get_hub(name: str | None = None, workspace: str | Path | None = None, **kw: Any) -> Hub:
    """The `Hub` (an `IoTHub`) for `name`.

    Args:
        name: `local` (the workspace's stand-in) or `azure` (IOTHUB_CONNECTION_STRING); default
            `default_hub_name()`.
        workspace: the workspace folder; default from settings.
        **kw: passed to the factory (`connection_string=` for azure; `timeout=`, `retries=`).

    Raises:
        BackendNotFound: unknown name (the message lists the valid ones).
        ConfigError: azure without IOTHUB_CONNECTION_STRING, or the local cloud never started (clients
            never start it: `session.connect()` or `python -m helpers.localcloud start` does).
    """
    return _REGISTRY.create(name or default_hub_name(workspace), workspace, **kw)


__all__ = ["get_hub", "register_hub", "default_hub_name", "HUB_BACKENDS", "Hub", "Device", "Twin", "DeviceStatus",
           "ModuleStatus", "Deployment"]
