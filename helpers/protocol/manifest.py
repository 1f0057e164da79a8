"""Azure IoT Edge deployment manifests, built and checked by pure functions.

A manifest here is the `modulesContent` dict Azure IoT Hub takes for a device (`set_modules`)
or an at-scale deployment: `$edgeAgent` (runtime, system modules, custom modules), `$edgeHub`
(routes, store and forward) and, optionally, one entry per module with its module twin's
desired properties. The local hub and Azure receive the same dict.

Secrets never travel as literals through the builders: a module that needs the studio API key
declares it (`secret_env`), and the caller supplies the value at deploy time as a
`helpers.config.Secret` (`build_manifest(..., secrets=...)` or `with_secret_env`). The manifest
keeps the `Secret` object, so printing it shows `********`; `redact_manifest` gives a JSON-able
copy for display and snapshots, and `reveal_secrets` gives the plain dict a hub client sends.

Example:
    >>> from helpers.config import Secret
    >>> m = build_manifest([runner_module("me/edgeloop:1", 3, "http://127.0.0.1:8000")],
    ...                    secrets={"EI_API_KEY": Secret("ei_0123")})
    >>> validate_manifest(m)
    []
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from helpers.config import MASK, Secret
from helpers.errors import ConfigError, InvalidManifest

EDGE_AGENT_IMAGE = "mcr.microsoft.com/azureiotedge-agent:1.5"
EDGE_HUB_IMAGE = "mcr.microsoft.com/azureiotedge-hub:1.5"
MIN_DOCKER_VERSION = "v1.25"
#: The container port the runner serves its page and JSON API on (Edge Impulse's runner port).
CONTAINER_PORT = 4912
#: Azure stores createOptions as strings of at most this many characters:
#: `createOptions`, `createOptions01`, `createOptions02`, ...
CREATE_OPTIONS_CHUNK = 512
#: More chunks than this (4096 characters) is more than Azure tooling writes.
CREATE_OPTIONS_MAX_CHUNKS = 8

SCHEMA_VERSIONS = ("1.0", "1.1")
RESTART_POLICIES = ("never", "on-failure", "on-unhealthy", "always")
STATUSES = ("running", "stopped")
RUNTIME_TYPES = ("docker",)
MODULE_TYPES = ("docker",)

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

# Environment variables the device modules read (helpers.device.module / start.sh).
ENV_MODE = "MODE"  # collect | infer
ENV_STUDIO_URL = "STUDIO_URL"
ENV_API_KEY = "EI_API_KEY"
ENV_LABEL = "LABEL"
ENV_COUNT = "SAMPLE_COUNT"
ENV_RATE_HZ = "RATE_HZ"
ENV_CAMERA_DEVICE = "CAMERA_DEVICE"
ENV_CAMERA_SOURCE = "CAMERA_SOURCE"  # synthetic | folder | webcam (helpers.device.camera)
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_SAMPLING_BAND = "SAMPLING_BAND"  # "low,high" score band of frames the runner uploads
ENV_TELEMETRY_INTERVAL_S = "TELEMETRY_INTERVAL_S"

# Keys of a module spec that are build-time metadata, not part of Azure's module schema.
_SPEC_NAME = "name"
_SPEC_SECRET_ENV = "secretEnv"
_SPEC_DESIRED = "desiredProperties"
_SPEC_ONLY_KEYS = (_SPEC_NAME, _SPEC_SECRET_ENV, _SPEC_DESIRED)

_MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CHUNK_KEY = re.compile(r"^createOptions(\d{2})?$")
_SECRET_NAME = re.compile(r"KEY|PASSWORD|PASSWD|TOKEN|SECRET|CONNECTION_?STRING|CREDENTIAL", re.IGNORECASE)
_ROUTE_MODULE = re.compile(r"/messages/modules/([^/\s]+)")


# --------------------------------------------------------------------------- copying


def _map_values(obj: Any, fn) -> Any:
    """Deep copy of JSON-like `obj`, with `fn` applied to every `Secret` leaf."""
    if isinstance(obj, Secret):
        return fn(obj)
    if isinstance(obj, Mapping):
        return {k: _map_values(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_map_values(v, fn) for v in obj]
    return copy.deepcopy(obj)


def _copy(obj: Any) -> Any:
    """Deep copy that shares `Secret` objects (immutable, and they refuse to be pickled)."""
    return _map_values(obj, lambda s: s)


# --------------------------------------------------------------------------- createOptions


def split_create_options(options: Mapping[str, Any] | str, chunk: int = CREATE_OPTIONS_CHUNK) -> dict[str, str]:
    """Stringify createOptions and split it into Azure's 512-character settings keys.

    Args:
        options: the Docker create options (a dict) or an already stringified JSON object.
        chunk: the chunk length (Azure: 512).

    Returns:
        `{"createOptions": "..."}`, plus `createOptions01`, `createOptions02`, ... when longer.
    """
    text = options if isinstance(options, str) else json.dumps(options, separators=(",", ":"), sort_keys=True)
    parts = [text[i : i + chunk] for i in range(0, len(text), chunk)] or ["{}"]
    out = {"createOptions": parts[0]}
    for i, part in enumerate(parts[1:], start=1):
        out[f"createOptions{i:02d}"] = part
    return out


def _create_options_text(settings: Mapping[str, Any]) -> str | None:
    keys = []
    for key in settings:
        m = _CHUNK_KEY.match(key)
        if m:
            keys.append((int(m.group(1) or 0), key))
    if not keys:
        return None
    pieces = []
    for _, key in sorted(keys):
        value = settings[key]
        if isinstance(value, Mapping):  # a template-style object rather than a string
            value = json.dumps(value, separators=(",", ":"), sort_keys=True)
        pieces.append(str(value))
    return "".join(pieces)


def parse_create_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Re-join `createOptions`, `createOptions01`, ... of a module's settings and parse them.

    Args:
        settings: a module's `settings` dict.

    Returns:
        The Docker create options as a dict (`{}` when there are none).

    Raises:
        InvalidManifest: the joined text is not a JSON object.
    """
    text = _create_options_text(settings)
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidManifest(
            [f"createOptions is not valid JSON ({e.msg} at character {e.pos}); build it with "
             "split_create_options(dict) instead of by hand"]
        ) from None
    if not isinstance(value, dict):
        raise InvalidManifest([f"createOptions must be a JSON object, got {type(value).__name__}"])
    return value


