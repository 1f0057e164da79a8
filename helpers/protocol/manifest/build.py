"""Building a deployment manifest: module specs (custom, collector, runner) and `modulesContent`.

Secrets never travel as literals through the builders: a module that needs the studio API key
declares it (`secret_env`), and the caller supplies the value at deploy time as a
`helpers.config.Secret` (`build_manifest(..., secrets=...)`). The manifest keeps the `Secret`
object, so printing it shows `********`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from helpers.config import Secret
from helpers.errors import ConfigError
from helpers.protocol import module_env as env_names
from helpers.protocol.manifest.constants import (
    CONTAINER_PORT,
    DEFAULT_ROUTES,
    DEFAULT_STORE_AND_FORWARD_TTL_S,
    EDGE_AGENT_IMAGE,
    EDGE_HUB_CREATE_OPTIONS,
    EDGE_HUB_IMAGE,
    MIN_DOCKER_VERSION,
    MODULE_NAME,
    RESTART_POLICIES,
    SCHEMA_VERSIONS,
    STATUSES,
    SYSTEM_MODULES,
)
from helpers.protocol.manifest.create_options import split_create_options
from helpers.protocol.manifest.secrets import as_secret, copy_manifest

# Keys of a module spec that are build-time metadata, not part of Azure's module schema.
_SPEC_NAME = "name"
_SPEC_SECRET_ENV = "secretEnv"
_SPEC_DESIRED = "desiredProperties"


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
        name: module name (letters, digits, `_`, `-`; at most 64, as the edgeAgent schema allows).
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
    if not isinstance(name, str) or not MODULE_NAME.match(name) or name in SYSTEM_MODULES:
        raise ValueError(
            f"module name {name!r} is not valid: use letters, digits, '_', '-' (max 64), "
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

    options: dict[str, Any] = copy_manifest(dict(create_options or {}))
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
        spec[_SPEC_DESIRED] = copy_manifest(dict(desired_properties))
    return spec


def collector_module(
    image: str,
    studio_url: str,
    *,
    label: str = "apple",
    count: int = 50,
    rate_hz: float = 1.0,
    camera: str | None = "/dev/video0",
    api_key_env: str = env_names.EI_API_KEY,
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
        env_names.MODE: env_names.MODE_COLLECT,
        env_names.STUDIO_URL: studio_url,
        env_names.LABEL: label,
        env_names.SAMPLE_COUNT: int(count),
        env_names.RATE_HZ: _number(rate_hz),
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
    api_key_env: str = env_names.EI_API_KEY,
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
        env_names.MODE: env_names.MODE_INFER,
        env_names.STUDIO_URL: studio_url,
        env_names.MODEL_VERSION: str(model_version),
        env_names.TELEMETRY_INTERVAL_S: _number(telemetry_interval_s),
    }
    if sampling_band is not None:
        low, high = (float(v) for v in sampling_band)
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"sampling_band must be (low, high) with 0 <= low < high <= 1, got {sampling_band}")
        env[env_names.SAMPLING_BAND] = f"{_number(low)},{_number(high)}"
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
        env[env_names.CAMERA_DEVICE] = camera
    if camera_source:
        env[env_names.CAMERA_SOURCE] = camera_source
    env.update(extra_env or {})
    return module_spec(
        name, image, env=env, host_port=host_port, devices=[camera] if camera else None,
        restart_policy=restart_policy, version=version, secret_env=[api_key_env],
    )


def _number(value: float) -> str:
    """`1.0` -> `"1"`, `0.5` -> `"0.5"`: stable strings for env values."""
    f = float(value)
    return str(int(f)) if f.is_integer() else repr(f)


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
    secrets = {k: as_secret(k, v) for k, v in (secrets or {}).items()}

    custom: dict[str, Any] = {}
    twins: dict[str, Any] = {}
    for spec in modules:
        spec = copy_manifest(dict(spec))
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
                "routes": copy_manifest(dict(routes if routes is not None else DEFAULT_ROUTES)),
                "storeAndForwardConfiguration": {"timeToLiveSecs": int(store_and_forward_ttl_s)},
            }
        },
    }
    manifest.update(twins)
    return manifest
