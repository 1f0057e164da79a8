"""Checking a manifest before it is sent: Azure's published schemas, then the cross-field rules.

The structure of `$edgeAgent` and `$edgeHub` is checked with `jsonschema` against the IoT Edge
deployment schemas SchemaStore publishes (vendored in `schemas/`, with their licence); their
errors are translated into one line each that names the module or section, the field's path in
it and the fix. What a schema cannot say stays here: createOptions (chunk sizes, the JSON inside,
the Docker fields the other rules read), host ports bound twice, `startupOrder` against the
schema version, route syntax and targets, module twins, and secret-looking values in
createOptions.
"""
from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from helpers.config import MASK
from helpers.errors import InvalidManifest
from helpers.protocol.manifest.constants import (
    AGENT_SCHEMA_VERSIONS,
    HUB_SCHEMA_VERSIONS,
    RESTART_POLICIES,
    STATUSES,
    SYSTEM_MODULES,
)
from helpers.protocol.manifest.create_options import (
    CREATE_OPTIONS_CHUNK,
    CREATE_OPTIONS_MAX_CHUNKS,
    chunk_keys,
    parse_create_options,
)
from helpers.protocol.manifest.read import agent_desired, content_of
from helpers.protocol.manifest.secrets import looks_secret, map_secrets

# jsonschema registers, as it is imported, a format checker for each optional package it finds; with
# rfc3987-syntax (in this environment for JupyterLab's jupyter-events) that import builds an Earley
# parser: 1.4-1.6 s of CPU in every agent, local cloud and CLI process that imports this module, and
# the suite starts hundreds of them. These schemas are checked without format checks, so when this
# module is the first to import jsonschema it does so with that one package hidden (`None` in
# sys.modules: its import raises ImportError, which jsonschema expects), visible again afterwards.
_HIDE_RFC3987 = "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules
if _HIDE_RFC3987:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
try:
    from jsonschema import ValidationError
    from jsonschema.exceptions import best_match
    from jsonschema.protocols import Validator
    from jsonschema.validators import validator_for
finally:
    if _HIDE_RFC3987:
        del sys.modules["rfc3987_syntax"]

SCHEMA_DIR = Path(__file__).parent / "schemas"
#: The system sections, the file name stem of their schemas and the versions vendored.
SECTIONS = {"$edgeAgent": ("edgeagent", AGENT_SCHEMA_VERSIONS), "$edgeHub": ("edgehub", HUB_SCHEMA_VERSIONS)}
_DESIRED = "properties.desired"
_ROUTE = re.compile(r"^\s*FROM\s+\S+.*\s+INTO\s+\S+", re.IGNORECASE | re.DOTALL)
_ROUTE_MODULE = re.compile(r"/messages/modules/([^/\s]+)")
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")

#: What to add to "X is missing", by the missing field's name.
_MISSING_HINTS = {
    "image": ": give the container image, e.g. me/edgeloop-device:1.0",
    "settings": " (needs settings.image)",
    "type": " (docker)",
    "status": f" (one of {STATUSES})",
    "restartPolicy": f" (one of {RESTART_POLICIES})",
    "runtime": " (type docker, settings.minDockerVersion)",
    "systemModules": " (needs edgeAgent and edgeHub)",
    "edgeAgent": ": systemModules needs edgeAgent and edgeHub",
    "edgeHub": ": systemModules needs edgeAgent and edgeHub",
    "modules": " (an object of name -> module; {} for none)",
    "schemaVersion": " (e.g. '1.1')",
    "routes": " (an object of name -> 'FROM /messages/... INTO ...')",
    "timeToLiveSecs": " (seconds, e.g. 7200)",
    "username": ": registry credentials need username, password and address",
    "password": ": registry credentials need username, password and address",
    "address": ": registry credentials need username, password and address",
    "route": " (the route text, 'FROM /messages/... INTO ...')",
}
#: What a name under these keys must look like (the schemas' patternProperties), for the message.
_NAME_RULES = {
    "modules": "module name {key!r} is not valid (letters, digits, '_', '-'; not edgeAgent/edgeHub)",
    "routes": "route name {key!r} is not valid (no '.', '$', '#' or space)",
    "registryCredentials": "registryCredentials name {key!r} is not valid (no '.', '$', '#' or space)",
    "env": "env name {key!r} is not valid (no '+', '#', '$', '.' or whitespace)",
}


# --------------------------------------------------------------------------- the schemas


