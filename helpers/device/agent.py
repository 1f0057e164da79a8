"""The edge agent: what Azure IoT Edge's edgeAgent does, for one (simulated or real) device.

Run it as::

    IOTEDGE_CONNECTION_STRING='HostName=...;DeviceId=cam-01;SharedAccessKey=...' \\
        python -m helpers.device.agent --workdir workspace/devices/cam-01 [--runtime process|docker]

(`--connection-string` works too, but the environment keeps the key out of `ps`.)

With the device's connection string it does what IoT Edge's runtime does, with the same SDK and
hub APIs, so it runs against the local stand-in and a real Azure IoT Hub alike:

  1. it connects as the device's `$edgeAgent` module with `azure-iot-device`'s
     `IoTHubModuleClient` (MQTT over TLS), reads the deployment from that module twin's
     desired properties (`modules`, `runtime`, `systemModules`, `schemaVersion`) and applies
     every desired-property patch the hub pushes: modules that are new start, modules whose
     image, createOptions, env or version changed are replaced, modules no longer listed stop,
     `status: stopped` stops a module; an invalid deployment is refused (400) and what runs
     keeps running;
  2. it supervises what runs: a module that exits is restarted per its `restartPolicy`
     (`always`; `on-failure` and `on-unhealthy` on a non-zero exit; `never`) after an
     exponential backoff (1 s doubling to `backoff_max_s`, reset once the module has run
     `stable_after_s`); a runner that keeps answering 503 on `/api/health` counts as unhealthy;
  3. it reports in the reported-properties schema of Azure's edgeAgent: `schemaVersion`,
     `version`, `lastDesiredStatus` (200 applied, 400 invalid, 417 no deployment, 500 a module
     could not be started), `lastDesiredVersion` (the desired `$version` it applied),
     `runtime`, `systemModules` and per module `runtimeStatus`, `status`, `restartPolicy`,
     `version`, `exitCode`, `statusDescription`, `restartCount`, `lastStartTimeUtc`,
     `lastExitTimeUtc`, `lastRestartTimeUtc`, `type`, `settings.image`, plus `hostPort` (the
     host port standing for container port 4912 on a simulated device);
  4. it answers edgeAgent's direct methods `ping`, `RestartModule` and `GetModuleLogs`
     (`tail`, `since`, `until`, `regex`);
  5. it gives each module the environment of the IoT Edge simulator, `EdgeHubConnectionString`
     (the module's own identity, created `managedBy: IotEdge` through the device-scoped
     registry API when missing) and `EdgeModuleCACertificateFile`, so the module's
     `IoTHubModuleClient.create_from_edge_environment()` connects as on a real device.

When the hub cannot be reached, modules keep running and the SDK reconnects; reports wait and
are sent (only what changed) once the hub acknowledges again; after a reconnection the agent
reads the whole twin, so a deployment changed meanwhile is applied. SIGTERM or SIGINT stops
every module (SIGTERM to each process group, then SIGKILL after `stop_timeout_s`), reports,
and the agent exits 0.

Files in the workdir: `agent.json` (this agent's pid and its modules' pids, so a later agent
or `helpers.device.fleet` can clean up after a crash), `scene.json` (the synthetic camera's
scene), `modules/<name>/` (each module's `MODULE_WORKDIR`, with `module.log`).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import Secret, mask, parse_connection_string
from helpers.device.runtime import (
    LOG_NAME,
    ModuleHandle,
    ModuleLaunch,
    RuntimeUnavailable,
    make_runtime,
    process_start_ticks,
    read_json,
    registry_auth_for,
    stop_handles,
    utc_now,
)
from helpers.errors import ConfigError, EdgeLoopError, InvalidManifest, ServiceError

log = logging.getLogger("helpers.device.agent")

CONNECTION_STRING_ENV = "IOTEDGE_CONNECTION_STRING"
STATE_FILE = "agent.json"
SCENE_FILE = "scene.json"
AGENT_VERSION = "1.0"
NEVER = "0001-01-01T00:00:00Z"  # what edgeAgent reports for a time that has not happened
#: the largest GetModuleLogs answer (a direct method's payload is at most 128 KB)
MAX_LOG_BYTES = 96 * 1024

# lastDesiredStatus codes, as Azure IoT Edge's edgeAgent uses them
OK, INVALID, NO_CONFIG, FAILED = 200, 400, 417, 500


@dataclass
class AgentConfig:
    """Timing and placement of one agent; the defaults suit a simulated fleet.

    Attributes:
        workdir: the device's folder (state, scene, module folders).
        runtime: `process` or `docker`.
        tick_s: supervision period.
        backoff_base_s / backoff_max_s: module restart backoff (doubling, capped).
        stable_after_s: a module that ran this long has its backoff reset.
        hub_backoff_max_s: cap of the retry delay while the hub cannot be reached at start.
        stop_timeout_s: SIGTERM grace for a module before SIGKILL.
        health_grace_s / health_interval_s / health_failures: the runner health probe
            (`on-unhealthy`, `always`): after the grace, this many failed probes in a row
            restart the module.
    """

    workdir: Path
    runtime: str = "process"
    tick_s: float = 0.25
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    stable_after_s: float = 60.0
    hub_backoff_max_s: float = 10.0
    stop_timeout_s: float = 10.0
    health_grace_s: float = 30.0
    health_interval_s: float = 10.0
    health_failures: int = 3


@dataclass
class ModuleState:
    """What the agent knows of one desired module."""

    name: str
    spec: dict[str, Any]
    env: dict[str, str]
    fingerprint: str
    handle: ModuleHandle | None = None
    runtime_status: str = "stopped"
    exit_code: int | None = None
    restart_count: int = 0
    backoff_step: int = 0
    next_start: float | None = 0.0  # monotonic time of the next (re)start; None: do not start
    start_time: str | None = None
    last_exit_time: str | None = None
    last_restart_time: str | None = None
    started_mono: float = 0.0
    host_port: int | None = None
    error: str | None = None
    held: bool = False  # stopped because the deployment says `status: stopped`
    health: str | None = None
    health_fail: int = 0
    next_probe: float = 0.0
    edge_cs: Secret | None = None  # the module identity's connection string (EdgeHubConnectionString)

    @property
    def image(self) -> str:
        return str((self.spec.get("settings") or {}).get("image", ""))

    @property
    def version(self) -> str:
        return str(self.spec.get("version", ""))

    @property
    def desired_status(self) -> str:
        return str(self.spec.get("status", "running"))

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy", "always"))

    def status_description(self) -> str:
        if self.error:
            return self.error
        if self.runtime_status == "running":
            return "running" + (f" ({self.health})" if self.health else "")
        if self.runtime_status == "backoff":
            return f"exited with code {self.exit_code}; restarting after a backoff ({self.restart_policy})"
        if self.exit_code is not None:
            return f"exited with code {self.exit_code}"
        return self.runtime_status

    def report(self) -> dict[str, Any]:
        """This module's entry of `modules` in edgeAgent's reported properties."""
        settings = self.spec.get("settings") or {}
        out: dict[str, Any] = {
            "runtimeStatus": self.runtime_status,
            "status": self.desired_status,
            "restartPolicy": self.restart_policy,
            "version": self.version,
            "exitCode": self.exit_code if self.exit_code is not None else 0,
            "statusDescription": self.status_description(),
            "restartCount": self.restart_count,
            "lastStartTimeUtc": self.start_time or NEVER,
            "lastExitTimeUtc": self.last_exit_time or NEVER,
            "lastRestartTimeUtc": self.last_restart_time or NEVER,
            "type": str(self.spec.get("type", "docker")),
            "settings": {"image": self.image, **({"createOptions": settings["createOptions"]}
                                                 if isinstance(settings.get("createOptions"), str) else {})},
            "hostPort": self.host_port,
        }
        return out


def module_fingerprint(spec: dict[str, Any], env: dict[str, str]) -> str:
    """A hash of what makes a module a different module (image, createOptions, env, version).

    A change of any of these replaces the running module; a change of `status` or
    `restartPolicy` alone does not.
    """
    from helpers.protocol.manifest import parse_create_options

    settings = spec.get("settings") or {}
    doc = {
        "image": settings.get("image"),
        "createOptions": parse_create_options(settings),
        "env": env,
        "version": spec.get("version"),
        "type": spec.get("type"),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


class _MaskingFormatter(logging.Formatter):
    """Formats records, then masks anything that looks like a key or a signature."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with masked secrets (the fleet sends stderr to `agent.log`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("azure.iot.device").setLevel(logging.WARNING)
    logging.getLogger("paho").setLevel(logging.WARNING)


