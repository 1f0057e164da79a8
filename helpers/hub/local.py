"""`LocalHub(workspace)`: the `IoTHub` client for the workspace's local stand-in (kept for callers).

There is one hub client, `helpers.hub.iothub.IoTHub`, on the `azure-iot-hub` SDK; this name
builds it for a workspace and fails the way the old HTTP client did when the local cloud is
not running there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.errors import ServiceUnavailable
from helpers.hub.iothub import IoTHub, modules_content_of
from helpers.localcloud import service


def LocalHub(workspace: str | Path | None = None, url: str | None = None, timeout: float = 10.0, autostart: bool = False,
             **kw: Any) -> IoTHub:  # noqa: N802 - a factory keeping the old class name
    """The workspace's stand-in as an `IoTHub`.

    Args:
        url: ignored (the hub's address comes from the workspace's credentials); kept for callers.

    Raises:
        ServiceUnavailable: the local cloud is not running in `workspace` (the message says how to start it).
        ConfigError: it never started there.
    """
    hub = IoTHub.local(workspace, autostart=autostart, timeout=timeout, **kw)
    if not autostart and not service.status(hub.workspace)["running"]:
        raise ServiceUnavailable(f"the local cloud is not running in {hub.workspace}: "
                                 f"`python -m helpers.localcloud start --workspace {hub.workspace}`", 0)
    return hub


__all__ = ["LocalHub", "modules_content_of"]