# --------------------------------------------------------------------------- module specs


def _env_value(value: Any) -> dict[str, Any]:
    if isinstance(value, Secret):
        return {"value": value}
    if isinstance(value, Mapping) and "value" in value:
        return _env_value(value["value"])
    if isinstance(value, bool):
        return {"value": "true" if value else "false"}
    return {"value": str(value)}


def _device_mapping(device: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(device, Mapping):
        host = device.get("PathOnHost")
        if not host:
            raise ValueError(f"device mapping {dict(device)!r} has no PathOnHost")
        return {
            "PathOnHost": host,
            "PathInContainer": device.get("PathInContainer", host),
            "CgroupPermissions": device.get("CgroupPermissions", "rwm"),
        }
    host, _, inside = str(device).partition(":")
    return {"PathOnHost": host, "PathInContainer": inside or host, "CgroupPermissions": "rwm"}


def module_spec(
    name: str,
    image: str,
    env: Mapping[str, Any] | None = None,
    host_port: int | None = None,
    devices: Sequence[str | Mapping[str, str]] | None = None,
    restart_policy: str = "always",
    status: str = "running",
    version: str = "1.0",
    privileged: bool = False,
    startup_order: int | None = None,
    binds: Sequence[str] | None = None,
    *,
    container_port: int = CONTAINER_PORT,
    secret_env: Sequence[str] = (),
    desired_properties: Mapping[str, Any] | None = None,
    create_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One custom module, shaped as Azure's `$edgeAgent` module entry plus its name.

    Args:
        name: module name (letters, digits, `_ . -`).
        image: the container image, e.g. `docker.io/me/edgeloop-device:1.0`.
        env: environment variables (values: str, numbers, or `Secret`), written to the
            module's `env` section as `{"NAME": {"value": "..."}}`.
        host_port: host port bound to the container's `container_port` (4912).
        devices: host devices to map (`"/dev/video0"`, `"/dev/video0:/dev/video1"` or a Docker
            device dict); the least-privilege alternative to `privileged`.
        restart_policy: one of `RESTART_POLICIES`.
        status: `running` or `stopped`.
        version: the module version; change it to force a restart with the same image.
        privileged: `HostConfig.Privileged` (discouraged; `validate_manifest` warns).
        startup_order: Azure `startupOrder` (schema 1.1), lower starts first.
        binds: Docker bind mounts, `"host:container[:ro]"`.
        container_port: the container port `host_port` maps.
        secret_env: names of environment variables holding secrets that must be supplied at
            deploy time (`build_manifest(secrets=...)`); never put their values in `env`.
        desired_properties: the module twin's desired properties, if any.
        create_options: extra Docker create options merged under the generated ones.

    Returns:
        The module spec: Azure's module dict with `settings.createOptions` stringified and
        split, plus build-time keys (`name`, `secretEnv`, `desiredProperties`) that
        `build_manifest` moves out.

    Raises:
        ValueError: an argument is malformed (the message says which).
    """
    if not isinstance(name, str) or not _MODULE_NAME.match(name) or name in ("edgeAgent", "edgeHub"):
        raise ValueError(
            f"module name {name!r} is not valid: use letters, digits, '_', '.', '-' (max 64), "
            "and not edgeAgent/edgeHub"
        )
    if not image or not isinstance(image, str):
        raise ValueError(f"module {name!r} needs an image, e.g. 'docker.io/me/edgeloop-device:1.0'")
    if restart_policy not in RESTART_POLICIES:
        raise ValueError(f"restart_policy {restart_policy!r} is not one of {RESTART_POLICIES}")
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    if startup_order is not None and (not isinstance(startup_order, int) or startup_order < 0):
        raise ValueError(f"startup_order must be a non-negative int, got {startup_order!r}")
    if host_port is not None and not (isinstance(host_port, int) and 0 < host_port < 65536):
        raise ValueError(f"host_port must be an int in 1..65535, got {host_port!r}")
    env = dict(env or {})
    for key in secret_env:
        if key in env and not isinstance(env[key], Secret):
            raise ValueError(
                f"{key} is a secret: do not put its value in env; pass it at deploy time with "
                f"build_manifest(..., secrets={{'{key}': Secret(...)}})"
            )

    options: dict[str, Any] = _copy(dict(create_options or {}))
    host_config: dict[str, Any] = options.setdefault("HostConfig", {})
    if host_port is not None:
        port_key = f"{container_port}/tcp"
        options.setdefault("ExposedPorts", {})[port_key] = {}
        host_config.setdefault("PortBindings", {})[port_key] = [{"HostPort": str(host_port)}]
    if devices:
        host_config.setdefault("Devices", []).extend(_device_mapping(d) for d in devices)
    if binds:
        host_config.setdefault("Binds", []).extend(str(b) for b in binds)
    if privileged:
        host_config["Privileged"] = True
    if not host_config:
        del options["HostConfig"]

    spec: dict[str, Any] = {
        _SPEC_NAME: name,
        "version": str(version),
        "type": "docker",
        "status": status,
        "restartPolicy": restart_policy,
    }
    if startup_order is not None:
        spec["startupOrder"] = startup_order
    spec["settings"] = {"image": image, **split_create_options(options)}
    if env:
        spec["env"] = {str(k): _env_value(v) for k, v in env.items()}
    if secret_env:
        spec[_SPEC_SECRET_ENV] = list(dict.fromkeys(secret_env))
    if desired_properties:
        spec[_SPEC_DESIRED] = _copy(dict(desired_properties))
    return spec


def collector_module(
    image: str,
    studio_url: str,
    *,
    label: str = "apple",
    count: int = 50,
    rate_hz: float = 1.0,
    camera: str | None = "/dev/video0",
    api_key_env: str = ENV_API_KEY,
    extra_env: Mapping[str, Any] | None = None,
    version: str = "1.0",
    name: str = "collector",
    camera_source: str | None = None,
    host_port: int | None = None,
    restart_policy: str = "always",
) -> dict[str, Any]:
    """The camera collector module (`MODE=collect`): uploads `count` labelled frames.

    Args:
        image: the device image (`Dockerfile.device`).
        studio_url: where samples go (the studio's ingestion base URL).
        label: the label given to every uploaded sample, e.g. `apple`.
        count: how many frames to upload, then idle.
        rate_hz: frames per second.
        camera: camera device mapped into the container (`None`: map nothing).
        camera_source: `CAMERA_SOURCE` for the module (`synthetic`, `folder`, `webcam`);
            None leaves the module's default (synthetic).
        api_key_env: the variable the module reads the studio API key from; its value is a
            deploy-time secret (see `build_manifest(secrets=...)`).
        extra_env: more environment variables (override the defaults above).
        version: module version.
        name: module name.
        host_port: optional host port for the module's port 4912.
        restart_policy: see `RESTART_POLICIES`.

    Returns:
        A module spec for `build_manifest`.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    env: dict[str, Any] = {
        ENV_MODE: "collect",
        ENV_STUDIO_URL: studio_url,
        ENV_LABEL: label,
        ENV_COUNT: int(count),
        ENV_RATE_HZ: _number(rate_hz),
    }
    return _camera_module(name, image, env, camera=camera, camera_source=camera_source, extra_env=extra_env,
                          host_port=host_port, restart_policy=restart_policy, version=version, api_key_env=api_key_env)


def runner_module(
    image: str,
    model_version: int | str,
    studio_url: str,
    *,
    camera: str | None = "/dev/video0",
    sampling_band: tuple[float, float] | None = None,
    telemetry_interval_s: float = 10.0,
    version: str = "1.0",
    name: str = "runner",
    camera_source: str | None = None,
    host_port: int | None = CONTAINER_PORT,
    api_key_env: str = ENV_API_KEY,
    extra_env: Mapping[str, Any] | None = None,
    restart_policy: str = "always",
) -> dict[str, Any]:
    """The inference runner module (`MODE=infer`): serves detections on port 4912.

    Args:
        image: the device image.
        model_version: the studio model version the runner downloads at start.
        studio_url: the studio base URL (model download, sampled frames upload).
        camera: camera device mapped into the container (`None`: map nothing).
        camera_source: `CAMERA_SOURCE` for the module; None leaves the module's default.
        sampling_band: `(low, high)` detector-score band; frames with a detection in it are
            uploaded for labeling (`None`: upload nothing).
        telemetry_interval_s: how often the runner writes its telemetry.
        version: module version (bump it to redeploy the same image).
        name: module name.
        host_port: host port bound to container port 4912 (`None`: none).
        api_key_env: the variable the studio API key arrives in at deploy time.
        extra_env: more environment variables (override the defaults above).
        restart_policy: see `RESTART_POLICIES`.

    Returns:
        A module spec for `build_manifest`.
    """
    if telemetry_interval_s <= 0:
        raise ValueError(f"telemetry_interval_s must be positive, got {telemetry_interval_s}")
    env: dict[str, Any] = {
        ENV_MODE: "infer",
        ENV_STUDIO_URL: studio_url,
        ENV_MODEL_VERSION: str(model_version),
        ENV_TELEMETRY_INTERVAL_S: _number(telemetry_interval_s),
    }
    if sampling_band is not None:
        low, high = (float(v) for v in sampling_band)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"sampling_band must be (low, high) with 0 <= low < high <= 1, got {sampling_band}")
        env[ENV_SAMPLING_BAND] = f"{_number(low)},{_number(high)}"
    return _camera_module(name, image, env, camera=camera, camera_source=camera_source, extra_env=extra_env,
                          host_port=host_port, restart_policy=restart_policy, version=version, api_key_env=api_key_env)


def _camera_module(name: str, image: str, env: dict[str, Any], *, camera: str | None, camera_source: str | None,
                   extra_env: Mapping[str, Any] | None, host_port: int | None, restart_policy: str, version: str,
                   api_key_env: str) -> dict[str, Any]:
    """The module spec of a camera module (collector, runner) from its mode-specific `env`.

    Adds the camera device and source to `env` (the device is also mapped into the container),
    then `extra_env` over it; the studio API key arrives in `api_key_env` at deploy time. A
    synthetic camera reads no hardware, so it maps no device: a container engine refuses to
    create a container whose mapped device is missing (`stat /dev/video0: no such file`), as on
    a simulated device or a Pi without its camera.
    """
    if camera_source == "synthetic":
        camera = None
    if camera:
        env[ENV_CAMERA_DEVICE] = camera
    if camera_source:
        env[ENV_CAMERA_SOURCE] = camera_source
    env.update(extra_env or {})
    return module_spec(
        name, image, env=env, host_port=host_port, devices=[camera] if camera else None,
        restart_policy=restart_policy, version=version, secret_env=[api_key_env],
    )


def _number(value: float) -> str:
    """`1.0` -> `"1"`, `0.5` -> `"0.5"`: stable strings for env values."""
    f = float(value)
    return str(int(f)) if f.is_integer() else repr(f)


# --------------------------------------------------------------------------- the manifest


def _registry_entries(registry_credentials: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Normalise one `{name?, address, username, password}` or a `{name: {...}}` mapping."""
    if "address" in registry_credentials:
        single = dict(registry_credentials)
        name = single.pop("name", None) or re.sub(r"[^A-Za-z0-9]", "", single["address"].split(".")[0]) or "registry"
        items = {name: single}
    else:
        items = {str(k): dict(v) for k, v in registry_credentials.items()}
    out: dict[str, dict[str, Any]] = {}
    for name, entry in items.items():
        missing = [k for k in ("address", "username", "password") if not entry.get(k)]
        if missing:
            raise ConfigError(
                f"registry credentials {name!r} lack {missing}: give address (e.g. myacr.azurecr.io), "
                "username and password (REGISTRY_USERNAME / REGISTRY_PASSWORD)"
            )
        password = entry["password"]
        out[name] = {
            "username": str(entry["username"]),
            "password": password if isinstance(password, Secret) else Secret(password, "REGISTRY_PASSWORD"),
            "address": str(entry["address"]),
        }
    return out


def _as_secret(name: str, value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value, name)
    raise ConfigError(f"secret {name} must be a helpers.config.Secret or str, got {type(value).__name__}")


def build_manifest(
    modules: Iterable[Mapping[str, Any]],
    schema_version: str = "1.1",
    registry_credentials: Mapping[str, Any] | None = None,
    routes: Mapping[str, Any] | None = None,
    *,
    secrets: Mapping[str, Secret | str] | None = None,
    registry: Mapping[str, Any] | None = None,
    store_and_forward_ttl_s: int = DEFAULT_STORE_AND_FORWARD_TTL_S,
) -> dict[str, Any]:
    """The `modulesContent` of a deployment: `$edgeAgent`, `$edgeHub` and module twins.

    Args:
        modules: module specs (`module_spec`, `collector_module`, `runner_module`).
        schema_version: `1.1` (startupOrder, route priorities) or `1.0`.
        registry_credentials: private registry login, either
            `{"name": "myacr", "address": "myacr.azurecr.io", "username": ..., "password": Secret}`
            or `{"myacr": {"address": ..., "username": ..., "password": ...}}`. A plain-str
            password is wrapped in `Secret`; it stays masked until `reveal_secrets`.
        routes: edgeHub routes (default: everything upstream).
        secrets: values of the modules' `secretEnv` variables, e.g.
            `{"EI_API_KEY": settings.ei_api_key}`; written into each module's `env` as `Secret`.
        registry: the same as `registry_credentials` (the name used in architecture.md).
        store_and_forward_ttl_s: how long edgeHub keeps messages while offline.

    Returns:
        The manifest (`modulesContent`). It may hold `Secret` objects: show it with
        `redact_manifest`, send it with `reveal_secrets`.

    Raises:
        ConfigError: a module needs a secret not in `secrets`, or registry credentials are
            incomplete.
        ValueError: duplicate module names or an unknown schema version.
    """
    if schema_version not in SCHEMA_VERSIONS:
        raise ValueError(f"schema_version {schema_version!r} is not one of {SCHEMA_VERSIONS}")
    if registry_credentials is not None and registry is not None:
        raise ValueError("give registry_credentials or registry, not both")
    registry_credentials = registry_credentials if registry_credentials is not None else registry
    secrets = {k: _as_secret(k, v) for k, v in (secrets or {}).items()}

    custom: dict[str, Any] = {}
    twins: dict[str, Any] = {}
    for spec in modules:
        spec = _copy(dict(spec))
        name = spec.pop(_SPEC_NAME, None)
        if not name:
            raise ValueError("a module spec has no 'name': build it with module_spec(name, image, ...)")
        if name in custom:
            raise ValueError(f"two modules are named {name!r}: module names must be unique")
        needed = spec.pop(_SPEC_SECRET_ENV, [])
        given = {k for k, e in (spec.get("env") or {}).items() if isinstance(e.get("value"), Secret)}
        missing = [k for k in needed if k not in secrets and k not in given]
        if missing:
            raise ConfigError(
                f"module {name!r} needs secret(s) {missing} at deploy time: pass "
                f"build_manifest(..., secrets={{'{missing[0]}': settings.ei_api_key}}) "
                f"(set {missing[0]} in the environment or .env)"
            )
        for key in needed:
            if key in secrets:
                spec.setdefault("env", {})[key] = {"value": secrets[key]}
        desired = spec.pop(_SPEC_DESIRED, None)
        if desired:
            twins[name] = {"properties.desired": desired}
        if schema_version == "1.0":
            spec.pop("startupOrder", None)
        custom[name] = spec

    runtime_settings: dict[str, Any] = {"minDockerVersion": MIN_DOCKER_VERSION, "loggingOptions": ""}
    if registry_credentials:
        runtime_settings["registryCredentials"] = _registry_entries(registry_credentials)
    edge_hub: dict[str, Any] = {"type": "docker", "status": "running", "restartPolicy": "always"}
    if schema_version == "1.1":
        edge_hub["startupOrder"] = 0
    edge_hub["settings"] = {"image": EDGE_HUB_IMAGE, **split_create_options(EDGE_HUB_CREATE_OPTIONS)}

    manifest: dict[str, Any] = {
        "$edgeAgent": {
            "properties.desired": {
                "schemaVersion": schema_version,
                "runtime": {"type": "docker", "settings": runtime_settings},
                "systemModules": {
                    "edgeAgent": {"type": "docker", "settings": {"image": EDGE_AGENT_IMAGE, "createOptions": "{}"}},
                    "edgeHub": edge_hub,
                },
                "modules": custom,
            }
        },
        "$edgeHub": {
            "properties.desired": {
                "schemaVersion": schema_version,
                "routes": _copy(dict(routes if routes is not None else DEFAULT_ROUTES)),
                "storeAndForwardConfiguration": {"timeToLiveSecs": int(store_and_forward_ttl_s)},
            }
        },
    }
    manifest.update(twins)
    return manifest


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
    out = _copy(dict(manifest))
    content = _content(out)
    mods = _agent_desired(content).get("modules") or {}
    wrapped = {k: _as_secret(k, v) for k, v in secrets.items()}
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
    return _map_values(manifest, lambda s: s.get_secret_value())


def redact_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-able copy for display and snapshots, with every secret shown as `********`.

    Masks `Secret` values, registry passwords, `env` entries whose name looks secret
    (`*KEY*`, `*PASSWORD*`, `*TOKEN*`, ...) and such `Env` entries inside createOptions.
    """
    out = _map_values(manifest, lambda s: MASK)
    content = _content(out)
    desired = _agent_desired(content)
    creds = ((desired.get("runtime") or {}).get("settings") or {}).get("registryCredentials") or {}
    for entry in creds.values():
        if isinstance(entry, dict) and entry.get("password"):
            entry["password"] = MASK
    for module in _all_modules(content).values():
        if not isinstance(module, dict):
            continue
        for key, entry in (module.get("env") or {}).items():
            if _SECRET_NAME.search(key) and isinstance(entry, dict) and entry.get("value"):
                entry["value"] = MASK
        settings = module.get("settings")
        if isinstance(settings, dict):
            try:
                options = parse_create_options(settings)
            except InvalidManifest:
                continue  # not JSON: nothing structured to mask; validate_manifest reports it
            env_list = options.get("Env")
            if isinstance(env_list, list) and any(_SECRET_NAME.search(str(e).split("=", 1)[0]) for e in env_list):
                options["Env"] = [
                    f"{str(e).split('=', 1)[0]}={MASK}" if _SECRET_NAME.search(str(e).split("=", 1)[0]) else e
                    for e in env_list
                ]
                for key in [k for k in settings if _CHUNK_KEY.match(k)]:
                    del settings[key]
                settings.update(split_create_options(options))
    return out


# --------------------------------------------------------------------------- reading modules


def _content(manifest: Mapping[str, Any]) -> Any:
    """`modulesContent` of a manifest, whether or not it is wrapped."""
    if isinstance(manifest, Mapping) and "modulesContent" in manifest:
        return manifest["modulesContent"]
    return manifest


def _agent_desired(content: Mapping[str, Any]) -> dict[str, Any]:
    agent = content.get("$edgeAgent") if isinstance(content, Mapping) else None
    desired = agent.get("properties.desired") if isinstance(agent, Mapping) else None
    return desired if isinstance(desired, dict) else {}


def _all_modules(content: Mapping[str, Any]) -> dict[str, Any]:
    desired = _agent_desired(content)
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


# --------------------------------------------------------------------------- validation


def _is_str(value: Any) -> bool:
    return isinstance(value, (str, Secret))


def _check_module(
    name: str, module: Any, schema: str | None, system: bool, errors: list[str], warnings: list[str],
    ports: dict[tuple[int, str], str],
) -> None:
    where = f"module {name!r}"
    if not isinstance(module, Mapping):
        errors.append(f"{where}: must be an object, got {type(module).__name__}")
        return
    if module.get("type", "docker") not in MODULE_TYPES:
        errors.append(f"{where}: type {module.get('type')!r} is not one of {MODULE_TYPES}")
    if not system or name == "edgeHub":  # edgeAgent has neither; edgeHub and custom modules need both
        if module.get("status") not in STATUSES:
            errors.append(f"{where}: status {module.get('status')!r} is not one of {STATUSES}")
        if module.get("restartPolicy") not in RESTART_POLICIES:
            errors.append(f"{where}: restartPolicy {module.get('restartPolicy')!r} is not one of {RESTART_POLICIES}")
    if not system and not isinstance(module.get("version", "1.0"), str):
        errors.append(f"{where}: version must be a string, got {module.get('version')!r}")
    if "startupOrder" in module:
        order = module["startupOrder"]
        if schema != "1.1":
            errors.append(f"{where}: startupOrder needs schemaVersion 1.1 (manifest has {schema!r})")
        if not isinstance(order, int) or isinstance(order, bool) or order < 0:
            errors.append(f"{where}: startupOrder must be a non-negative integer, got {order!r}")
    settings = module.get("settings")
    if not isinstance(settings, Mapping):
        errors.append(f"{where}: settings missing (needs settings.image)")
        return
    image = settings.get("image")
    if not isinstance(image, str) or not image.strip():
        errors.append(f"{where}: settings.image is missing: give the container image, e.g. me/edgeloop-device:1.0")
    for key, value in settings.items():
        if _CHUNK_KEY.match(key) and isinstance(value, str) and len(value) > CREATE_OPTIONS_CHUNK:
            errors.append(
                f"{where}: settings.{key} is {len(value)} characters (max {CREATE_OPTIONS_CHUNK}); "
                "split it with split_create_options()"
            )
    chunks = [k for k in settings if _CHUNK_KEY.match(k)]
    if len(chunks) > CREATE_OPTIONS_MAX_CHUNKS:
        warnings.append(f"{where}: createOptions is split into {len(chunks)} chunks (more than {CREATE_OPTIONS_MAX_CHUNKS})")
    if chunks and "createOptions" not in settings:
        errors.append(f"{where}: has {sorted(chunks)} but no settings.createOptions (the first chunk)")
    try:
        options = parse_create_options(settings)
    except InvalidManifest as e:
        errors.extend(f"{where}: {p}" for p in e.problems)
        return
    host_config = options.get("HostConfig") or {}
    if not isinstance(host_config, Mapping):
        errors.append(f"{where}: createOptions.HostConfig must be an object")
        host_config = {}
    if host_config.get("Privileged"):
        warnings.append(
            f"{where}: runs Privileged; map only the devices it needs (HostConfig.Devices, "
            "module_spec(devices=['/dev/video0']))"
        )
    env_list = options.get("Env", [])
    if not isinstance(env_list, list) or any(not isinstance(e, str) or "=" not in e for e in env_list):
        errors.append(f"{where}: createOptions.Env must be a list of 'NAME=value' strings")
    else:
        for item in env_list:
            key = item.split("=", 1)[0]
            if _SECRET_NAME.search(key):
                warnings.append(
                    f"{where}: secret-looking {key} is inside createOptions.Env; pass it in the env "
                    "section at deploy time (build_manifest(secrets=...))"
                )
    for key, entry in (module.get("env") or {}).items():
        if not isinstance(entry, Mapping) or not _is_str(entry.get("value")):
            errors.append(f"{where}: env {key!r} must be {{\"value\": \"...\"}} with a string value")
    bindings = host_config.get("PortBindings") or {}
    if not isinstance(bindings, Mapping):
        errors.append(f"{where}: HostConfig.PortBindings must be an object")
        bindings = {}
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
            proto = str(container).partition("/")[2] or "tcp"
            slot = (port, proto)
            if slot in ports and ports[slot] != name:
                errors.append(
                    f"host port {port}/{proto} is bound by both module {ports[slot]!r} and {name!r}: "
                    "give one of them another host_port"
                )
            ports.setdefault(slot, name)
    for device in host_config.get("Devices") or []:
        if not isinstance(device, Mapping) or not device.get("PathOnHost"):
            errors.append(f"{where}: HostConfig.Devices entries need PathOnHost, got {device!r}")


def _check_routes(routes: Any, schema: str | None, modules: set[str], errors: list[str], warnings: list[str]) -> None:
    if not isinstance(routes, Mapping):
        errors.append("$edgeHub: routes must be an object of name -> route")
        return
    for name, route in routes.items():
        if isinstance(route, Mapping):
            if schema != "1.1":
                errors.append(f"$edgeHub route {name!r}: route objects (priority, timeToLiveSecs) need schemaVersion 1.1")
            text = route.get("route")
            priority = route.get("priority", 0)
            if not isinstance(priority, int) or not 0 <= priority <= 9:
                errors.append(f"$edgeHub route {name!r}: priority must be 0..9, got {priority!r}")
        else:
            text = route
        if not isinstance(text, str) or not re.match(r"^\s*FROM\s+\S+.*\s+INTO\s+\S+", text, re.IGNORECASE | re.DOTALL):
            errors.append(f"$edgeHub route {name!r}: expected 'FROM /messages/... INTO ...', got {text!r}")
            continue
        for mod in _ROUTE_MODULE.findall(text):
            if mod != "*" and mod not in modules:
                warnings.append(f"$edgeHub route {name!r} names module {mod!r}, which is not deployed")


def validate_manifest(manifest: Mapping[str, Any]) -> list[str]:
    """Check a manifest before it is sent; return warnings, raise on errors.

    Errors: missing `$edgeAgent`/`$edgeHub`, unknown schema version, runtime type, status or
    restart policy, a module without image, createOptions that is not a JSON object or has a
    chunk over 512 characters, `startupOrder` without schema 1.1, two modules on one host
    port, malformed env entries, routes or registry credentials.
    Warnings: `Privileged`, secrets inside createOptions.Env, routes naming absent modules,
    module twins for absent modules.

    Args:
        manifest: `modulesContent`, or a dict with a `modulesContent` key.

    Returns:
        The warnings (empty when clean).

    Raises:
        InvalidManifest: with `problems` listing every error found.
    """
    errors: list[str] = []
    warnings: list[str] = []
    content = _content(manifest)
    if not isinstance(content, Mapping):
        raise InvalidManifest([f"a manifest is an object (modulesContent), got {type(content).__name__}"])
    for key in ("$edgeAgent", "$edgeHub"):
        entry = content.get(key)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("properties.desired"), Mapping):
            errors.append(f"{key} is missing (needs {key}['properties.desired']): build the manifest with build_manifest()")
    agent = _agent_desired(content)
    schema = agent.get("schemaVersion")
    modules: dict[str, Any] = {}
    if agent:
        if schema not in SCHEMA_VERSIONS:
            errors.append(f"$edgeAgent: schemaVersion {schema!r} is not one of {SCHEMA_VERSIONS}")
        runtime = agent.get("runtime")
        if not isinstance(runtime, Mapping):
            errors.append("$edgeAgent: runtime is missing (type docker, settings.minDockerVersion)")
        else:
            if runtime.get("type") not in RUNTIME_TYPES:
                errors.append(f"$edgeAgent: runtime.type {runtime.get('type')!r} is not one of {RUNTIME_TYPES}")
            rsettings = runtime.get("settings") or {}
            if not rsettings.get("minDockerVersion"):
                errors.append("$edgeAgent: runtime.settings.minDockerVersion is missing (e.g. v1.25)")
            creds = rsettings.get("registryCredentials") or {}
            if not isinstance(creds, Mapping):
                errors.append("$edgeAgent: runtime.settings.registryCredentials must be an object of name -> login")
                creds = {}
            for cname, cred in creds.items():
                missing = [k for k in ("username", "password", "address") if not (isinstance(cred, Mapping) and cred.get(k))]
                if missing:
                    errors.append(f"$edgeAgent: registryCredentials {cname!r} lacks {missing}")
        system = agent.get("systemModules")
        ports: dict[tuple[int, str], str] = {}
        if not isinstance(system, Mapping) or not all(k in system for k in ("edgeAgent", "edgeHub")):
            errors.append("$edgeAgent: systemModules needs edgeAgent and edgeHub")
            system = system if isinstance(system, Mapping) else {}
        for name, module in system.items():
            _check_module(name, module, schema, True, errors, warnings, ports)
        modules = agent.get("modules") or {}
        if not isinstance(modules, Mapping):
            errors.append("$edgeAgent: modules must be an object of name -> module")
            modules = {}
        for name, module in modules.items():
            if name in ("edgeAgent", "edgeHub") or not _MODULE_NAME.match(str(name)):
                errors.append(f"module name {name!r} is not valid (letters, digits, '_', '.', '-'; not edgeAgent/edgeHub)")
            _check_module(name, module, schema, False, errors, warnings, ports)
    hub_entry = content.get("$edgeHub")
    hub = hub_entry.get("properties.desired") if isinstance(hub_entry, Mapping) else None
    if isinstance(hub, Mapping):
        hub_schema = hub.get("schemaVersion")
        if hub_schema not in SCHEMA_VERSIONS:
            errors.append(f"$edgeHub: schemaVersion {hub_schema!r} is not one of {SCHEMA_VERSIONS}")
        _check_routes(hub.get("routes", {}), hub_schema, set(modules), errors, warnings)
        sf = hub.get("storeAndForwardConfiguration")
        ttl = sf.get("timeToLiveSecs") if isinstance(sf, Mapping) else None
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
            errors.append("$edgeHub: storeAndForwardConfiguration.timeToLiveSecs must be a non-negative integer")
    for key, value in content.items():
        if key.startswith("$"):
            if key not in ("$edgeAgent", "$edgeHub"):
                errors.append(f"unknown system entry {key!r} (only $edgeAgent and $edgeHub exist)")
            continue
        if key not in modules:
            warnings.append(f"module twin {key!r} has desired properties but no module of that name is deployed")
        elif not isinstance(value, Mapping) or not isinstance(value.get("properties.desired"), Mapping):
            errors.append(f"module twin {key!r} must be {{'properties.desired': {{...}}}}")
    if errors:
        raise InvalidManifest(errors)
    return warnings


__all__ = [
    "CONTAINER_PORT",
    "EDGE_AGENT_IMAGE",
    "EDGE_HUB_IMAGE",
    "RESTART_POLICIES",
    "STATUSES",
    "build_manifest",
    "collector_module",
    "module_env",
    "module_host_port",
    "module_spec",
    "parse_create_options",
    "redact_manifest",
    "reveal_secrets",
    "runner_module",
    "split_create_options",
    "validate_manifest",
    "with_secret_env",
]
