"""Reading a manifest: its `modulesContent`, its modules, a module's environment and host port."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from helpers.config import Secret
from helpers.errors import InvalidManifest
from helpers.protocol.manifest.constants import CONTAINER_PORT
from helpers.protocol.manifest.create_options import parse_create_options


def content_of(manifest: Mapping[str, Any]) -> Any:
    """`modulesContent` of a manifest, whether or not it is wrapped."""
    if isinstance(manifest, Mapping) and "modulesContent" in manifest:
        return manifest["modulesContent"]
    return manifest


def agent_desired(content: Mapping[str, Any]) -> dict[str, Any]:
    """`$edgeAgent['properties.desired']` (`{}` when absent)."""
    agent = content.get("$edgeAgent") if isinstance(content, Mapping) else None
    desired = agent.get("properties.desired") if isinstance(agent, Mapping) else None
    return desired if isinstance(desired, dict) else {}


def all_modules(content: Mapping[str, Any]) -> dict[str, Any]:
    """System and custom modules by name."""
    desired = agent_desired(content)
    out: dict[str, Any] = {}
    system = desired.get("systemModules")
    if isinstance(system, Mapping):
        out.update(system)
    mods = desired.get("modules")
    if isinstance(mods, Mapping):
        out.update(mods)
    return out


def _str_value(value: Any) -> str:
    if isinstance(value, Secret):
        return value.get_secret_value()
    return "" if value is None else str(value)


def module_env(module: Mapping[str, Any]) -> dict[str, str]:
    """The environment a module runs with: createOptions `Env` merged with the `env` section.

    As on an IoT Edge device, the `env` section wins over `Env` entries of the same name.
    `Secret` values are unwrapped (this is what the agent hands the process).

    Args:
        module: a module entry from `$edgeAgent.properties.desired.modules` (or a module spec).

    Raises:
        InvalidManifest: createOptions is not JSON or `Env` is not a list of `K=V` strings.
    """
    out: dict[str, str] = {}
    options = parse_create_options(module.get("settings") or {})
    env_list = options.get("Env") or []
    if not isinstance(env_list, list):
        raise InvalidManifest([f"createOptions.Env must be a list of 'NAME=value' strings, got {env_list!r}"])
    for item in env_list:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise InvalidManifest([f"createOptions.Env entry {str(item)[:40]!r} is not 'NAME=value'"])
        out[key] = value
    for key, entry in (module.get("env") or {}).items():
        out[str(key)] = _str_value(entry.get("value") if isinstance(entry, Mapping) else entry)
    return out


def module_host_port(module: Mapping[str, Any], container_port: int = CONTAINER_PORT) -> int | None:
    """The host port bound to the module's `container_port` (4912), or None.

    Raises:
        InvalidManifest: createOptions is not JSON or the HostPort is not a number.
    """
    bindings = (parse_create_options(module.get("settings") or {}).get("HostConfig") or {}).get("PortBindings") or {}
    for key in (f"{container_port}/tcp", str(container_port)):
        for binding in bindings.get(key) or []:
            port = binding.get("HostPort") if isinstance(binding, Mapping) else None
            if port not in (None, ""):
                try:
                    return int(port)
                except (TypeError, ValueError):
                    raise InvalidManifest([f"HostPort {port!r} for {key} is not a port number"]) from None
    return None
