"""Deploy modules to the fleet and wait until each device runs what was asked.

- `runner_manifest(...)`: the inference runner's deployment manifest, with the runner's device key
  (uploads + its model version only) as a deploy-time secret (never in the image or build args).
- `apply(hub, device_ids, manifest)`: per-device deployment (`Hub.set_modules`).
- `deploy_at_scale(hub, name, manifest, target_condition, priority)`: an at-scale deployment.
- `wait_for_rollout(hub, device_ids, expect, timeout)`: polls each device's reported state until
  it converged (applied, every expected module running the expected version/model and healthy
  for a moment), failed (the device refused the deployment, or a module is failed/in backoff), or
  the time ran out.

Expectations (`expect`): `{module name: spec}` where spec is
  - `None`: the module must be gone (e.g. the collector after the runner replaced it);
  - a `str`: the module's version (`ModuleStatus.version`);
  - an `int`: the model version the module reports in its telemetry (the runner);
  - a dict with any of `version`, `model`, `image`.
`expect_from_manifest(manifest)` derives it from the manifest being deployed.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from helpers.errors import RolloutError
from helpers.protocol import manifest as mf

FAILED_STATES = ("failed", "backoff")
REFUSED_CODES = (400, 417, 500)
HEALTH_PATH = "/api/health"


def utc_now() -> str:
    """Now as ISO 8601 UTC with a `Z`."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --------------------------------------------------------------------------- manifests
def _studio_url(studio: Any) -> str:
    for attr in ("model_url", "url", "base_url", "studio_url"):  # model_url: where runners download models
        value = getattr(studio, attr, None)
        if value:
            return str(value).rstrip("/")
    raise RolloutError(
        f"cannot tell the studio's URL from {type(studio).__name__}: pass studio_url=... to runner_manifest"
    )


def _studio_key(studio: Any, model_version: int) -> Any:
    """The device key for a runner of `model_version`: it may upload samples and download that
    version, nothing else (the studio's management key never goes to a device)."""
    device_key = getattr(studio, "device_key", None)
    if callable(device_key):
        return device_key(int(model_version))
    raise RolloutError(
        f"{type(studio).__name__} cannot give a device key: pass api_key=Secret(...) to runner_manifest, a key "
        "that may only upload data and download the model (EI_DEVICE_API_KEY), never the management key"
    )


def runner_manifest(
    model_version: int,
    image: str,
    studio: Any,
    *,
    studio_url: str | None = None,
    api_key: Any = None,
    extra_modules: Sequence[Mapping[str, Any]] = (),
    registry: Mapping[str, Any] | None = None,
    **runner_options: Any,
) -> dict[str, Any]:
    """The deployment manifest that runs the inference runner with `model_version`.

    Args:
        model_version: the registry version the runner downloads at start.
        image: the device image, e.g. `docker.io/me/edgeloop-device:1.0` (`local` for the
            process runtime).
        studio: the studio the runner downloads the model from (its URL and API key are used
            unless given).
        studio_url: the studio URL as seen from the device (default: the studio's own).
        api_key: the key the runner gets (`Secret` or str); default `studio.device_key(model_version)`,
            which may upload samples and download this model version only. It goes into the
            module's env at deploy time as `EI_API_KEY` and stays masked in every repr.
        extra_modules: more module specs to deploy beside the runner.
        registry: private registry credentials (see `build_manifest`).
        **runner_options: passed to `helpers.protocol.manifest.runner_module` (`host_port`,
            `sampling_band`, `version`, `camera`, `telemetry_interval_s`, `extra_env`, ...).

    Returns:
        The manifest (`modulesContent`), validated.
    """
    url = studio_url or _studio_url(studio)
    key = api_key if api_key is not None else _studio_key(studio, model_version)
    runner = mf.runner_module(image, int(model_version), url, **runner_options)
    manifest = mf.build_manifest([runner, *extra_modules], registry=registry, secrets={mf.ENV_API_KEY: key})
    mf.validate_manifest(manifest)
    return manifest


