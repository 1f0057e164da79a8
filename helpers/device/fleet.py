"""Simulated edge devices: one edge agent process per device, on this machine.

    devices = start_devices(hub, ["cam-01", "cam-02"], workspace, tags={"site": "lab"})
    wait_online(hub, ["cam-01", "cam-02"], timeout=60)
    set_scene(workspace, "cam-01", ["apple", "banana"])
    list_devices(workspace)        # [SimDevice(device_id, pid, alive, workdir), ...]
    stop_devices(workspace)        # SIGTERM each agent: it stops its modules and exits

Each device gets `WORKSPACE/devices/<id>/` as its agent workdir, with `agent.pid` (pid and
process start time, so another process, a later notebook kernel or `stop_devices` can find
and stop it, and a reused pid is never mistaken for it), `agent.log` (masked), `scene.json`
and the module folders. Agents run detached (`start_new_session`) so a notebook kernel can
exit without taking the fleet down; calls are idempotent (a running agent is kept).
The device connection string reaches the agent through its environment, never its command
line (which `ps` shows to every user). A device of the workspace's local stand-in is handed the
stand-in's CA file and REST URL (`--ca-file`, `--rest-url`, from `helpers.endpoints.local_hub`);
a device of Azure IoT Hub gets neither and trusts the system's CAs.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import Secret, load_settings, parse_connection_string
from helpers.device.runtime import ProcessRuntime, pid_alive, process_start_ticks, read_json
from helpers.endpoints import local_hub
from helpers.errors import ConfigError, EdgeLoopError
from helpers.protocol import module_env as env_names

log = logging.getLogger(__name__)

PID_FILE = "agent.pid"
LOG_FILE = "agent.log"
AGENT_STATE = "agent.json"


class FleetError(EdgeLoopError):
    """A simulated device did not start or come online; the message points at its log."""


@dataclass
class SimDevice:
    """One simulated device: its agent process and folder."""

    device_id: str
    workdir: Path
    pid: int | None
    start_ticks: int | None = None
    runtime: str = "process"

    @property
    def alive(self) -> bool:
        """Whether the agent process runs (and is the one that was started)."""
        return pid_alive(self.pid, self.start_ticks)

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG_FILE

    @property
    def scene_file(self) -> Path:
        return self.workdir / "scene.json"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the agent's log (already masked by the agent)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no agent.log yet)"
        return "\n".join(text.splitlines()[-lines:])

    def module_dir(self, module: str) -> Path:
        """The module's MODULE_WORKDIR (module.log, reported.json, spool)."""
        return self.workdir / "modules" / module

    def __repr__(self) -> str:
        return f"SimDevice({self.device_id!r}, pid={self.pid}, alive={self.alive}, workdir={str(self.workdir)!r})"


def devices_dir(workspace: str | Path) -> Path:
    """`WORKSPACE/devices`."""
    return Path(workspace).expanduser().resolve() / "devices"


def _read_device(workdir: Path) -> SimDevice:
    info = read_json(workdir / PID_FILE) or {}
    return SimDevice(workdir.name, workdir, info.get("pid"), info.get("start_ticks"), info.get("runtime", "process"))


def hub_args(device_cs: Secret | str, workspace: Path) -> list[str]:
    """The agent's `--ca-file` and `--rest-url` for a device of the workspace's local stand-in; [] for Azure IoT Hub.

    A device belongs to the stand-in when its connection string's HostName is the stand-in's
    address (its MQTT endpoint); the stand-in's REST API is on another port of that address.
    """
    try:
        hub = local_hub(workspace)
    except ConfigError:
        return []  # the local cloud never ran in this workspace: the hub is Azure's
    host = parse_connection_string(device_cs).get("HostName", "")
    if not hub.address or host.lower() != hub.address.lower():
        return []
    return ["--ca-file", str(hub.ca_file), "--rest-url", hub.rest_url]


def _check_id(device_id: str) -> str:
    if not device_id or "/" in device_id or device_id.startswith(".") or device_id != device_id.strip():
        raise ValueError(f"device id {device_id!r} is not usable as a folder name: use letters, digits, '-', '_', '.'")
    return device_id


