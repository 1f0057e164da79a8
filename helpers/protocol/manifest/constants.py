"""Azure IoT Edge's names, enums and limits that a deployment manifest uses."""
from __future__ import annotations

import re
from typing import Any

EDGE_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
EDGE_HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"
MIN_DOCKER_VERSION = "v1.25"
#: The container port the runner serves its page and JSON API on (Edge Impulse's runner port).
CONTAINER_PORT = 4912

#: The `schemaVersion`s the builders write (both `$edgeAgent` and `$edgeHub`).
SCHEMA_VERSIONS = ("1.0", "1.1")
#: The `schemaVersion`s `validate_manifest` has a published schema for.
AGENT_SCHEMA_VERSIONS = ("1.0", "1.1")
HUB_SCHEMA_VERSIONS = ("1.0", "1.1", "1.2")
RESTART_POLICIES = ("never", "on-failure", "on-unhealthy", "always")
STATUSES = ("running", "stopped")
SYSTEM_MODULES = ("edgeAgent", "edgeHub")

DEFAULT_ROUTES: dict[str, Any] = {"upstream": "FROM /messages/* INTO $upstream"}
DEFAULT_STORE_AND_FORWARD_TTL_S = 7200
#: edgeHub's own port bindings, as in every Azure reference manifest.
EDGE_HUB_CREATE_OPTIONS: dict[str, Any] = {
    "HostConfig": {
        "PortBindings": {
            "443/tcp": [{"HostPort": "443"}],
            "5671/tcp": [{"HostPort": "5671"}],
            "8883/tcp": [{"HostPort": "8883"}],
        }
    }
}

#: A custom module's name, as the edgeAgent schema allows it (`^[a-zA-Z0-9_-]+$`), at most 64 long.
MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