@functools.cache
def schema_validator(section: str, version: str) -> Validator:
    """The `jsonschema` validator of a vendored schema, e.g. `("edgeagent", "1.1")`."""
    path = SCHEMA_DIR / f"azure-iot-{section}-deployment-{version}.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _json_path(parts: Sequence[Any]) -> str:
    """`settings.image`, `['properties.desired'].routes`, `Devices[0]`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


def _locate(path: Sequence[Any]) -> tuple[str, list[Any]]:
    """(what the message is about, the path inside it) for an error's absolute path."""
    parts = list(path)
    if not parts:
        return "", []
    section, rest = str(parts[0]), parts[1:]
    if rest[:1] != [_DESIRED]:
        return section, rest
    rest = rest[1:]
    if section == "$edgeAgent" and len(rest) >= 2 and rest[0] in ("modules", "systemModules"):
        return f"module {rest[1]!r}", rest[2:]
    if section == "$edgeHub" and len(rest) >= 2 and rest[0] == "routes":
        return f"$edgeHub route {rest[1]!r}", rest[2:]
    return section, rest


def _at(where: str, rel: Sequence[Any]) -> str:
    field = _json_path(rel)
    return f"{where}: {field}" if field else where


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unexpected_keys(error: ValidationError) -> list[str]:
    """The keys `additionalProperties: false` refused."""
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
    patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema, Mapping) else {}
    return [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]


def _branch_errors(error: ValidationError) -> list[ValidationError]:
    """The errors of the `anyOf`/`oneOf` branch meant for the value's type (or the best match)."""
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [subs for subs in branches.values()
               if not any(s.validator == "type" and not s.relative_path for s in subs)]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:  # the value's type fits no branch: one error naming every type allowed
        types = [s.validator_value for subs in branches.values() for s in subs
                 if s.validator == "type" and not s.relative_path]
        return [ValidationError("", validator="type", validator_value=types, instance=error.instance,
                                path=error.absolute_path)]
    best = best_match(error.context or [])
    return [best] if best is not None else []


def _type_words(types: str | Sequence[Any]) -> str:
    """`"string"` -> `a string`; `["number", "string", "boolean"]` -> `a number, string or boolean`."""
    names = [types] if isinstance(types, str) else [str(t) for t in types]
    words = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return ("an " if words[0] in "aeiou" else "a ") + words


def _translate(error: ValidationError) -> list[str]:
    """One error of the schema as our messages: where, the field's path, what is wrong, the fix."""
    path = list(error.absolute_path)
    where, rel = _locate(path)
    kind, value = error.validator, error.instance
    if kind in ("anyOf", "oneOf"):
        subs = _branch_errors(error)
        if subs:
            return [line for sub in subs for line in _translate(sub)]
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(value, Mapping) and k not in value]
        out = []
        for key in missing:
            if not path or (len(path) == 1 and key == _DESIRED):
                section = key if not path else str(path[0])
                out.append(f"{section} is missing (needs {section}['{_DESIRED}']): build the manifest with "
                           "build_manifest()")
            else:
                out.append(f"{where}: {_json_path([*rel, key])} is missing{_MISSING_HINTS.get(key, '')}")
        return out
    if kind == "additionalProperties":
        parent = str(path[-1]) if path else ""
        keys = _unexpected_keys(error)
        if parent in _NAME_RULES:
            prefix = "" if parent == "modules" else f"{where}: "
            return [prefix + _NAME_RULES[parent].format(key=k) for k in keys]
        if parent == "settings":
            return [f"{where}: settings.{k} is not a settings key (image, createOptions, createOptions01, ...)"
                    for k in keys]
        allowed = sorted(error.schema.get("properties", {}))
        return [f"{_at(where, rel)} has unknown key(s) {keys}; allowed: {allowed}"]
    if kind == "enum":
        return [f"{_at(where, rel)} {_short(value)} is not one of {tuple(error.validator_value)}"]
    if kind == "type":
        line = f"{_at(where, rel)} must be {_type_words(error.validator_value)}, got {_short(value)}"
        if where.startswith("$edgeHub route") and isinstance(value, Mapping):
            line += ": route objects (priority, timeToLiveSecs) need schemaVersion 1.1"
        return [line]
    if kind in ("minimum", "maximum"):
        sign = ">=" if kind == "minimum" else "<="
        return [f"{_at(where, rel)} must be {sign} {error.validator_value}, got {_short(value)}"]
    if kind == "pattern":
        return [f"{_at(where, rel)} {_short(value)} does not match {error.validator_value!r}"]
    return [f"{_at(where, rel)}: {error.message}"]


