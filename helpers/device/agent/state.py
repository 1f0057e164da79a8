"""What the edge agent knows: its settings, each desired module's state, and when a module is another one."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import Secret
from helpers.device.runtime import ModuleHandle
from helpers.protocol.manifest import parse_create_options

STATE_FILE = "agent.json"
SCENE_FILE = "scene.json"

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

    def backoff_s(self, step: int) -> float:
        """The delay before restart number `step` (1, 2, ...) of a module: doubling, capped."""
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (step - 1))


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


def module_fingerprint(spec: dict[str, Any], env: dict[str, str]) -> str:
    """A hash of what makes a module a different module (image, createOptions, env, version).

    A change of any of these replaces the running module; a change of `status` or
    `restartPolicy` alone does not.
    """
    settings = spec.get("settings") or {}
    doc = {
        "image": settings.get("image"),
        "createOptions": parse_create_options(settings),
        "env": env,
        "version": spec.get("version"),
        "type": spec.get("type"),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["FAILED", "INVALID", "NO_CONFIG", "OK", "SCENE_FILE", "STATE_FILE", "AgentConfig", "ModuleState",
           "module_fingerprint"]