def edge_hub_stub() -> dict[str, Any]:
    """A minimal `$edgeHub` section, so the agent can validate its own part with `validate_manifest`."""
    return {"properties.desired": {"schemaVersion": "1.1", "routes": {},
                                   "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}


class EdgeAgent:
    """Reconciles the modules of one device with its `$edgeAgent` twin and reports their state.

    Args:
        connect: returns a connected link (`helpers.device.hub_link.AgentLink` or alike:
            `connect() -> twin`, `patches` / `methods` queues, `reconnected` event, `get_twin()`,
            `report(state)`, `close()`); called again with backoff while it raises.
        module_identity: module name -> that module's connection string (EdgeHubConnectionString).
        ca_file: the CA file modules trust for the hub (EdgeModuleCACertificateFile).
        device_id: the device's id.
        config: timing and placement.
        runtime: a module runtime (default: `make_runtime(config.runtime)`).
    """

    def __init__(self, connect: Callable[[], Any], module_identity: Callable[[str], Secret], ca_file: str,
                 device_id: str, config: AgentConfig, runtime: Any = None):
        self._connect = connect
        self.module_identity = module_identity
        self.ca_file = ca_file
        self.link: Any = None
        self.device_id = device_id
        self.config = config
        self.workdir = Path(config.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "modules").mkdir(exist_ok=True)
        self.runtime = runtime or make_runtime(config.runtime)
        self.modules: dict[str, ModuleState] = {}
        self.status_code: int | None = None
        self.status_description = ""
        self.desired: dict[str, Any] = {}
        self.desired_version: int | None = None  # the desired $version last applied
        self._applied_key: str | None = None
        self._stopping = False
        self._next_connect = 0.0
        self._connect_failures = 0
        self._last_submitted: str | None = None
        self.started_at = utc_now()

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Ask the loop to stop (signal handler)."""
        if not self._stopping:
            log.info("stop requested (%s): stopping modules", signal.Signals(signum).name if signum else "call")
        self._stopping = True

    def run(self) -> int:
        """The agent loop; returns the process exit code (0 after a clean stop)."""
        self._cleanup_previous_run()
        self._write_state()
        log.info("edge agent for %s started: %s, workdir %s", self.device_id, self.runtime.describe(), self.workdir)
        try:
            while not self._stopping:
                if self.link is not None:
                    self.link.activity.clear()  # before step() drains the queues: nothing that arrives is missed
                self.step()
                if self.link is not None:  # a pushed patch or a method call wakes the loop at once
                    self.link.activity.wait(self.config.tick_s)
                else:
                    time.sleep(self.config.tick_s)
        finally:
            self.shutdown()
        return 0

    def step(self) -> None:
        """One iteration: connect when needed, apply pushed patches, answer methods, supervise, report."""
        if self.link is None:
            if time.monotonic() >= self._next_connect:
                self._try_connect()
        else:
            self._sync_desired()
            self._answer_methods()
        self._supervise()
        self._submit_report()

    def shutdown(self) -> None:
        """Stop every module (SIGTERM, then SIGKILL after the timeout), report it and disconnect."""
        running = [m for m in self.modules.values() if m.handle is not None]
        if running:
            codes = stop_handles([m.handle for m in running], self.config.stop_timeout_s)
            for m in running:
                self._mark_exited(m, codes.get(m.name))
        for m in self.modules.values():
            if m.runtime_status in ("running", "backoff"):
                m.runtime_status = "stopped"  # the device is going down: nothing runs or restarts
            m.next_start = None
        self._write_state()
        if self.link is not None:
            self._submit_report(final=True)
            self.link.close(flush_timeout_s=5.0)
        log.info("edge agent for %s stopped", self.device_id)

    # ------------------------------------------------------------------ hub
    def _try_connect(self) -> None:
        link = None
        try:
            link = self._connect()
            twin = link.connect()
        except (EdgeLoopError, OSError, ValueError) + _sdk_errors() as exc:
            if link is not None:
                link.close(flush_timeout_s=0)  # its SDK client's threads end with it
            self._connect_failures += 1
            delay = min(self.config.hub_backoff_max_s, 0.5 * 2 ** (self._connect_failures - 1))
            self._next_connect = time.monotonic() + delay
            level = logging.ERROR if isinstance(exc, ServiceError) and exc.status in (401, 403) else logging.WARNING
            log.log(level, "cannot connect to the hub as %s/$edgeAgent (%s); modules keep running; retrying in "
                           "%.1f s", self.device_id, mask(str(exc)), delay)
            return
        self.link = link
        self._connect_failures = 0
        self._last_submitted = None  # report everything the hub does not know yet
        log.info("connected to the hub as %s/$edgeAgent", self.device_id)
        self.apply_desired(twin.get("desired") or {})

    def _sync_desired(self) -> None:
        """Apply the patches the hub pushed; after a reconnection, the whole twin."""
        link = self.link
        if link.reconnected.is_set():
            link.reconnected.clear()
            try:
                twin = link.get_twin()
            except _sdk_errors() as exc:
                log.warning("reading the twin after reconnecting failed (%s); retrying", mask(str(exc)))
                link.reconnected.set()
                return
            while not link.patches.empty():  # the whole twin supersedes queued patches
                link.patches.get_nowait()
            self.apply_desired(twin.get("desired") or {})
            return
        changed = False
        desired = self.desired
        while not link.patches.empty():
            patch = link.patches.get_nowait()
            from helpers.device.hub_link import merge_patch

            desired = merge_patch(desired, patch)
            desired["$version"] = patch.get("$version", desired.get("$version"))
            changed = True
        if changed:
            self.apply_desired(desired)

    def apply_desired(self, desired: dict[str, Any]) -> None:
        """Validate and reconcile the `$edgeAgent` desired properties (the deployment)."""
        self.desired = desired
        version = desired.get("$version")
        body = {k: v for k, v in desired.items() if not k.startswith("$")}
        key = f"{version}:" + hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        if key == self._applied_key:
            return
        self._applied_key = key
        self.desired_version = int(version) if isinstance(version, int) else version
        if not body.get("modules") and not body.get("runtime") and not body.get("systemModules"):
            if not self.modules:
                self._set_status(NO_CONFIG, "no deployment targets this device: set modules on it or create a "
                                            "deployment whose target condition matches its tags")
                return
            log.info("the deployment is empty: stopping every module")
        log.info("deployment (desired $version %s) received", version)
        try:
            modules = self._desired_modules(body)
        except InvalidManifest as exc:
            self._set_status(INVALID, str(exc))
            log.error("deployment $version %s is invalid; keeping the running modules:\n%s", version, exc)
            return
        self._reconcile(modules)

    def _desired_modules(self, body: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
        """Validated module name -> (spec, env); raises InvalidManifest."""
        from helpers.protocol.manifest import module_env, validate_manifest

        if body.get("modules") or body.get("runtime"):
            for warning in validate_manifest({"$edgeAgent": {"properties.desired": body}, "$edgeHub": edge_hub_stub()}):
                log.warning("deployment warning: %s", warning)
        modules = body.get("modules") or {}
        # the container runtime pulls with these (name -> address, username, password)
        self.registry_credentials = ((body.get("runtime") or {}).get("settings") or {}).get("registryCredentials")
        return {name: (spec, module_env(spec)) for name, spec in modules.items()}

    def _set_status(self, code: int, description: str) -> None:
        self.status_code, self.status_description = code, description

    def _edge_env(self, m: ModuleState) -> dict[str, str]:
        """The IoT Edge simulator environment of a module (its identity's connection string, the CA file)."""
        if m.edge_cs is None:
            m.edge_cs = self.module_identity(m.name)
        return {"EdgeHubConnectionString": m.edge_cs.get_secret_value(), "EdgeModuleCACertificateFile": self.ca_file}

    def _cleanup_previous_run(self) -> None:
        """Kill module processes a crashed previous agent left running in this workdir."""
        previous = read_json(self.workdir / STATE_FILE)
        if not previous:
            return
        for name, record in (previous.get("modules") or {}).items():
            kill_stale = getattr(self.runtime, "kill_stale", None)
            if kill_stale and record and kill_stale(record):
                log.warning("stopped module %s left running by a previous agent (pid %s)", name, record.get("pid"))

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "start_ticks": process_start_ticks(os.getpid()),
            "device_id": self.device_id,
            "runtime": self.runtime.name,
            "updated_at": utc_now(),
            "modules": {m.name: m.handle.record() for m in self.modules.values() if m.handle is not None},
        }
        path = self.workdir / STATE_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ reconcile
    def _reconcile(self, desired: dict[str, tuple[dict[str, Any], dict[str, str]]]) -> None:
        to_stop: list[ModuleState] = []
        for name in list(self.modules):
            if name not in desired:
                m = self.modules.pop(name)
                log.info("module %s removed from the deployment: stopping it", name)
                if m.handle is not None:
                    to_stop.append(m)
        for name, (spec, env) in desired.items():
            fp = module_fingerprint(spec, env)
            current = self.modules.get(name)
            if current is None:
                self.modules[name] = ModuleState(name, spec, env, fp)
                continue
            if current.fingerprint != fp:
                log.info("module %s changed (image/env/createOptions/version): replacing it", name)
                if current.handle is not None:
                    to_stop.append(current)
                replacement = ModuleState(name, spec, env, fp, host_port=current.host_port)
                self.modules[name] = replacement
            else:
                current.spec = spec  # status / restartPolicy may have changed
                if current.desired_status == "running" and current.held:
                    current.held, current.next_start = False, 0.0  # was stopped on purpose: start it now
        for m in self.modules.values():
            if m.desired_status == "stopped":
                m.next_start, m.held = None, True
                if m.runtime_status == "backoff":
                    m.runtime_status = "stopped"
                if m.handle is not None:
                    log.info("module %s desired stopped: stopping it", m.name)
                    to_stop.append(m)
        if to_stop:
            codes = stop_handles([m.handle for m in to_stop], self.config.stop_timeout_s)
            for m in to_stop:
                self._mark_exited(m, codes.get(m.name))
                m.runtime_status = "stopped"
        now = time.monotonic()
        order = sorted(self.modules.values(), key=lambda m: (int(m.spec.get("startupOrder", 4294967295)), m.name))
        for m in order:
            # new modules and modules started again; ones in restart backoff keep their delay
            if (m.desired_status == "running" and m.handle is None and m.next_start is not None
                    and m.next_start <= now):
                self._start(m)
        self._write_state()
        self._update_status()

    def _update_status(self) -> None:
        """200 when every desired module could be started, 500 naming the ones that could not."""
        failures = [f"{m.name}: {m.error}" for m in self.modules.values() if m.error]
        if failures:
            self._set_status(FAILED, "module(s) could not be started: " + "; ".join(failures))
        else:
            self._set_status(OK, "")

    def _binds_manifest_port(self) -> bool:
        """Whether a module gets the host port its manifest binds: only a container published
        from its own network namespace; the process runtime and containers on the host's network
        (simulated devices sharing one host) take a free port instead and report it."""
        return self.runtime.name != "process" and getattr(self.runtime, "network", "host") != "host"

    def _launch(self, m: ModuleState) -> ModuleLaunch:
        from helpers.protocol.manifest import module_host_port, parse_create_options

        workdir = self.workdir / "modules" / m.name
        return ModuleLaunch(
            name=m.name,
            image=m.image,
            env={**m.env, **self._edge_env(m)},
            workdir=workdir,
            device_id=self.device_id,
            scene_file=self.workdir / SCENE_FILE,
            create_options=parse_create_options(m.spec.get("settings") or {}),
            # A container gets the port its manifest binds. Simulated devices share one host, so
            # the process runtime keeps a module's own port across restarts but never asks for
            # the manifest's (two devices would race for 4912); it reports the port it got. So does
            # the container runtime on the host's network (simulated devices' containers).
            host_port=m.host_port or (module_host_port(m.spec) if self._binds_manifest_port() else None),
            registry_auth=registry_auth_for(getattr(self, "registry_credentials", None), m.image),
            generation=m.fingerprint,
        )

    def _start(self, m: ModuleState) -> bool:
        try:
            handle = self.runtime.start(self._launch(m))
        except (EdgeLoopError, OSError) as exc:
            m.error = mask(str(exc))
            if m.restart_policy == "never":
                m.runtime_status, m.next_start = "failed", None
                log.error("module %s could not be started: %s", m.name, m.error)
            else:
                m.backoff_step += 1
                delay = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (m.backoff_step - 1))
                m.runtime_status, m.next_start = "backoff", time.monotonic() + delay
                log.error("module %s could not be started (retrying in %.0f s): %s", m.name, delay, m.error)
            return False
        m.handle = handle
        m.error = None
        m.runtime_status = "running"  # exitCode keeps the last exit's code, as edgeAgent reports it
        m.start_time = handle.started_at
        m.started_mono = time.monotonic()
        m.host_port = handle.host_port
        m.health, m.health_fail = None, 0
        m.next_probe = m.started_mono + self.config.health_grace_s
        log.info("module %s started (%s, port %s)", m.name, m.image, m.host_port)
        return True

    def _mark_exited(self, m: ModuleState, code: int | None) -> None:
        m.handle = None
        m.exit_code = code
        m.last_exit_time = utc_now()

    # ------------------------------------------------------------------ supervise
    def _should_restart(self, policy: str, code: int | None, unhealthy: bool) -> bool:
        if policy == "always":
            return True
        if policy in ("on-failure", "on-unhealthy"):
            return code != 0 or (unhealthy and policy == "on-unhealthy")
        return False

    def _supervise(self) -> None:
        now = time.monotonic()
        changed = False
        for m in self.modules.values():
            if m.handle is not None:
                code = m.handle.poll()
                unhealthy = False
                if code is None and self._probe_due(m, now):
                    unhealthy = self._probe(m, now)
                    if unhealthy:
                        log.warning("module %s is unhealthy (%d failed health probes): restarting it",
                                    m.name, m.health_fail)
                        code = stop_handles([m.handle], self.config.stop_timeout_s).get(m.name)
                if code is None:
                    if m.backoff_step and now - m.started_mono >= self.config.stable_after_s:
                        m.backoff_step = 0  # ran long enough: the next crash starts the backoff anew
                    continue
                ran_s = now - m.started_mono
                self._mark_exited(m, code)
                changed = True
                if m.desired_status == "running" and self._should_restart(m.restart_policy, code, unhealthy):
                    if ran_s >= self.config.stable_after_s:
                        m.backoff_step = 0
                    m.backoff_step += 1
                    delay = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (m.backoff_step - 1))
                    m.next_start = now + delay
                    m.runtime_status = "backoff"
                    log.warning("module %s exited with code %s after %.1f s: restarting in %.1f s (%s)",
                                m.name, code, ran_s, delay, m.restart_policy)
                else:
                    m.next_start = None
                    m.runtime_status = "failed" if code not in (0, None) or unhealthy else "stopped"
                    log.warning("module %s exited with code %s; restartPolicy %s: not restarting",
                                m.name, code, m.restart_policy)
            elif (m.desired_status == "running" and m.next_start is not None and m.runtime_status == "backoff"
                  and now >= m.next_start):
                had_error = m.error is not None
                m.restart_count += 1
                m.last_restart_time = utc_now()
                if self._start(m) and had_error and self._applied_key is not None:
                    self._update_status()
                changed = True
        if changed:
            self._write_state()

    def _probe_due(self, m: ModuleState, now: float) -> bool:
        return (m.restart_policy in ("always", "on-unhealthy") and m.env.get("MODE") == "infer"
                and m.host_port is not None and now >= m.next_probe)

    def _probe(self, m: ModuleState, now: float) -> bool:
        """GET the runner's /api/health; True once it failed `health_failures` times in a row."""
        m.next_probe = now + self.config.health_interval_s
        url = f"http://127.0.0.1:{m.host_port}/api/health"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                healthy = resp.status == 200
        except urllib.error.HTTPError as exc:
            healthy = exc.code == 200
        except (urllib.error.URLError, OSError):
            healthy = False
        m.health = "healthy" if healthy else "unhealthy"
        m.health_fail = 0 if healthy else m.health_fail + 1
        return m.health_fail >= self.config.health_failures

    # ------------------------------------------------------------------ direct methods
    def _answer_methods(self) -> None:
        link = self.link
        while not link.methods.empty():
            call = link.methods.get_nowait()
            try:
                status, payload = self.handle_method(call.name, call.payload)
            except (ValueError, TypeError, KeyError) as exc:
                status, payload = 400, {"message": f"bad request for {call.name}: {exc}"}
            log.info("direct method %s answered %d", call.name, status)
            try:
                call.answer(status, payload)
            except _sdk_errors() as exc:
                log.warning("could not answer direct method %s (%s)", call.name, mask(str(exc)))

    def handle_method(self, name: str, payload: Any) -> tuple[int, Any]:
        """edgeAgent's built-in direct methods: `ping`, `RestartModule`, `GetModuleLogs`."""
        if name == "ping":
            return 200, None
        if name == "RestartModule":
            module_id = (payload or {}).get("id") if isinstance(payload, dict) else None
            m = self.modules.get(str(module_id)) if module_id else None
            if m is None:
                return 400, {"message": f"RestartModule: no module {module_id!r} in this deployment "
                                        f"(modules: {sorted(self.modules)}); send {{\"schemaVersion\": \"1.0\", \"id\": NAME}}"}
            self.restart_module(m)
            return 200, None
        if name == "GetModuleLogs":
            return 200, self.module_logs(payload if isinstance(payload, dict) else {})
        return 501, {"message": f"edgeAgent has no direct method {name!r} (ping, RestartModule, GetModuleLogs)"}

    def restart_module(self, m: ModuleState) -> None:
        """Stop a module and start it again at once (RestartModule)."""
        if m.handle is not None:
            codes = stop_handles([m.handle], self.config.stop_timeout_s)
            self._mark_exited(m, codes.get(m.name))
        if m.desired_status == "running":
            m.restart_count += 1
            m.last_restart_time = utc_now()
            m.backoff_step = 0
            self._start(m)
        self._write_state()

    def module_logs(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """GetModuleLogs: `{"items": [{"id": REGEX, "filter": {"tail", "since", "until", "regex"}}]}`."""
        items = request.get("items") or [{"id": ".*"}]
        if not isinstance(items, list):
            raise ValueError("items must be a list of {\"id\": module-id regex, \"filter\": {...}}")
        out: list[dict[str, Any]] = []
        for item in items:
            pattern = re.compile(str(item.get("id", ".*")))
            filt = item.get("filter") or {}
            for name in sorted(self.modules):
                if pattern.fullmatch(name):
                    out.append({"id": name, "payload": self._read_log(name, filt)})
        return out

    def _read_log(self, name: str, filt: dict[str, Any]) -> str:
        path = self.workdir / "modules" / name / LOG_NAME
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 4 * 1024 * 1024))
                lines = fh.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        since, until = _log_time(filt.get("since")), _log_time(filt.get("until"))
        if since is not None or until is not None:
            kept, stamp = [], None
            for line in lines:
                stamp = _line_time(line) or stamp  # a line without a time belongs to the one before
                if stamp is None or ((since is None or stamp >= since) and (until is None or stamp <= until)):
                    kept.append(line)
            lines = kept
        if filt.get("regex"):
            rx = re.compile(str(filt["regex"]))
            lines = [ln for ln in lines if rx.search(ln)]
        tail = filt.get("tail")
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) > 0 else []
        text = "\n".join(lines)
        while len(text.encode()) > MAX_LOG_BYTES and "\n" in text:
            text = text[text.index("\n", len(text) // 4) + 1:]
        return text

    # ------------------------------------------------------------------ report
    def reported(self) -> dict[str, Any]:
        """The `$edgeAgent` reported properties, in Azure edgeAgent's schema."""
        system = self.desired.get("systemModules") or {}
        agent_image = ((system.get("edgeAgent") or {}).get("settings") or {}).get("image", "")
        hub_image = ((system.get("edgeHub") or {}).get("settings") or {}).get("image", "")
        return {
            "schemaVersion": "1.1",
            "version": {"version": AGENT_VERSION, "build": "edgeloop-simulated-agent", "commit": ""},
            "lastDesiredStatus": {"code": self.status_code, "description": self.status_description},
            "lastDesiredVersion": self.desired_version,
            "runtime": {"type": "docker", "moduleRuntime": self.runtime.name,
                        "platform": {"os": platform.system().lower(), "architecture": platform.machine(),
                                     "version": AGENT_VERSION}},
            "systemModules": {
                "edgeAgent": {"runtimeStatus": "running", "exitCode": 0, "statusDescription": "running",
                              "lastStartTimeUtc": self.started_at, "lastExitTimeUtc": NEVER, "restartCount": 0,
                              "lastRestartTimeUtc": NEVER, "type": "docker", "settings": {"image": agent_image}},
                "edgeHub": {"runtimeStatus": "stopped", "exitCode": 0, "restartCount": 0,
                            "statusDescription": "not run by the simulated agent: its modules connect to the hub "
                                                 "directly (the IoT Edge simulator's EdgeHubConnectionString)",
                            "lastStartTimeUtc": NEVER, "lastExitTimeUtc": NEVER, "lastRestartTimeUtc": NEVER,
                            "type": "docker", "settings": {"image": hub_image}},
            },
            "modules": {m.name: m.report() for m in self.modules.values()},
        }

    def _submit_report(self, final: bool = False) -> None:
        """Hand the current state to the link when it changed (the link sends only the difference)."""
        if self.link is None or (self.status_code is None and not final):
            return
        state = self.reported()
        body = json.dumps(state, sort_keys=True, default=str)
        if body != self._last_submitted:
            self._last_submitted = body
            self.link.report(state)


def _sdk_errors() -> tuple[type[BaseException], ...]:
    from azure.iot.device.exceptions import ClientError, OperationCancelled, OperationTimeout

    return (ClientError, OperationCancelled, OperationTimeout)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def _log_time(value: Any) -> float | None:
    """A GetModuleLogs `since`/`until`: a duration back from now (`10m`), epoch seconds or ISO 8601."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    m = _DURATION.match(text)
    if m:
        return time.time() - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if text.isdigit():
        return float(text)
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"since/until {text!r}: use a duration (30s, 10m, 2h, 1d), epoch seconds or ISO 8601") from None


def _line_time(line: str) -> float | None:
    """The time at the start of a module log line (`2026-01-01 12:00:00,123 ...`), or None."""
    if len(line) < 19 or not line[:4].isdigit():
        return None
    try:
        return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.device.agent",
        description="Edge agent: runs the modules of this device's IoT Edge deployment and reports their state.",
    )
    p.add_argument("--connection-string", default=None,
                   help=f"device connection string (default: ${CONNECTION_STRING_ENV}; the environment "
                        "keeps it out of the process list)")
    p.add_argument("--workdir", required=True, help="the device's folder (state, scene, module folders)")
    p.add_argument("--runtime", choices=("process", "container", "docker"),
                   default=os.environ.get("EDGELOOP_RUNTIME", "process"),
                   help="module runtime: process (start.sh as a process) or container (the module images, "
                        "through a Docker-API engine; docker is the same)")
    p.add_argument("--backoff-max", type=float, default=30.0, help="cap of the module restart backoff (s)")
    p.add_argument("--stable-after", type=float, default=60.0, help="seconds of running that reset the backoff")
    p.add_argument("--hub-backoff-max", type=float, default=10.0, help="cap of the hub connect retry delay (s)")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="SIGTERM grace per module before SIGKILL (s)")
    p.add_argument("--hub-workspace", default=None,
                   help="the local stand-in's workspace (its CA and REST address); omit for Azure IoT Hub")
    p.add_argument("--hub-timeout", type=float, default=10.0, help="seconds per registry request")
    p.add_argument("--health-grace", type=float, default=30.0,
                   help="seconds after a runner starts before its /api/health is probed")
    p.add_argument("--health-interval", type=float, default=10.0, help="seconds between health probes")
    p.add_argument("--log-level", default=os.environ.get("EDGELOOP_LOG_LEVEL", "INFO"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m helpers.device.agent`; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    raw = args.connection_string or os.environ.get(CONNECTION_STRING_ENV, "")
    if not raw:
        log.error("no connection string: set %s (or pass --connection-string); get it from "
                  "hub.connection_string(device_id)", CONNECTION_STRING_ENV)
        return 2
    cs = Secret(raw, CONNECTION_STRING_ENV)
    try:
        parts = parse_connection_string(cs)
        device_id = parts.get("DeviceId")
        if not device_id or not parts.get("SharedAccessKey") or parts.get("ModuleId"):
            raise ConfigError("the connection string needs DeviceId=... and SharedAccessKey=... of the device (not a "
                              "module's, not the service's): hub.connection_string(device_id)")
        from helpers.device.hub_link import EDGE_AGENT, AgentLink, HubEndpoint, ModuleRegistry

        endpoint = HubEndpoint.for_connection_string(cs, workspace=args.hub_workspace)
        registry = ModuleRegistry(cs, endpoint, timeout=args.hub_timeout)
        config = AgentConfig(
            workdir=Path(args.workdir), runtime=args.runtime, backoff_max_s=args.backoff_max,
            stable_after_s=args.stable_after, hub_backoff_max_s=args.hub_backoff_max, stop_timeout_s=args.stop_timeout,
            health_grace_s=args.health_grace, health_interval_s=args.health_interval,
        )
        agent = EdgeAgent(lambda: AgentLink(registry.connection_string(EDGE_AGENT), endpoint),
                          registry.connection_string, endpoint.ca_bundle_path(), device_id, config)
    except RuntimeUnavailable as exc:
        log.error("%s", exc)
        return 3
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())
