"""`EdgeImpulseStudio`: the one `Studio`, composed of its parts by job, and the two backends that build it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.studio.edgeimpulse.extensions import EdgeImpulseExtensions
from helpers.studio.edgeimpulse.training import EdgeImpulseTraining


class EdgeImpulseStudio(EdgeImpulseTraining, EdgeImpulseExtensions):
    """The `Studio` protocol on Edge Impulse's Studio API, for the local stand-in or a real project.

    The connection and endpoints (`connection.py`), samples and labels (`samples.py`), snapshots
    and the model registry (`extensions.py`) and the impulse and its training (`training.py`).

    Args:
        workspace: workspace folder (default: settings); its local cloud holds the model
            registry, and is the project itself for `target="local"`. The clients never start
            it: `session.connect()` (or `python -m helpers.localcloud start`) does.
        target: "local" (the workspace's local studio) or "edgeimpulse" (a real project).
        api_key: the project API key (default: credentials.json for local, EI_API_KEY otherwise).
        project_id: default: EI_PROJECT_ID, else the key's project (`ProjectsApi.list_projects`).
        api_url: Studio API base, ending in /v1 (default: local cloud URL + /v1, or EI_STUDIO_URL + /v1).
        ingestion_url: ingestion base (default: the local cloud URL, or EI_INGESTION_URL).
        timeout: seconds per HTTP call.

    Attributes:
        url: the ingestion base URL devices upload to (their `STUDIO_URL`).
        api_key: the project's management key (`Secret`); devices get `device_key()` instead.
        project_id: the project's id.
    """


def local_studio(workspace: str | Path | None = None, **kw: Any) -> EdgeImpulseStudio:
    """The workspace's local studio (registered as backend "local")."""
    return EdgeImpulseStudio(workspace, target="local", **kw)


def edge_impulse_studio(workspace: str | Path | None = None, **kw: Any) -> EdgeImpulseStudio:
    """A real Edge Impulse project from EI_API_KEY / EI_PROJECT_ID (registered as backend "edgeimpulse")."""
    return EdgeImpulseStudio(workspace, target="edgeimpulse", **kw)


__all__ = ["EdgeImpulseStudio", "local_studio", "edge_impulse_studio"]
