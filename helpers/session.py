"""One object per notebook: settings, the hub and the studio, whichever backends are configured.

Notebooks start with `s = session.connect()`; with the embedded defaults this starts the local
cloud in the workspace if it isn't running (idempotent), so each notebook can run alone after
its predecessors. The clients never start it: this module is the one place that does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import __version__, localcloud
from helpers.config import Settings, load_settings, settings_table
from helpers.device import fleet
from helpers.errors import NotFound
from helpers.hub import default_hub_name, get_hub
from helpers.images import image_reference, image_registry
from helpers.inference.card import model_file
from helpers.inference.loader import load_detector
from helpers.studio import get_studio


@dataclass
class Session:
    """The configured backends of one workspace."""

    settings: Settings
    hub: Any
    studio: Any
    service: dict[str, Any] = field(default_factory=dict)

    @property
    def workspace(self) -> Path:
        return self.settings.workspace

    @property
    def local(self) -> bool:
        return self.settings.hub_backend == "local"

    def describe(self) -> str:
        """A short, secret-free description for a notebook output."""
        lines = [f"hub backend:    {self.settings.hub_backend}", f"studio backend: {self.settings.studio_backend}"]
        if self.service:
            lines.append("local cloud:    running (url and pid in workspace/localcloud/service.json)")
        return "\n".join(lines)

    @property
    def device_image(self) -> str:
        """The device image reference: `EDGELOOP_REGISTRY/EDGELOOP_IMAGE:<package version>` (the
        `make containers` registry when EDGELOOP_REGISTRY is not set and that stack runs)."""
        return image_reference(f"{self.settings.image_name}:{__version__}", image_registry(self.settings))

    def lab_devices(self, tag: str, key: str = "lab") -> list[str]:
        """Ids of the devices whose tag `key` equals `tag`, sorted."""
        return sorted(d.device_id for d in self.hub.list_devices() if d.tags.get(key) == tag)

    def production_model(self):
        """The studio's model in stage `production`, else the newest one.

        Raises:
            NotFound: no model is registered yet (run notebook 04).
        """
        models = self.studio.models()
        if not models:
            raise NotFound("no model is registered yet: run 04_train first", status=404)
        prod = [m for m in models if m.stage == "production"]
        return max(prod or models, key=lambda m: m.version)

    def model_detector(self, version: int):
        """The registered model `version` as a detector (`OnnxDetector`, or the `.eim` / TFLite
        backend its card names), downloaded once into `WORKSPACE/models/registry/v<version>/`
        (the files the devices run)."""
        dest = self.workspace / "models" / "registry" / f"v{int(version)}"
        if not (dest / "model.json").is_file() or not model_file(dest).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            self.studio.download_model(int(version), dest)
        return load_detector(dest)

    def settings_rows(self) -> list[tuple[str, str, str]]:
        return settings_table(self.settings)


def uses_local_cloud(hub_backend: str, studio_backend: str) -> bool:
    """Whether these backends need the workspace's local cloud running: the local hub or studio, and
    the `edgeimpulse` studio, whose model registry and snapshots are kept there."""
    return "local" in (hub_backend, studio_backend) or studio_backend == "edgeimpulse"


def connect(backend: str | None = None, studio_backend: str | None = None, workspace: str | Path | None = None,
            resume_devices: bool = True) -> Session:
    """Resolve settings, start the embedded local cloud when it is used, and return the backends.

    The local cloud is used by the local hub, the local studio, and the `edgeimpulse` studio too
    (its model registry and snapshots are the workspace's local cloud). With the local hub, simulated devices created in this workspace by an earlier notebook are
    started again when they are not running (idempotent), so a notebook can run alone after its
    predecessors even when a pipeline stopped everything in between.

    Args:
        backend: hub backend name (`local`, `azure`); default from EDGELOOP_HUB.
        studio_backend: studio backend name (`local`, `edgeimpulse`); default from EDGELOOP_STUDIO.
        workspace: state folder; default from EDGELOOP_WORKSPACE.
        resume_devices: restart this workspace's stopped simulated devices (local hub only).
    """
    settings = load_settings(workspace, hub_backend=backend, studio_backend=studio_backend)
    if backend is None:  # a set IOTHUB_CONNECTION_STRING selects Azure unless EDGELOOP_HUB says otherwise
        settings.hub_backend = default_hub_name(settings.workspace)
    service: dict[str, Any] = {}
    if uses_local_cloud(settings.hub_backend, settings.studio_backend):
        service = localcloud.ensure_running(settings.workspace)
    hub = get_hub(settings.hub_backend, workspace=settings.workspace)
    studio = get_studio(settings.studio_backend, workspace=settings.workspace)
    if resume_devices and settings.hub_backend == "local":
        stopped = [d.device_id for d in fleet.list_devices(settings.workspace) if not d.alive]
        if stopped:
            fleet.start_devices(hub, stopped, settings.workspace)
    return Session(settings=settings, hub=hub, studio=studio, service=service)
