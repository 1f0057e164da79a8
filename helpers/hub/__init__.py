"""IoT hub backends behind the `Hub` protocol, chosen by name.

    hub = get_hub()                 # the backend named by settings (EDGELOOP_HUB), default "local"
    hub = get_hub("local", workspace="/tmp/ws")
    hub = get_hub("azure")          # needs `pip install azure-iot-hub`

Backends are registered as "module:Class" strings and imported only when asked for, so the
local backend runs without any cloud SDK installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.hub.base import Deployment, Device, DeviceStatus, Hub, ModuleStatus, Twin
from helpers.localcloud.registry import BackendRegistry

HUB_BACKENDS: dict[str, str] = {
    "local": "helpers.hub.local:LocalHub",
    "azure": "helpers.hub.azure:AzureHub",
}
_REGISTRY = BackendRegistry("hub", HUB_BACKENDS, setting="hub_backend")


def register_hub(name: str, target: str) -> None:
    """Register a backend: `target` is "package.module:ClassName"."""
    _REGISTRY.register(name, target)


def get_hub(name: str | None = None, workspace: str | Path | None = None, **kw: Any) -> Hub:
    """A `Hub` backend instance.

    Args:
        name: registered backend name; default the `hub_backend` setting (EDGELOOP_HUB).
        workspace: the workspace folder (local backend); default from settings.
        **kw: passed to the backend class.

    Raises:
        BackendNotFound: unknown name (the message lists the valid ones).
        MissingExtra: the backend's SDK is not installed.
    """
    return _REGISTRY.create(name, workspace, **kw)


__all__ = ["get_hub", "register_hub", "HUB_BACKENDS", "Hub", "Device", "Twin", "DeviceStatus", "ModuleStatus", "Deployment"]