def _schema_version(content: Mapping[str, Any], section: str, versions: Sequence[str], errors: list[str]) -> str:
    """The section's schemaVersion if a schema for it is vendored, else the latest (and an error)."""
    entry = content.get(section)
    desired = entry.get(_DESIRED) if isinstance(entry, Mapping) else None
    version = desired.get("schemaVersion") if isinstance(desired, Mapping) else None
    if version in versions:
        return version
    if isinstance(desired, Mapping) and "schemaVersion" in desired:
        errors.append(f"{section}: schemaVersion {version!r} is not one of {versions} (the published schemas)")
    return versions[-1]


def _check_schemas(content: Mapping[str, Any], errors: list[str]) -> str | None:
    """Validate `$edgeAgent` and `$edgeHub` against their schemas; return the agent's schemaVersion."""
    agent_version = None
    for section, (stem, versions) in SECTIONS.items():
        version = _schema_version(content, section, versions, errors)
        if section == "$edgeAgent":
            agent_version = version
        doc = {section: content[section]} if section in content else {}
        found = schema_validator(stem, version).iter_errors(doc)
        for error in sorted(found, key=lambda e: [str(p) for p in e.absolute_path]):
            if list(error.absolute_path) == [section, _DESIRED, "schemaVersion"] and error.validator == "pattern":
                continue  # reported by _schema_version
            errors.extend(_translate(error))
    return agent_version


# --------------------------------------------------------------------------- cross-field rules


def _check_create_options(where: str, settings: Mapping[str, Any], errors: list[str],
                          warnings: list[str]) -> dict[str, Any] | None:
    """Chunk sizes and count, the first chunk, the JSON inside; the parsed options or None."""
    chunks = chunk_keys(settings)
    for key in chunks:
        value = settings[key]
        if isinstance(value, str) and len(value) > CREATE_OPTIONS_CHUNK:
            errors.append(f"{where}: settings.{key} is {len(value)} characters (max {CREATE_OPTIONS_CHUNK}); "
                          "split it with split_create_options()")
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        warnings.append(f"{where}: createOptions is split into {len(chunks)} chunks (more than {CREATE_OPTIONS_MAX_CHUNKS})")
    if chunks and "createOptions" not in settings:
        errors.append(f"{where}: has {sorted(chunks)} but no settings.createOptions (the first chunk)")
    try:
        return parse_create_options(settings)
    except InvalidManifest as e:
        errors.extend(f"{where}: {p}" for p in e.problems)
        return None


def _check_host_config(name: str, options: Mapping[str, Any], errors: list[str], warnings: list[str],
                       ports: dict[tuple[int, str], str]) -> None:
    """createOptions' Env and HostConfig: secrets in Env, Privileged, devices, host ports bound twice."""
    where = f"module {name!r}"
    env_list = options.get("Env", [])
    if not isinstance(env_list, list) or any(not isinstance(e, str) or "=" not in e for e in env_list):
        errors.append(f"{where}: createOptions.Env must be a list of 'NAME=value' strings")
    else:
        for item in env_list:
            key = item.split("=", 1)[0]
            if looks_secret(key):
                warnings.append(f"{where}: secret-looking {key} is inside createOptions.Env; pass it in the env "
                                "section at deploy time (build_manifest(secrets=...))")
    host_config = options.get("HostConfig") or {}
    if not isinstance(host_config, Mapping):
        errors.append(f"{where}: createOptions.HostConfig must be an object")
        return
    if host_config.get("Privileged"):
        warnings.append(f"{where}: runs Privileged; map only the devices it needs (HostConfig.Devices, "
                        "module_spec(devices=['/dev/video0']))")
    for device in host_config.get("Devices") or []:
        if not isinstance(device, Mapping) or not device.get("PathOnHost"):
            errors.append(f"{where}: HostConfig.Devices entries need PathOnHost, got {device!r}")
    bindings = host_config.get("PortBindings") or {}
    if not isinstance(bindings, Mapping):
        errors.append(f"{where}: HostConfig.PortBindings must be an object")
        return
    for container, binds in bindings.items():
        for binding in binds or []:
            raw = binding.get("HostPort") if isinstance(binding, Mapping) else None
            if raw in (None, ""):
                continue
            try:
                port = int(raw)
            except (TypeError, ValueError):
                errors.append(f"{where}: HostPort {raw!r} for {container} is not a port number")
                continue
            slot = (port, str(container).partition("/")[2] or "tcp")
            if slot in ports and ports[slot] != name:
                errors.append(f"host port {port}/{slot[1]} is bound by both module {ports[slot]!r} and {name!r}: "
                              "give one of them another host_port")
            ports.setdefault(slot, name)


