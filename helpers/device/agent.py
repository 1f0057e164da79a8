"""The edge agent: what Azure IoT Edge's edgeAgent does, for one (simulated or real) device.

Run it as::

    IOTEDGE_CONNECTION_STRING='HostName=...;DeviceId=cam-01;SharedAccessKey=...' \\
        python -m helpers.device.agent --workdir workspace/devices/cam-01 [--runtime process|docker]

(`--connection-string` works too, but the environment keeps the key out of `ps`.)

One loop, one thread:
  1. every `poll_interval_s` it reads the device's effective deployment from the hub
     (SAS-signed with the device key) and, when it changed, validates it (400 when invalid,
     keeping what runs) and reconciles: modules that are new start, modules whose image,
     createOptions, env or version changed are replaced, modules no longer listed stop, and
     `status: stopped` stops a module;
  2. it supervises what runs: a module that exits is restarted per its `restartPolicy`
     (`always`; `on-failure` and `on-unhealthy` on a non-zero exit; `never`) after an
     exponential backoff (1 s doubling to `backoff_max_s`, reset once the module has run
     `stable_after_s`); a runner that keeps answering 503 on `/api/health` counts as unhealthy;
  3. it reports, as edgeAgent does, `lastDesiredStatus` (200 applied, 400 invalid manifest,
     417 no deployment for this device, 500 a module could not be started), `lastDesiredVersion`,
     a heartbeat and each module's `runtimeStatus`, `exitCode`, `restartCount`, `startTime`,
     `lastExitTime`, `image`, `version`, `hostPort` and `telemetry` (the module's own
     `reported.json`, relayed as edgeHub relays module twins).

When the hub cannot be reached, modules keep running and the agent retries with backoff;
when it answers again the agent reports and converges. SIGTERM or SIGINT stops every module
(SIGTERM to each process group, then SIGKILL after `stop_timeout_s`) and the agent exits 0.

Files in the workdir: `agent.json` (this agent's pid and its modules' pids, so a later agent
or `helpers.device.fleet` can clean up after a crash), `scene.json` (the synthetic camera's
scene), `modules/<name>/` (each module's `MODULE_WORKDIR`: `module.log`, `reported.json`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import Secret, mask, parse_connection_string
from helpers.device.runtime import (
    ModuleHandle,
    ModuleLaunch,
    RuntimeUnavailable,
    make_runtime,
    process_start_ticks,
    registry_auth_for,
    read_json,
    stop_handles,
    utc_now,
)
from helpers.errors import ConfigError, EdgeLoopError, InvalidManifest, ServiceError

log = logging.getLogger("helpers.device.agent")

CONNECTION_STRING_ENV = "IOTEDGE_CONNECTION_STRING"
STATE_FILE = "agent.json"
SCENE_FILE = "scene.json"
TELEMETRY_FILE = "reported.json"
TELEMETRY_MAX_BYTES = 16 * 1024

# lastDesiredStatus codes, as Azure IoT Edge's edgeAgent uses them
OK, INVALID, NO_CONFIG, FAILED = 200, 400, 417, 500


@dataclass
class AgentConfig:
    """Timing and placement of one agent; the defaults suit a simulated fleet.

    Attributes:
        workdir: the device's folder (state, scene, module folders).
        runtime: `process` or `docker`.
        poll_interval_s: how often the deployment is read.
        heartbeat_s: the longest time between two reports (the hub calls a device
            connected while its heartbeat is under 20 s old).
        tick_s: supervision period.
        backoff_base_s / backoff_max_s: module restart backoff (doubling, capped).
        stable_after_s: a module that ran this long has its backoff reset.
        hub_backoff_max_s: cap of the retry delay while the hub is unreachable.
        stop_timeout_s: SIGTERM grace for a module before SIGKILL.
        health_grace_s / health_interval_s / health_failures: the runner health probe
            (`on-unhealthy`, `always`): after the grace, this many failed probes in a row
            restart the module.
    """

    workdir: Path
    runtime: str = "process"
    poll_interval_s: float = 1.5
    heartbeat_s: float = 5.0
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
    started_mono: float = 0.0
    host_port: int | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    telemetry_mtime: float = 0.0
    error: str | None = None
    held: bool = False  # stopped because the deployment says `status: stopped`
    health: str | None = None
    health_fail: int = 0
    next_probe: float = 0.0

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

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "runtimeStatus": self.runtime_status,
            "exitCode": self.exit_code,
            "restartCount": self.restart_count,
            "startTime": self.start_time,
            "lastExitTime": self.last_exit_time,
            "image": self.image,
            "version": self.version,
            "hostPort": self.host_port,
            "telemetry": self.telemetry,
            "restartPolicy": self.restart_policy,
            "desiredStatus": self.desired_status,
        }
        if self.error:
            out["error"] = self.error
        if self.health:
            out["health"] = self.health
        return out


def module_fingerprint(spec: dict[str, Any], env: dict[str, str]) -> str:
    """A hash of what makes a module a different module (image, createOptions, env, version).

    A change of any of these replaces the running module; a change of `status` or
    `restartPolicy` alone does not.
    """
    from helpers.hub.manifest import parse_create_options

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


class EdgeAgent:
    """Reconciles the modules of one device with its deployment and reports their state.

    Args:
        client: a `DeviceClient` (`get_deployment()`, `report(patch)`).
        device_id: the device's id (for module environments and logs).
        config: timing and placement.
        runtime: a module runtime (default: `make_runtime(config.runtime)`).
    """

    def __init__(self, client: Any, device_id: str, config: AgentConfig, runtime: Any = None):
        self.client = client
        self.device_id = device_id
        self.config = config
        self.workdir = Path(config.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "modules").mkdir(exist_ok=True)
        self.runtime = runtime or make_runtime(config.runtime)
        self.modules: dict[str, ModuleState] = {}
        self.removed: set[str] = set()  # reported as null once, so the twin forgets them
        self.status_code: int | None = None
        self.status_description = ""
        self.desired_version: str | None = None
        self.deployment_source: str | None = None
        self._applied_key: str | None = None
        self._stopping = False
        self._next_poll = 0.0
        self._hub_failures = 0
        self._hub_down_since: float | None = None
        self._last_report: str | None = None
        self._last_report_mono = 0.0
        self._next_report = 0.0

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
                self.step()
                time.sleep(self.config.tick_s)
        finally:
            self.shutdown()
        return 0

    def step(self) -> None:
        """One iteration: poll the hub when due, supervise modules, report when due."""
        now = time.monotonic()
        if now >= self._next_poll:
            self._poll_deployment()
        self._supervise()
        self._maybe_report()

    def shutdown(self) -> None:
        """Stop every module (SIGTERM, then SIGKILL after the timeout) and report it."""
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
        try:
            self._report()
        except (ServiceError, OSError) as exc:
            log.info("final report not delivered (%s); the hub will see the heartbeat age", mask(str(exc)))
        log.info("edge agent for %s stopped", self.device_id)

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

    # ------------------------------------------------------------------ hub
    def _hub_failed(self, what: str, exc: Exception) -> None:
        self._hub_failures += 1
        delay = min(self.config.hub_backoff_max_s, self.config.poll_interval_s * 2 ** (self._hub_failures - 1))
        if self._hub_down_since is None:
            self._hub_down_since = time.monotonic()
            log.warning("hub unreachable while %s (%s): modules keep running; retrying with backoff",
                        what, mask(str(exc)))
        else:
            log.debug("hub still unreachable (%s), next try in %.1f s", mask(str(exc)), delay)
        self._next_poll = time.monotonic() + delay
        self._next_report = self._next_poll

    def _hub_ok(self) -> None:
        if self._hub_down_since is not None:
            log.info("hub reachable again after %.0f s", time.monotonic() - self._hub_down_since)
            self._last_report = None  # report everything now
            self._next_report = 0.0
        self._hub_down_since = None
        self._hub_failures = 0

    def _poll_deployment(self) -> None:
        try:
            deployment = self.client.get_deployment()
        except ServiceError as exc:
            if exc.status in (401, 403, 404):
                log.error("the hub refused this device (%s): check that %s exists and the connection "
                          "string is current; retrying", mask(str(exc)), self.device_id)
            self._hub_failed("reading the deployment", exc)
            return
        except OSError as exc:
            self._hub_failed("reading the deployment", exc)
            return
        self._hub_ok()
        self._next_poll = time.monotonic() + self.config.poll_interval_s
        self.apply(deployment)

    def apply(self, deployment: dict[str, Any] | None) -> None:
        """Validate and reconcile a deployment (`{"modulesContent", "source", "version"}` or None)."""
        if deployment is None:
            if self._applied_key is None and self.status_code != NO_CONFIG:
                self._set_status(NO_CONFIG, "no deployment targets this device: set modules on it or create a "
                                            "deployment whose target condition matches its tags")
            elif self._applied_key is not None and self.deployment_source is not None:
                log.info("no deployment targets this device any more; keeping the last one (%s), as IoT Edge "
                         "does: deploy an empty manifest to remove modules", self.desired_version)
                self.deployment_source = None
            return
        content = deployment.get("modulesContent") or {}
        version = str(deployment.get("version", ""))
        key = version + ":" + hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
        if key == self._applied_key:
            return
        self._applied_key = key
        self.desired_version = version
        self.deployment_source = deployment.get("source")
        log.info("deployment %s (%s) received", version, self.deployment_source)
        try:
            modules = self._desired_modules(content)
        except InvalidManifest as exc:
            self._set_status(INVALID, str(exc))
            log.error("deployment %s is invalid; keeping the running modules:\n%s", version, exc)
            return
        self._reconcile(modules)

    def _desired_modules(self, content: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
        """Validated module name -> (spec, env); raises InvalidManifest."""
        from helpers.hub.manifest import module_env, validate_manifest

        for warning in validate_manifest(content):
            log.warning("deployment warning: %s", warning)
        desired = content["$edgeAgent"]["properties.desired"]
        modules = desired.get("modules") or {}
        # the container runtime pulls with these (name -> address, username, password)
        self.registry_credentials = ((desired.get("runtime") or {}).get("settings") or {}).get("registryCredentials")
        out = {}
        for name, spec in modules.items():
            out[name] = (spec, module_env(spec))
        return out

    def _set_status(self, code: int, description: str) -> None:
        if (code, description) != (self.status_code, self.status_description):
            self.status_code, self.status_description = code, description
            self._next_report = 0.0

    # ------------------------------------------------------------------ reconcile
    def _reconcile(self, desired: dict[str, tuple[dict[str, Any], dict[str, str]]]) -> None:
        to_stop: list[ModuleState] = []
        for name in list(self.modules):
            if name not in desired:
                m = self.modules.pop(name)
                log.info("module %s removed from the deployment: stopping it", name)
                if m.handle is not None:
                    to_stop.append(m)
                self.removed.add(name)
        for name, (spec, env) in desired.items():
            fp = module_fingerprint(spec, env)
            current = self.modules.get(name)
            self.removed.discard(name)
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

    def _launch(self, m: ModuleState) -> ModuleLaunch:
        from helpers.hub.manifest import module_host_port, parse_create_options

        workdir = self.workdir / "modules" / m.name
        return ModuleLaunch(
            name=m.name,
            image=m.image,
            env=m.env,
            workdir=workdir,
            device_id=self.device_id,
            scene_file=self.workdir / SCENE_FILE,
            create_options=parse_create_options(m.spec.get("settings") or {}),
            # A container gets the port its manifest binds. Simulated devices share one host, so
            # the process runtime keeps a module's own port across restarts but never asks for
            # the manifest's (two devices would race for 4912); it reports the port it got.
            host_port=m.host_port or (module_host_port(m.spec) if self.runtime.name != "process" else None),
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
            self._read_telemetry(m)
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
                if self._start(m) and had_error and self._applied_key is not None:
                    self._update_status()
                changed = True
        if changed:
            self._write_state()
            self._next_report = 0.0

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

    def _read_telemetry(self, m: ModuleState) -> None:
        path = self.workdir / "modules" / m.name / TELEMETRY_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        if st.st_mtime == m.telemetry_mtime:
            return
        m.telemetry_mtime = st.st_mtime
        if st.st_size > TELEMETRY_MAX_BYTES:
            m.telemetry = {"error": f"{TELEMETRY_FILE} is {st.st_size} bytes, over {TELEMETRY_MAX_BYTES}: not relayed"}
            return
        value = read_json(path)
        if value is not None and value != m.telemetry:
            m.telemetry = value
            self._next_report = min(self._next_report, self._last_report_mono + 1.0)

    # ------------------------------------------------------------------ report
    def reported(self) -> dict[str, Any]:
        """The `edgeAgent` reported properties (without the heartbeat)."""
        modules: dict[str, Any] = {name: None for name in self.removed}
        modules.update({m.name: m.report() for m in self.modules.values()})
        return {
            "lastDesiredStatus": {"code": self.status_code, "description": self.status_description},
            "lastDesiredVersion": self.desired_version,
            "deployment": self.deployment_source,
            "runtime": self.runtime.name,
            "modules": modules,
        }

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if self._hub_down_since is not None or now < self._next_report:
            return  # while the hub is away, the next successful poll brings reporting back
        body = json.dumps(self.reported(), sort_keys=True, default=str)
        heartbeat_due = now - self._last_report_mono >= self.config.heartbeat_s
        if body == self._last_report and not heartbeat_due:
            self._next_report = self._last_report_mono + self.config.heartbeat_s
            return
        if now - self._last_report_mono < 1.0 and not heartbeat_due and self._last_report is not None:
            self._next_report = self._last_report_mono + 1.0  # at most one report a second
            return
        try:
            self._report()
        except ServiceError as exc:
            self._hub_failed("reporting", exc)
        except OSError as exc:
            self._hub_failed("reporting", exc)

    def _report(self) -> None:
        state = self.reported()
        body = json.dumps(state, sort_keys=True, default=str)
        state["heartbeat"] = utc_now()
        self.client.report({"edgeAgent": state})
        self._hub_ok()
        self._last_report = body
        self._last_report_mono = time.monotonic()
        self._next_report = self._last_report_mono + self.config.heartbeat_s
        self.removed.clear()


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
    p.add_argument("--poll-interval", type=float, default=1.5, help="seconds between deployment polls")
    p.add_argument("--heartbeat", type=float, default=5.0, help="longest seconds between reports")
    p.add_argument("--backoff-max", type=float, default=30.0, help="cap of the module restart backoff (s)")
    p.add_argument("--stable-after", type=float, default=60.0, help="seconds of running that reset the backoff")
    p.add_argument("--hub-backoff-max", type=float, default=10.0, help="cap of the hub retry delay (s)")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="SIGTERM grace per module before SIGKILL (s)")
    p.add_argument("--hub-workspace", default=None,
                   help="local cloud workspace: re-read its service.json when the hub moved to another port")
    p.add_argument("--hub-timeout", type=float, default=5.0, help="seconds per hub request")
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
        if not device_id or not parts.get("SharedAccessKey"):
            raise ConfigError("the connection string needs DeviceId=... and SharedAccessKey=...: this looks like a "
                              "service connection string; use the device's (hub.connection_string(device_id))")
        from helpers.hub.device_client import DeviceClient

        client = DeviceClient.from_connection_string(cs, timeout=args.hub_timeout, workspace=args.hub_workspace)
        config = AgentConfig(
            workdir=Path(args.workdir), runtime=args.runtime, poll_interval_s=args.poll_interval,
            heartbeat_s=args.heartbeat, backoff_max_s=args.backoff_max, stable_after_s=args.stable_after,
            hub_backoff_max_s=args.hub_backoff_max, stop_timeout_s=args.stop_timeout,
            health_grace_s=args.health_grace, health_interval_s=args.health_interval,
        )
        agent = EdgeAgent(client, device_id, config)
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
