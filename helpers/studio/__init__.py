"""The studio behind the `Studio` protocol: one implementation on Edge Impulse's official clients.

    studio = get_studio()                  # settings (EDGELOOP_STUDIO), default "local"
    studio = get_studio("local", workspace="/tmp/ws")
    studio = get_studio("edgeimpulse")     # a real Edge Impulse project (EI_API_KEY, EI_PROJECT_ID)

Both names give an `EdgeImpulseStudio` (helpers/studio/edgeimpulse/): "local" points it at the
workspace's local studio (the stand-in that answers the official clients), "edgeimpulse" at
Edge Impulse. `LocalStudio` (helpers/studio/local.py) is the client of the local cloud's own
extension endpoints (model registry, snapshots, device keys) that `EdgeImpulseStudio` uses for
them. The clients find the local cloud through `helpers.endpoints` and never start it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.registry import BackendRegistry
from helpers.studio.base import ModelVersion, Sample, Snapshot, SnapshotItem, Studio, UploadResult

STUDIO_BACKENDS: dict[str, str] = {
    "local": "helpers.studio.edgeimpulse.studio:local_studio",
    "edgeimpulse": "helpers.studio.edgeimpulse.studio:edge_impulse_studio",
}
_REGISTRY = BackendRegistry("studio", STUDIO_BACKENDS, setting="studio_backend")


def register_studio(name: str, target: str) -> None:
    """Register a backend: `target` is "package.module:ClassName"."""
    _REGISTRY.register(name, target)


def get_studio(name: str | None = None, workspace: str | Path | None = None, **kw: Any) -> Studio:
    """A `Studio` backend instance.

    Args:
        name: registered backend name; default the `studio_backend` setting (EDGELOOP_STUDIO).
        workspace: the workspace folder (local backend); default from settings.
        **kw: passed to the backend class.

    Raises:
        BackendNotFound: unknown name (the message lists the valid ones).
        MissingExtra: the backend's SDK is not installed.
    """
    return _REGISTRY.create(name, workspace, **kw)


__all__ = ["get_studio", "register_studio", "STUDIO_BACKENDS", "Studio", "Sample", "Snapshot", "SnapshotItem", "ModelVersion", "UploadResult"]