def _check_modules(agent: Mapping[str, Any], version: str | None, errors: list[str], warnings: list[str]) -> set[str]:
    """The cross-field rules of every module; return the custom modules' names."""
    ports: dict[tuple[int, str], str] = {}
    system = agent.get("systemModules") if isinstance(agent.get("systemModules"), Mapping) else {}
    custom = agent.get("modules") if isinstance(agent.get("modules"), Mapping) else {}
    for name in custom:
        if name in SYSTEM_MODULES:
            errors.append(f"module name {name!r} is not valid (letters, digits, '_', '-'; not edgeAgent/edgeHub)")
    for name, module in [*system.items(), *custom.items()]:
        if not isinstance(module, Mapping):
            continue  # the schema reports it
        where = f"module {name!r}"
        if "startupOrder" in module and version != "1.1":
            errors.append(f"{where}: startupOrder needs schemaVersion 1.1 (manifest has {version!r})")
        settings = module.get("settings")
        if not isinstance(settings, Mapping):
            continue
        options = _check_create_options(where, settings, errors, warnings)
        if options is not None:
            _check_host_config(name, options, errors, warnings, ports)
    return set(custom)


def _check_routes(hub: Mapping[str, Any], modules: set[str], errors: list[str], warnings: list[str]) -> None:
    """Route syntax (`FROM ... INTO ...`) and the modules routes name."""
    routes = hub.get("routes")
    for name, route in (routes.items() if isinstance(routes, Mapping) else ()):
        text = route.get("route") if isinstance(route, Mapping) else route
        if not isinstance(text, str):
            continue  # the schema reports it
        if not _ROUTE.match(text):
            errors.append(f"$edgeHub route {name!r}: expected 'FROM /messages/... INTO ...', got {text!r}")
            continue
        for mod in _ROUTE_MODULE.findall(text):
            if mod != "*" and mod not in modules:
                warnings.append(f"$edgeHub route {name!r} names module {mod!r}, which is not deployed")


def _check_twins(content: Mapping[str, Any], modules: set[str], errors: list[str], warnings: list[str]) -> None:
    """Entries beside `$edgeAgent`/`$edgeHub`: module twins of deployed modules."""
    for key, value in content.items():
        if key.startswith("$"):
            if key not in SECTIONS:
                errors.append(f"unknown system entry {key!r} (only $edgeAgent and $edgeHub exist)")
            continue
        if key not in modules:
            warnings.append(f"module twin {key!r} has desired properties but no module of that name is deployed")
        elif not isinstance(value, Mapping) or not isinstance(value.get(_DESIRED), Mapping):
            errors.append(f"module twin {key!r} must be {{'{_DESIRED}': {{...}}}}")


def validate_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Check a manifest before it is sent; return warnings, raise on errors.

    Errors: what the published `$edgeAgent`/`$edgeHub` schemas refuse (a missing section,
    runtime, image; an unknown schema version, module type, status or restart policy; a bad
    module, route or registry entry), createOptions that is not a JSON object or has a chunk
    over 512 characters, `startupOrder` without schema 1.1, two modules on one host port,
    route text that is not `FROM ... INTO ...`, malformed module twins.
    Warnings: `Privileged`, secrets inside createOptions.Env, routes naming absent modules,
    module twins for absent modules.

    Args:
        manifest: `modulesContent`, or a dict with a `modulesContent` key (it may hold `Secret`s).

    Returns:
        The warnings (empty when clean).

    Raises:
        InvalidManifest: with `problems` listing every error found.
    """
    content = content_of(manifest)
    if not isinstance(content, Mapping):
        raise InvalidManifest([f"a manifest is an object (modulesContent), got {type(content).__name__}"])
    content = map_secrets(content, lambda s: MASK)  # a Secret is a string on the wire
    errors: list[str] = []
    warnings: list[str] = []
    version = _check_schemas(content, errors)
    modules = _check_modules(agent_desired(content), version, errors, warnings)
    hub_entry = content.get("$edgeHub")
    hub = hub_entry.get(_DESIRED) if isinstance(hub_entry, Mapping) else None
    if isinstance(hub, Mapping):
        _check_routes(hub, modules, errors, warnings)
    _check_twins(content, modules, errors, warnings)
    if errors:
        raise InvalidManifest(list(dict.fromkeys(errors)))
    return warnings
