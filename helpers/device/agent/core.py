"""The edge agent's loop: the `$edgeAgent` twin in, the device's modules reconciled with it, reports out."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.config import Secret, mask
from helpers.device.agent.methods import answer_methods, handle_method
from helpers.device.agent.report import agent_report
from helpers.device.agent.state import (
    FAILED,
    INVALID,
    NO_CONFIG,
    OK,
    STATE_FILE,
    AgentConfig,
    ModuleState,
    module_fingerprint,
)
from helpers.device.agent.supervise import Supervisor
from helpers.device.hub_link import sdk_errors
from helpers.device.runtime import make_runtime, process_start_ticks, read_json, utc_now
from helpers.errors import EdgeLoopError, InvalidManifest, ServiceError
from helpers.protocol import module_env as env_names
from helpers.protocol.manifest import module_env, validate_manifest
from helpers.protocol.twinpatch import merge_patch

log = logging.getLogger("helpers.device.agent")


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
        self.supervisor = Supervisor(self.runtime, config, self.workdir, device_id, self._edge_env)
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
            answer_methods(self.link, self.handle_method)
        changed, recovered = self.supervisor.tick(self.modules.values())
        if recovered and self._applied_key is not None:
            self._update_status()
        if changed:
            self._write_state()
        self._submit_report()

    def shutdown(self) -> None:
        """Stop every module (SIGTERM, then SIGKILL after the timeout), report it and disconnect."""
        self.supervisor.stop([m for m in self.modules.values() if m.handle is not None])
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
        except (EdgeLoopError, OSError, ValueError, *sdk_errors()) as exc:
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
            except sdk_errors() as exc:
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
            desired = merge_patch(desired, patch)
            desired["$version"] = patch.get("$version", desired.get("$version"))
            changed = True
        if changed:
            self.apply_desired(desired)

    def _edge_env(self, m: ModuleState) -> dict[str, str]:
        """The IoT Edge simulator environment of a module (its identity's connection string, the CA file)."""
        if m.edge_cs is None:
            m.edge_cs = self.module_identity(m.name)
        return {env_names.EDGEHUB_CONNECTION_STRING: m.edge_cs.get_secret_value(),
                env_names.EDGE_MODULE_CA_CERTIFICATE_FILE: self.ca_file}

    # ------------------------------------------------------------------ deployment
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
        if body.get("modules") or body.get("runtime"):
            for warning in validate_manifest({"$edgeAgent": {"properties.desired": body}, "$edgeHub": edge_hub_stub()}):
                log.warning("deployment warning: %s", warning)
        modules = body.get("modules") or {}
        # the container runtime pulls with these (name -> address, username, password)
        self.supervisor.registry_credentials = ((body.get("runtime") or {}).get("settings") or {}).get("registryCredentials")
        return {name: (spec, module_env(spec)) for name, spec in modules.items()}

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
        self.supervisor.stop(to_stop)
        for m in to_stop:
            m.runtime_status = "stopped"
        now = time.monotonic()
        order = sorted(self.modules.values(), key=lambda m: (int(m.spec.get("startupOrder", 4294967295)), m.name))
        for m in order:
            # new modules and modules started again; ones in restart backoff keep their delay
            if (m.desired_status == "running" and m.handle is None and m.next_start is not None
                    and m.next_start <= now):
                self.supervisor.start(m)
        self._write_state()
        self._update_status()

    def _set_status(self, code: int, description: str) -> None:
        self.status_code, self.status_description = code, description

    def _update_status(self) -> None:
        """200 when every desired module could be started, 500 naming the ones that could not."""
        failures = [f"{m.name}: {m.error}" for m in self.modules.values() if m.error]
        if failures:
            self._set_status(FAILED, "module(s) could not be started: " + "; ".join(failures))
        else:
            self._set_status(OK, "")

    # ------------------------------------------------------------------ direct methods
    def handle_method(self, name: str, payload: Any) -> tuple[int, Any]:
        """edgeAgent's built-in direct methods: `ping`, `RestartModule`, `GetModuleLogs`."""
        return handle_method(name, payload, self.modules, self.restart_module, self.workdir / "modules")

    def restart_module(self, m: ModuleState) -> None:
        """Stop a module and start it again at once (RestartModule)."""
        self.supervisor.restart(m)
        self._write_state()

    # ------------------------------------------------------------------ state and reports
    def _cleanup_previous_run(self) -> None:
        """Kill module processes a crashed previous agent left running in this workdir."""
        previous = read_json(self.workdir / STATE_FILE) or {}
        for name, record in (previous.get("modules") or {}).items():
            kill_stale = getattr(self.runtime, "kill_stale", None)
            if kill_stale and record and kill_stale(record):
                log.warning("stopped module %s left running by a previous agent (pid %s)", name, record.get("pid"))
        # a module the previous agent started but was killed before recording (kill -9 mid-rollout)
        kill_orphans = getattr(self.runtime, "kill_orphans", None)
        if kill_orphans:
            for pid in kill_orphans(self.workdir / "modules"):
                log.warning("stopped a module process (pid %d) a previous agent started but never recorded", pid)

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

    def reported(self) -> dict[str, Any]:
        """The `$edgeAgent` reported properties, in Azure edgeAgent's schema."""
        return agent_report(status_code=self.status_code, status_description=self.status_description,
                            desired_version=self.desired_version, desired=self.desired,
                            module_runtime=self.runtime.name, started_at=self.started_at, modules=self.modules.values())

    def _submit_report(self, final: bool = False) -> None:
        """Hand the current state to the link when it changed (the link sends only the difference)."""
        if self.link is None or (self.status_code is None and not final):
            return
        state = self.reported()
        body = json.dumps(state, sort_keys=True, default=str)
        if body != self._last_submitted:
            self._last_submitted = body
            self.link.report(state)


__all__ = ["EdgeAgent", "edge_hub_stub"]
