"""Supervision of a device's modules: start, stop, restart per `restartPolicy` after a backoff, health probes."""
from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from helpers.config import mask
from helpers.device.agent.state import SCENE_FILE, AgentConfig, ModuleState
from helpers.device.runtime import ModuleLaunch, registry_auth_for, stop_handles, utc_now
from helpers.errors import EdgeLoopError
from helpers.protocol import module_env as env_names
from helpers.protocol.manifest import module_host_port, parse_create_options

log = logging.getLogger("helpers.device.agent")


def should_restart(policy: str, code: int | None, unhealthy: bool) -> bool:
    """Whether a module that exited with `code` (or was stopped unhealthy) restarts under `policy`."""
    if policy == "always":
        return True
    if policy in ("on-failure", "on-unhealthy"):
        return code != 0 or (unhealthy and policy == "on-unhealthy")
    return False


def mark_exited(m: ModuleState, code: int | None) -> None:
    """Record that a module's process or container ended with `code`."""
    m.handle = None
    m.exit_code = code
    m.last_exit_time = utc_now()


class Supervisor:
    """Starts, stops and restarts the modules of one device.

    Args:
        runtime: the module runtime (`start(ModuleLaunch) -> handle`, `name`, `network`).
        config: timing (backoff, stop timeout, health probes).
        workdir: the device's folder (modules run in `modules/<name>/`).
        device_id: the device's id.
        edge_env: a module's IoT Edge environment (its identity's connection string, the CA file).
    """

    def __init__(self, runtime: Any, config: AgentConfig, workdir: Path, device_id: str,
                 edge_env: Callable[[ModuleState], dict[str, str]]):
        self.runtime = runtime
        self.config = config
        self.workdir = workdir
        self.device_id = device_id
        self.edge_env = edge_env
        # the deployment's runtime.settings.registryCredentials: the container runtime pulls with these
        self.registry_credentials: dict[str, Any] | None = None

    def binds_manifest_port(self) -> bool:
        """Whether a module gets the host port its manifest binds: only a container published
        from its own network namespace; the process runtime and containers on the host's network
        (simulated devices sharing one host) take a free port instead and report it."""
        return self.runtime.name != "process" and getattr(self.runtime, "network", "host") != "host"

    def launch(self, m: ModuleState) -> ModuleLaunch:
        """What the runtime needs to start a module."""
        return ModuleLaunch(
            name=m.name,
            image=m.image,
            env={**m.env, **self.edge_env(m)},
            workdir=self.workdir / "modules" / m.name,
            device_id=self.device_id,
            scene_file=self.workdir / SCENE_FILE,
            create_options=parse_create_options(m.spec.get("settings") or {}),
            # A container gets the port its manifest binds. Simulated devices share one host, so
            # the process runtime keeps a module's own port across restarts but never asks for
            # the manifest's (two devices would race for 4912); it reports the port it got. So does
            # the container runtime on the host's network (simulated devices' containers).
            host_port=m.host_port or (module_host_port(m.spec) if self.binds_manifest_port() else None),
            registry_auth=registry_auth_for(self.registry_credentials, m.image),
            generation=m.fingerprint,
        )

    def start(self, m: ModuleState) -> bool:
        """Start a module; on failure schedule a retry after a backoff (none under `restartPolicy: never`)."""
        try:
            handle = self.runtime.start(self.launch(m))
        except (EdgeLoopError, OSError) as exc:
            m.error = mask(str(exc))
            if m.restart_policy == "never":
                m.runtime_status, m.next_start = "failed", None
                log.error("module %s could not be started: %s", m.name, m.error)
            else:
                m.backoff_step += 1
                delay = self.config.backoff_s(m.backoff_step)
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

    def stop(self, modules: list[ModuleState]) -> None:
        """Stop running modules together (SIGTERM, then SIGKILL after the stop timeout)."""
        if not modules:
            return
        codes = stop_handles([m.handle for m in modules], self.config.stop_timeout_s)
        for m in modules:
            mark_exited(m, codes.get(m.name))

    def restart(self, m: ModuleState) -> None:
        """Stop a module and start it again at once (RestartModule)."""
        if m.handle is not None:
            self.stop([m])
        if m.desired_status == "running":
            m.restart_count += 1
            m.last_restart_time = utc_now()
            m.backoff_step = 0
            self.start(m)

    def tick(self, modules: Iterable[ModuleState]) -> tuple[bool, bool]:
        """Notice exits and unhealthy runners, restart what is due.

        Returns:
            (whether a module started or stopped, whether one that could not be started now runs).
        """
        now = time.monotonic()
        changed = recovered = False
        for m in modules:
            if m.handle is not None:
                changed |= self._check(m, now)
            elif (m.desired_status == "running" and m.next_start is not None and m.runtime_status == "backoff"
                  and now >= m.next_start):
                had_error = m.error is not None
                m.restart_count += 1
                m.last_restart_time = utc_now()
                recovered |= self.start(m) and had_error
                changed = True
        return changed, recovered

    def _check(self, m: ModuleState, now: float) -> bool:
        """A running module: whether it exited (or was stopped unhealthy); schedules its restart."""
        code = m.handle.poll()
        unhealthy = False
        if code is None and self._probe_due(m, now):
            unhealthy = self._probe(m, now)
            if unhealthy:
                log.warning("module %s is unhealthy (%d failed health probes): restarting it", m.name, m.health_fail)
                code = stop_handles([m.handle], self.config.stop_timeout_s).get(m.name)
        if code is None:
            if m.backoff_step and now - m.started_mono >= self.config.stable_after_s:
                m.backoff_step = 0  # ran long enough: the next crash starts the backoff anew
            return False
        ran_s = now - m.started_mono
        mark_exited(m, code)
        if m.desired_status == "running" and should_restart(m.restart_policy, code, unhealthy):
            if ran_s >= self.config.stable_after_s:
                m.backoff_step = 0
            m.backoff_step += 1
            delay = self.config.backoff_s(m.backoff_step)
            m.next_start = now + delay
            m.runtime_status = "backoff"
            log.warning("module %s exited with code %s after %.1f s: restarting in %.1f s (%s)",
                        m.name, code, ran_s, delay, m.restart_policy)
        else:
            m.next_start = None
            m.runtime_status = "failed" if code not in (0, None) or unhealthy else "stopped"
            log.warning("module %s exited with code %s; restartPolicy %s: not restarting", m.name, code, m.restart_policy)
        return True

    def _probe_due(self, m: ModuleState, now: float) -> bool:
        return (m.restart_policy in ("always", "on-unhealthy") and m.env.get(env_names.MODE) == env_names.MODE_INFER
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


__all__ = ["Supervisor", "mark_exited", "should_restart"]
