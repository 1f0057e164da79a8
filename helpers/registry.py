"""A name -> "module:attribute" backend registry, imported lazily (papermill's engine registry)."""
from __future__ import annotations

import importlib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from helpers.errors import BackendNotFound, MissingExtra

# third-party SDK module -> what to install
EXTRAS = {
    "azure": "pip install azure-iot-hub (the hub's 'azure' backend)",
    "docker": "pip install docker",
    "edgeimpulse": "pip install edgeimpulse-api",
}


def load_backend(kind: str, registry: Mapping[str, str], name: str) -> Any:
    """Import and return the backend class registered as `name`.

    Raises:
        BackendNotFound: `name` is not registered, or its module/class is not in this checkout.
        MissingExtra: the backend's SDK is not installed; the message says what to install.
    """
    if name not in registry:
        raise BackendNotFound(f"unknown {kind} backend {name!r}; valid: {sorted(registry)} (set EDGELOOP_{kind.upper()} or pass name=)")
    target = registry[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise BackendNotFound(f"{kind} backend {name!r} is registered as {target} but {module_name} is not in this installation") from exc
        top = missing.split(".")[0]
        extra = EXTRAS.get(top, f"pip install {top}")
        raise MissingExtra(f"the {kind} backend {name!r} needs the package {missing!r}: {extra}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BackendNotFound(f"{kind} backend {name!r}: {module_name} has no {attr}; register the right class with register_{kind}()") from None


class BackendRegistry:
    """The backends of one kind (`hub`, `studio`), registered by name and imported when asked for.

    Args:
        kind: what the backends are: names `register_<kind>()` and `EDGELOOP_<KIND>` in messages.
        backends: name -> "package.module:ClassName"; used as is (not copied), so a package's
            public dict (`HUB_BACKENDS`) and its registry stay the same mapping.
        setting: the `Settings` attribute naming the default backend (`hub_backend`).
    """

    def __init__(self, kind: str, backends: MutableMapping[str, str], setting: str):
        self.kind = kind
        self.backends = backends
        self.setting = setting

    def register(self, name: str, target: str) -> None:
        """Register a backend: `target` is "package.module:ClassName"."""
        if ":" not in target:
            raise ValueError(f"target must be 'module:Class', got {target!r}")
        self.backends[name] = target

    def create(self, name: str | None = None, workspace: str | Path | None = None, **kw: Any) -> Any:
        """An instance of the backend registered as `name`.

        Args:
            name: registered backend name; default the `setting` (from the environment).
            workspace: the workspace folder (local backend); default from settings.
            **kw: passed to the backend class.

        Raises:
            BackendNotFound: unknown name (the message lists the valid ones).
            MissingExtra: the backend's SDK is not installed.
        """
        if name is None:
            from helpers.config import load_settings

            name = getattr(load_settings(workspace), self.setting)
        cls = load_backend(self.kind, self.backends, name)
        return cls(workspace=workspace, **kw)
