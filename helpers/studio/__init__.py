"""Studio backends behind the `Studio` protocol, chosen by name.

    studio = get_studio()                  # settings (EDGELOOP_STUDIO), default "local"
    studio = get_studio("local", workspace="/tmp/ws")
    studio = get_studio("edgeimpulse")     # a real Edge Impulse project (EI_API_KEY)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers.localcloud.registry import load_backend
from helpers.studio.base import ModelVersion, Sample, Snapshot, SnapshotItem, Studio, UploadResult

STUDIO_BACKENDS: dict[str, str] = {
    "local": "helpers.studio.local:LocalStudio",
    "edgeimpulse": "helpers.studio.edgeimpulse:EdgeImpulseStudio",
}


def register_studio(name: str, target: str) -> None:
    """Register a backend: `target` is "package.module:ClassName"."""
    if ":" not in target:
        raise ValueError(f"target must be 'module:Class', got {target!r}")
    STUDIO_BACKENDS[name] = target


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
    if name is None:
        from helpers.config import load_settings

        name = load_settings(workspace).studio_backend
    cls = load_backend("studio", STUDIO_BACKENDS, name)
    return cls(workspace=workspace, **kw)


__all__ = ["get_studio", "register_studio", "STUDIO_BACKENDS", "Studio", "Sample", "Snapshot", "SnapshotItem", "ModelVersion", "UploadResult"]
