"""`LocalHub(workspace)`: the `IoTHub` client for the workspace's local stand-in (kept for callers).

There is one hub client, `helpers.hub.iothub.IoTHub`, on the `azure-iot-hub` SDK; this name
builds it for a workspace and fails at once, the way the old HTTP client did, when the local
cloud is not running there (its port in `service.json` takes no connection).
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from helpers.endpoints import read_service
from helpers.errors import ServiceUnavailable
from helpers.hub.iothub import IoTHub


def _listening(url: str | None, timeout: float) -> bool:
    """Whether something accepts connections on `url`'s host and port."""
    if not url:
        return False
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def LocalHub(workspace: str | Path | None = None, url: str | None = None, timeout: float = 10.0,
             **kw: Any) -> IoTHub:  # noqa: N802 - a factory keeping the old class name
    """The workspace's stand-in as an `IoTHub`.

    Args:
        url: ignored (the hub's address comes from the workspace's credentials); kept for callers.

    Raises:
        ServiceUnavailable: the local cloud is not running in `workspace` (the message says how to start it).
        ConfigError: it never started there.
    """
    hub = IoTHub.local(workspace, timeout=timeout, **kw)
    if not _listening((read_service(hub.workspace) or {}).get("url"), timeout=min(timeout, 2.0)):
        raise ServiceUnavailable(f"the local cloud is not running in {hub.workspace}: "
                                 f"`python -m helpers.localcloud start --workspace {hub.workspace}`", 0)
    return hub


__all__ = ["LocalHub"]