def manifest_modules(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The custom modules of a manifest (`$edgeAgent.properties.desired.modules`)."""
    content = manifest.get("modulesContent", manifest)
    return dict(((content.get("$edgeAgent") or {}).get("properties.desired") or {}).get("modules") or {})


def expect_from_manifest(manifest: Mapping[str, Any], absent: Iterable[str] = ()) -> dict[str, Any]:
    """What a device must report once it runs `manifest`.

    Each module: its `version` and `image`, and its `MODEL_VERSION` env as `model` when set.
    Modules named in `absent` must be gone (e.g. `["collector"]`).
    """
    out: dict[str, Any] = {}
    for name, module in manifest_modules(manifest).items():
        spec: dict[str, Any] = {"version": str(module.get("version", "1.0"))}
        image = (module.get("settings") or {}).get("image")
        if image:
            spec["image"] = image
        env = mf.module_env(module)
        if env.get(mf.ENV_MODEL_VERSION, "").strip().isdigit():
            spec["model"] = int(env[mf.ENV_MODEL_VERSION])
        out[name] = spec
    for name in absent:
        out.setdefault(name, None)
    return out


def _normalise_expect(expect: Mapping[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for name, spec in (expect or {}).items():
        if spec is None:
            out[name] = None
        elif isinstance(spec, bool):
            raise ValueError(f"expect[{name!r}]: use None (absent) or a version/model, not {spec!r}")
        elif isinstance(spec, int):
            out[name] = {"model": spec}
        elif isinstance(spec, str):
            out[name] = {"version": spec}
        elif isinstance(spec, Mapping):
            unknown = set(spec) - {"version", "model", "image"}
            if unknown:
                raise ValueError(f"expect[{name!r}] has unknown keys {sorted(unknown)}; use version, model, image")
            out[name] = dict(spec)
        else:
            raise ValueError(f"expect[{name!r}] must be None, str (version), int (model) or dict, got {spec!r}")
    return out


# --------------------------------------------------------------------------- applying
def apply(hub: Any, device_ids: Sequence[str], manifest: Mapping[str, Any]) -> dict[str, float]:
    """Validate `manifest` and set it as each device's deployment.

    Returns:
        device id -> the time it was applied (epoch seconds), for the rollout board.

    Raises:
        InvalidManifest: the manifest does not validate (nothing is applied).
    """
    mf.validate_manifest(manifest)
    # Secrets travel as `Secret` objects up to here; the request body needs the plain values.
    body = mf.reveal_secrets(manifest)
    applied: dict[str, float] = {}
    for device_id in device_ids:
        hub.set_modules(device_id, body)
        applied[device_id] = time.time()
    return applied


def deploy_at_scale(hub: Any, name: str, manifest: Mapping[str, Any], target_condition: str, priority: int = 10,
                    labels: Mapping[str, str] | None = None, replace: bool = True) -> Any:
    """Create an at-scale deployment (replacing one of the same name when `replace`).

    Azure deployments' content cannot be changed once created, so a new content under an
    existing name means delete + create, as the portal does.

    Returns:
        The hub's `Deployment`.
    """
    mf.validate_manifest(manifest)
    if replace and any(d.name == name for d in hub.list_deployments()):
        hub.delete_deployment(name)
    return hub.create_deployment(name, mf.reveal_secrets(manifest), target_condition, priority=priority, labels=dict(labels or {}))


def remove_deployments(hub: Any, target_condition: str) -> list[str]:
    """Delete the at-scale deployments that target `target_condition` exactly; returns their names.

    An at-scale deployment wins over content set on one device (Azure IoT Edge overwrites a
    targeted device's set-modules too), so a workshop run again on the same hub starts by
    removing the deployments its earlier run made for the lab. Deployments with any other
    target condition are left alone.
    """
    wanted = " ".join(target_condition.split())
    removed = []
    for d in hub.list_deployments():
        if " ".join(d.target_condition.split()) == wanted:
            hub.delete_deployment(d.name)
            removed.append(d.name)
    return sorted(removed)


# --------------------------------------------------------------------------- health
def check_health(host_port: int, host: str = "127.0.0.1", timeout: float = 2.0, path: str = HEALTH_PATH) -> tuple[bool, str]:
    """GET `http://host:port/api/health`; (ok, reason)."""
    url = f"http://{host}:{int(host_port)}{path}"
    try:
        r = requests.get(url, timeout=timeout)
    except requests.RequestException as e:
        return False, f"{path} on port {host_port} unreachable ({type(e).__name__})"
    if r.status_code != 200:
        return False, f"{path} on port {host_port} answered {r.status_code}"
    return True, "healthy"


def model_of(module: Any) -> int | None:
    """The model version a module reports in its telemetry (the runner), or None."""
    tel = getattr(module, "telemetry", None) or {}
    for key in ("model_version", "modelVersion"):
        if tel.get(key) is not None:
            try:
                return int(tel[key])
            except (TypeError, ValueError):
                return None
    model = tel.get("model")
    if isinstance(model, Mapping) and model.get("version") is not None:
        try:
            return int(model["version"])
        except (TypeError, ValueError):
            return None
    return None


# --------------------------------------------------------------------------- state of one device
@dataclass
class DeviceCheck:
    """One look at a device: `state` is `converged`, `failed` or `pending`, with the reason."""

    state: str
    reason: str
    status: Any = None


def check_device(status: Any, expect: Mapping[str, dict[str, Any] | None],
                 health: bool | Iterable[str] = False, health_check: Callable[[int], tuple[bool, str]] = check_health,
                 deployment: str | None = None) -> DeviceCheck:
    """Judge one `DeviceStatus` against normalised expectations (see the module doc).

    With `deployment` (an at-scale deployment's name), the device is first waiting for the hub:
    until the hub marks that deployment Applied on the device's `$edgeAgent` module twin (IoT Hub
    evaluates deployments on its own schedule, minutes on Azure), nothing the device reports counts.
    """
    configurations = getattr(status, "configurations", None) or {}
    if deployment is not None and configurations.get(deployment) != "Applied":
        other = next((n for n, v in configurations.items() if v == "Applied"), None)
        why = f"waiting for the hub to apply deployment {deployment!r}" + (f" (now {other!r})" if other else "") + \
            " (IoT Hub evaluates deployments on its own schedule: up to 5 minutes on Azure)"
        return DeviceCheck("pending", why, status)
    code = status.last_desired_status
    applied = status.desired_version is not None and status.reported_version == status.desired_version
    if applied and code in REFUSED_CODES:
        return DeviceCheck("failed", f"device refused the deployment ({code}: {status.last_desired_description})", status)
    if not applied:
        why = "waiting for the device: " + (status.last_desired_description or "it has not applied the deployment yet")
        if not status.connected:
            why = "device offline: " + why
        return DeviceCheck("pending", why, status)
    if code not in (200, None):
        return DeviceCheck("pending", f"last desired status {code}", status)
    health_modules: set[str] | None
    if health is True:
        health_modules = None  # every expected module that runs a model (the runner serves /api/health)
    elif health is False:
        health_modules = set()
    else:
        health_modules = set(health)
    for name, spec in expect.items():
        ms = status.modules.get(name)
        if spec is None:
            if ms is not None:
                return DeviceCheck("pending", f"{name} still reported ({ms.runtime_status})", status)
            continue
        if ms is None:
            return DeviceCheck("pending", f"{name} not reported yet", status)
        rs = str(ms.runtime_status).lower()
        if rs in FAILED_STATES:
            exit_code = f", exit code {ms.exit_code}" if ms.exit_code is not None else ""
            return DeviceCheck("failed", f"{name} is {rs}{exit_code} after {ms.restart_count} restart(s)", status)
        if rs != "running":
            return DeviceCheck("pending", f"{name} is {rs}", status)
        if "version" in spec and str(ms.version) != str(spec["version"]):
            return DeviceCheck("pending", f"{name} runs version {ms.version}, expected {spec['version']}", status)
        if "image" in spec and ms.image is not None and ms.image != spec["image"]:
            return DeviceCheck("pending", f"{name} runs image {ms.image}, expected {spec['image']}", status)
        if "model" in spec:
            got = model_of(ms)
            if got != int(spec["model"]):
                return DeviceCheck("pending", f"{name} reports model {got}, expected {spec['model']}", status)
        wants_health = ("model" in spec) if health_modules is None else (name in health_modules)
        if ms.host_port and wants_health:
            ok, why = health_check(int(ms.host_port))
            if not ok:
                return DeviceCheck("pending", f"{name} unhealthy: {why}", status)
    return DeviceCheck("converged", "running as expected", status)


# --------------------------------------------------------------------------- waiting
@dataclass
class DeviceOutcome:
    """How one device's rollout ended.

    Attributes:
        device_id: the device.
        outcome: `converged`, `failed` or `timeout`.
        duration_s: seconds from the start of the wait to the outcome.
        reason: why (the last pending reason for a timeout).
        status: the last `DeviceStatus` seen.
    """

    device_id: str
    outcome: str
    duration_s: float
    reason: str = ""
    status: Any = field(default=None, repr=False)


@dataclass
class RolloutResult:
    """Per-device outcomes of `wait_for_rollout`."""

    outcomes: dict[str, DeviceOutcome]
    started_at: str
    duration_s: float

    def devices(self, outcome: str) -> list[str]:
        """Device ids with that outcome (`converged`, `failed`, `timeout`)."""
        return [d for d, o in self.outcomes.items() if o.outcome == outcome]

    @property
    def converged(self) -> list[str]:
        return self.devices("converged")

    @property
    def failed(self) -> list[str]:
        return self.devices("failed")

    @property
    def timed_out(self) -> list[str]:
        return self.devices("timeout")

    @property
    def ok(self) -> bool:
        """Every device converged."""
        return all(o.outcome == "converged" for o in self.outcomes.values())

    def table(self) -> list[dict[str, Any]]:
        """One row per device: device, outcome, seconds, reason."""
        return [{"device": d, "outcome": o.outcome, "seconds": round(o.duration_s, 1), "reason": o.reason}
                for d, o in self.outcomes.items()]

    def summary(self) -> str:
        """`3 converged, 0 failed, 0 timed out` and a line per device that did not converge."""
        lines = [f"{len(self.converged)} converged, {len(self.failed)} failed, {len(self.timed_out)} timed out"]
        for d, o in self.outcomes.items():
            if o.outcome != "converged":
                lines.append(f"  {d}: {o.outcome}: {o.reason}")
        return "\n".join(lines)

    def raise_for_failure(self) -> RolloutResult:
        """Raise RolloutError naming each device that did not converge; returns self otherwise."""
        if not self.ok:
            raise RolloutError(
                "rollout did not converge on every device:\n" + self.summary()
                + "\nlook at the rollout board / the module logs, fix the manifest or model, and deploy again"
            )
        return self


def wait_for_rollout(
    hub: Any,
    device_ids: Sequence[str],
    expect: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
    *,
    poll_s: float = 1.0,
    stable_s: float = 2.0,
    health: bool | Iterable[str] = True,
    health_check: Callable[[int], tuple[bool, str]] = check_health,
    on_poll: Callable[[dict[str, DeviceCheck]], None] | None = None,
    deployment: str | None = None,
) -> RolloutResult:
    """Poll the devices until each converged, failed, or `timeout` seconds passed.

    Args:
        hub: the `Hub`.
        device_ids: devices to watch.
        expect: module -> expectation (see the module doc); None: only "applied, status 200".
        timeout: seconds for the whole rollout window.
        poll_s: seconds between polls.
        stable_s: a device must look converged this long before it counts (a module that
            crashes right after starting is caught as failed instead).
        health: check `GET /api/health` on the reported host port (True: every expected module
            with a `model` expectation, i.e. the runner; an iterable: those module names;
            False: none). Modules without an HTTP server (the collector) must not be named.
        health_check: the check (port -> (ok, reason)); the default is for the local runtime
            (127.0.0.1).
        on_poll: called after each poll with the per-device checks (the board refreshes here).
        deployment: an at-scale deployment's name: a device first waits for the hub to apply it
            ("waiting for the hub ..."), then for the device to run it ("waiting for the device: ...").

    Returns:
        A `RolloutResult`; it does not raise on failure (see `raise_for_failure`).
    """
    norm = _normalise_expect(expect)
    start = time.monotonic()
    started_at = utc_now()
    deadline = start + float(timeout)
    outcomes: dict[str, DeviceOutcome] = {}
    good_since: dict[str, float] = {}
    last: dict[str, DeviceCheck] = {}
    while True:
        now = time.monotonic()
        for d in device_ids:
            if d in outcomes:
                continue
            check = check_device(hub.device_status(d), norm, health, health_check, deployment)
            last[d] = check
            if check.state == "failed":
                outcomes[d] = DeviceOutcome(d, "failed", now - start, check.reason, check.status)
            elif check.state == "converged":
                first = good_since.setdefault(d, now)
                if now - first >= stable_s:
                    outcomes[d] = DeviceOutcome(d, "converged", now - start, check.reason, check.status)
            else:
                good_since.pop(d, None)
        if on_poll is not None:
            on_poll(dict(last))
        if len(outcomes) == len(device_ids):
            break
        if time.monotonic() >= deadline:
            for d in device_ids:
                if d not in outcomes:
                    c = last.get(d)
                    outcomes[d] = DeviceOutcome(d, "timeout", time.monotonic() - start,
                                                c.reason if c else "no status", c.status if c else None)
            break
        time.sleep(max(0.05, min(poll_s, deadline - time.monotonic())))
    ordered = {d: outcomes[d] for d in device_ids}
    return RolloutResult(ordered, started_at, time.monotonic() - start)
