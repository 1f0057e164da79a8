"""A name -> "module:attribute" backend registry, imported lazily (papermill's engine registry)."""
from __future__ import annotations

import importlib
from typing import Any

from helpers.errors import BackendNotFound, MissingExtra

# third-party SDK module -> what to install
EXTRAS = {
    "azure": "pip install azure-iot-hub (the hub's 'azure' backend)",
    "docker": "pip install docker",
    "edgeimpulse": "pip install edgeimpulse-api",
}


def load_backend(kind: str, registry: dict[str, str], name: str) -> Any:
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