def start_devices(hub: Any, device_ids: Sequence[str], workspace: str | Path, tags: dict[str, Any] | None = None,
                  runtime: str | None = None, agent_args: Sequence[str] = ()) -> list[SimDevice]:
    """Register (when needed) and start one edge agent per device; idempotent.

    Args:
        hub: a `Hub` (`create_edge_device`, `connection_string`).
        device_ids: the devices to run.
        workspace: the workspace; each device lives in `WORKSPACE/devices/<id>/`.
        tags: twin tags for devices created here (existing devices keep theirs).
        runtime: the agents' module runtime, `process` or `container` (default: the `runtime`
            setting, `EDGELOOP_RUNTIME`). Simulated containers share the host's network
            (`EDGELOOP_CONTAINER_NETWORK=host` unless set) so they reach the loopback stand-ins.
        agent_args: extra agent command-line options (e.g. `["--stop-timeout", "5"]`).

    Returns:
        The devices, in the order given (already running agents are kept, not restarted).

    Raises:
        FleetError: an agent exited right after its start (its log tail is in the message).
    """
    if runtime is None:
        runtime = load_settings(workspace).runtime
    if runtime not in ("process", "container", "docker"):
        raise ValueError(f"runtime {runtime!r} is not 'process' or 'container'")
    if runtime == "process":
        ProcessRuntime()  # fails early, naming the fix, when start.sh cannot be found
    ws = Path(workspace).expanduser().resolve()
    out: list[SimDevice] = []
    started: list[tuple[SimDevice, subprocess.Popen]] = []
    for device_id in device_ids:
        _check_id(device_id)
        workdir = devices_dir(ws) / device_id
        workdir.mkdir(parents=True, exist_ok=True)
        existing = _read_device(workdir)
        hub.create_edge_device(device_id, tags=tags, exist_ok=True)
        if existing.alive:
            log.info("device %s: agent already running (pid %s)", device_id, existing.pid)
            out.append(existing)
            continue
        cs = hub.connection_string(device_id)
        env = dict(os.environ)
        raw_cs = cs.get_secret_value() if hasattr(cs, "get_secret_value") else str(cs)
        env[env_names.IOTEDGE_CONNECTION_STRING] = raw_cs
        env.pop(env_names.EI_API_KEY, None)  # modules get their key from the deployment, not the host
        env.setdefault("EDGELOOP_CONTAINER_NETWORK", "host")  # one machine: the stand-ins are on loopback
        cmd = [sys.executable, "-m", "helpers.device.agent", "--workdir", str(workdir), "--runtime", runtime,
               *hub_args(raw_cs, ws), *agent_args]
        with open(workdir / LOG_FILE, "ab") as logf:
            proc = subprocess.Popen(cmd, cwd=str(workdir), env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        device = SimDevice(device_id, workdir, proc.pid, process_start_ticks(proc.pid), runtime)
        tmp = workdir / f".{PID_FILE}.tmp"
        tmp.write_text(json.dumps({"pid": proc.pid, "start_ticks": device.start_ticks, "runtime": runtime,
                                   "started_at": time.time()}))
        os.replace(tmp, workdir / PID_FILE)
        log.info("device %s: agent started (pid %d)", device_id, proc.pid)
        out.append(device)
        started.append((device, proc))
    # Wait until each new agent is up (it writes agent.json with its pid) or has died: one that
    # dies at once (bad connection string, no engine for --runtime docker) says why in its log.
    deadline = time.monotonic() + 15.0
    while started and time.monotonic() < deadline:
        for device, proc in list(started):
            if proc.poll() is not None:
                raise FleetError(f"the agent of {device.device_id} exited with code {proc.returncode} right after "
                                 f"starting; {device.log_path}:\n{device.log_tail(15)}")
            if (read_json(device.workdir / AGENT_STATE) or {}).get("pid") == proc.pid:
                started.remove((device, proc))
        time.sleep(0.05)
    return out


def list_devices(workspace: str | Path) -> list[SimDevice]:
    """Every simulated device of the workspace, running or stopped, with its agent pid and whether it runs.

    A device is a folder an agent has run in (it has `agent.pid` while started, `agent.json`
    once its agent came up); a stopped device has no pid and `alive` False.
    """
    root = devices_dir(workspace)
    if not root.is_dir():
        return []
    return [_read_device(d) for d in sorted(root.iterdir())
            if d.is_dir() and ((d / PID_FILE).exists() or (d / AGENT_STATE).exists())]


def _kill_modules(workdir: Path) -> int:
    """Kill module process groups a dead agent left behind (from its agent.json)."""
    state = read_json(workdir / AGENT_STATE) or {}
    killed = 0
    for record in (state.get("modules") or {}).values():
        if record and ProcessRuntime.kill_stale(record):
            killed += 1
    # and any the agent started but was killed before recording
    return killed + len(ProcessRuntime.kill_orphans(workdir / "modules"))


def stop_devices(workspace: str | Path, device_ids: Iterable[str] | None = None, timeout: float = 20.0) -> list[str]:
    """Stop simulated devices: SIGTERM to each agent (it stops its modules), SIGKILL after `timeout`.

    Args:
        workspace: the workspace.
        device_ids: which devices (default: all of the workspace).
        timeout: seconds to wait for the agents, in all.

    Returns:
        The ids of the devices whose agent was running and was stopped.
    """
    wanted = None if device_ids is None else set(device_ids)
    devices = [d for d in list_devices(workspace) if wanted is None or d.device_id in wanted]
    running = [d for d in devices if d.alive]
    for d in running:
        try:
            os.kill(int(d.pid), signal.SIGTERM)  # type: ignore[arg-type]
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout
    for d in running:
        while d.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        if d.alive:
            log.warning("agent of %s did not stop within %.0f s: killing it and its modules", d.device_id, timeout)
            try:
                os.killpg(int(d.pid), signal.SIGKILL)  # type: ignore[arg-type]
            except ProcessLookupError:
                pass
            kill_deadline = time.monotonic() + 5
            while d.alive and time.monotonic() < kill_deadline:
                time.sleep(0.05)
    for d in devices:
        if _kill_modules(d.workdir):
            log.warning("stopped modules of %s that outlived their agent", d.device_id)
        (d.workdir / PID_FILE).unlink(missing_ok=True)
    return [d.device_id for d in running]


def set_scene(workspace: str | Path, device_id: str, objects: Sequence[str], distractors: Sequence[str] = (),
              mix: Sequence[dict] | None = None) -> Path:
    """Put things in front of a device's synthetic camera (its running modules follow at once).

    `mix` lists further arrangements the camera goes through, one each time the fruit is
    reshuffled (see `helpers.sim.scenes.story_scenes` for the story's mixes).

    Returns:
        The scene file written.
    """
    from helpers.sim.camera import write_scene  # here: cv2 and the renderer stay off the fleet's import path

    return write_scene(devices_dir(workspace) / _check_id(device_id) / "scene.json", objects, distractors, mix=mix)


def wait_online(hub: Any, device_ids: Sequence[str], timeout: float = 60.0, interval: float = 0.5) -> dict[str, Any]:
    """Wait until every device reports a fresh heartbeat (`device_status(...).connected`).

    Returns:
        Device id -> its `DeviceStatus`.

    Raises:
        FleetError: some devices were not online within `timeout`; names them and their logs.
    """
    deadline = time.monotonic() + timeout
    pending = list(device_ids)
    statuses: dict[str, Any] = {}
    while True:
        for device_id in list(pending):
            status = hub.device_status(device_id)
            if status.connected:
                statuses[device_id] = status
                pending.remove(device_id)
        if not pending:
            return statuses
        if time.monotonic() >= deadline:
            raise FleetError(
                f"device(s) {pending} not online after {timeout:.0f} s: check that their agents run "
                "(list_devices(workspace)) and read WORKSPACE/devices/<id>/agent.log"
            )
        time.sleep(interval)


__all__ = ["FleetError", "SimDevice", "hub_args", "list_devices", "set_scene", "start_devices", "stop_devices", "wait_online"]
