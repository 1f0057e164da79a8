"""Secrets in a manifest: kept as `Secret` objects, masked for display, revealed only for the wire."""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from helpers.config import MASK, Secret
from helpers.errors import ConfigError, InvalidManifest
from helpers.protocol.manifest.create_options import chunk_keys, parse_create_options, split_create_options
from helpers.protocol.manifest.read import agent_desired, all_modules, content_of

#: Environment variable names that look like they hold a secret.
SECRET_NAME = re.compile(r"KEY|PASSWORD|PASSWD|TOKEN|SECRET|CONNECTION_?STRING|CREDENTIAL", re.IGNORECASE)


def looks_secret(name: str) -> bool:
    """Whether an environment variable's name looks like it holds a secret (`*KEY*`, `*TOKEN*`, ...)."""
    return bool(SECRET_NAME.search(name))


def map_secrets(obj: Any, fn: Callable[[Secret], Any]) -> Any:
    """Deep copy of JSON-like `obj`, with `fn` applied to every `Secret` leaf."""
    if isinstance(obj, Secret):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: map_secrets(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [map_secrets(v, fn) for v in obj]
    return copy.deepcopy(obj)


def copy_manifest(obj: Any) -> Any:
    """Deep copy that shares `Secret` objects (immutable, and they refuse to be pickled)."""
    return map_secrets(obj, lambda s: s)


def as_secret(name: str, value: Any) -> Secret:
    """`value` as a `Secret` named `name` (a str is wrapped)."""
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value, name)
    raise ConfigError(f"secret {name} must be a helpers.config.Secret or str, got {type(value).__name__}")


def with_secret_env(
    manifest: Mapping[str, Any], secrets: Mapping[str, Secret | str], modules: Iterable[str] | None = None
) -> dict[str, Any]:
    """A copy of `manifest` with secret environment variables set (e.g. a rotated API key).

    Args:
        manifest: a manifest (`modulesContent`, or a dict holding it).
        secrets: variable name -> value (`Secret`, or str which is wrapped).
        modules: the modules to set them on; default: every custom module whose `env`
            already has the variable.

    Returns:
        The new manifest; the argument is not changed.

    Raises:
        ConfigError: a named module does not exist, or no module takes a given secret.
    """
    out = copy_manifest(dict(manifest))
    mods = agent_desired(content_of(out)).get("modules") or {}
    wrapped = {k: as_secret(k, v) for k, v in secrets.items()}
    targets = list(modules) if modules is not None else None
    if targets is not None:
        unknown = [m for m in targets if m not in mods]
        if unknown:
            raise ConfigError(f"no module(s) {unknown} in the manifest; modules are {sorted(mods)}")
    for key, value in wrapped.items():
        hit = False
        for name, module in mods.items():
            env = module.get("env") or {}
            if (targets is not None and name in targets) or (targets is None and key in env):
                module.setdefault("env", {})[key] = {"value": value}
                hit = True
        if not hit:
            raise ConfigError(
                f"no module takes {key}: name the modules with with_secret_env(m, secrets, modules=[...])"
            )
    return out


def reveal_secrets(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The plain-JSON manifest a hub client sends: every `Secret` replaced by its value.

    Call it only where the request body is built; never print or store the result.
    """
    return map_secrets(manifest, lambda s: s.get_secret_value())


def redact_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-able copy for display and snapshots, with every secret shown as `********`.

    Masks `Secret` values, registry passwords, `env` entries whose name looks secret
    (`*KEY*`, `*PASSWORD*`, `*TOKEN*`, ...) and such `Env` entries inside createOptions.
    """
    out = map_secrets(manifest, lambda s: MASK)
    content = content_of(out)
    desired = agent_desired(content)
    creds = ((desired.get("runtime") or {}).get("settings") or {}).get("registryCredentials") or {}
    for entry in creds.values():
        if isinstance(entry, dict) and entry.get("password"):
            entry["password"] = MASK
    for module in all_modules(content).values():
        if not isinstance(module, dict):
            continue
        for key, entry in (module.get("env") or {}).items():
            if looks_secret(key) and isinstance(entry, dict) and entry.get("value"):
                entry["value"] = MASK
        settings = module.get("settings")
        if isinstance(settings, dict):
            try:
                options = parse_create_options(settings)
            except InvalidManifest:
                continue  # not JSON: nothing structured to mask; validate_manifest reports it
            env_list = options.get("Env")
            if isinstance(env_list, list) and any(looks_secret(str(e).split("=", 1)[0]) for e in env_list):
                options["Env"] = [
                    f"{str(e).split('=', 1)[0]}={MASK}" if looks_secret(str(e).split("=", 1)[0]) else e
                    for e in env_list
                ]
                for key in chunk_keys(settings):
                    del settings[key]
                settings.update(split_create_options(options))
    return out
