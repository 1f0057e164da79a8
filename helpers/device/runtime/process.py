"""The process runtime: each module runs the repository's `start.sh` in its own process group.

No container engine needed: the same entrypoint the image uses runs here, with the module's
environment. Container port 4912 is stood for by a free host port passed as `PORT`; the
module's stdout/stderr goes to `module.log` in its own folder.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers.config import REPO_ROOT
from helpers.device.runtime.supervision import (
    CONTAINER_PORT,
    LOG_MAX_BYTES,
    LOG_NAME,
    ModuleLaunch,
    RuntimeUnavailable,
    free_port,
    kill_group,
    pid_alive,
    process_start_ticks,
    utc_now,
)

#: Environment variable naming the entrypoint script the process runtime runs.
START_SCRIPT_ENV = "EDGELOOP_START_SH"
#: Host environment variables a module process inherits (everything else comes from its manifest
#: `Env`, as in a container: the agent's own connection string never reaches a module).
#: EDGELOOP_TEST_SESSION is the test suite's process marker (tests/conftest.py): with it a module
#: that outlives its test is found by the suite's leak check, like every other process it starts.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                 "SYSTEMROOT", "OMP_NUM_THREADS", "EDGELOOP_TEST_SESSION")


def find_start_script() -> Path:
    """The device entrypoint `start.sh`: `$EDGELOOP_START_SH`, else the repository root's.

    Raises:
        RuntimeUnavailable: it does not exist.
    """
    explicit = os.environ.get(START_SCRIPT_ENV)
    path = Path(explicit) if explicit else REPO_ROOT / "start.sh"
    if not path.is_file():
        raise RuntimeUnavailable(
            f"the process runtime needs the device entrypoint start.sh, not found at {path}: "
            f"run from a checkout of the repository or set {START_SCRIPT_ENV}=/path/to/start.sh"
        )
    return path


class ProcessHandle:
    """A module running as a local process group (`start.sh` and its children)."""

    def __init__(self, name: str, proc: subprocess.Popen, host_port: int | None, log_path: Path):
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the module leads its own group
        self.start_ticks = process_start_ticks(proc.pid)
        self.host_port = host_port
        self.log_path = log_path
        self.started_at = utc_now()
        self._exit: int | None = None

    def poll(self) -> int | None:
        if self._exit is None:
            code = self.proc.poll()
            if code is not None:
                self._exit = code
                kill_group(self.pgid, signal.SIGKILL)  # children it left behind go with it
        return self._exit

    def terminate(self) -> None:
        if self.poll() is None:
            kill_group(self.pgid, signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None
        return self.poll()

    def kill(self) -> None:
        kill_group(self.pgid, signal.SIGKILL)

    def record(self) -> dict[str, Any]:
        return {"kind": "process", "pid": self.pid, "pgid": self.pgid, "start_ticks": self.start_ticks}

    def __repr__(self) -> str:
        return f"ProcessHandle({self.name!r}, pid={self.pid}, port={self.host_port}, exit={self._exit})"


def published_host_ip(create_options: dict[str, Any] | None) -> str:
    """The host address createOptions publish container port 4912 on: its binding's `HostIp`,
    else 127.0.0.1 (a simulated device's page is for this machine unless the deployment says so)."""
    bindings = ((create_options or {}).get("HostConfig") or {}).get("PortBindings") or {}
    for entry in bindings.get(f"{CONTAINER_PORT}/tcp") or bindings.get(str(CONTAINER_PORT)) or []:
        if isinstance(entry, dict) and entry.get("HostIp"):
            return str(entry["HostIp"])
    return "127.0.0.1"


def module_pids(modules_dir: str | Path) -> list[int]:
    """Live processes that run a module of an agent's `modules_dir`: the ones whose environment's
    `MODULE_WORKDIR` (which `ProcessRuntime` gives every module) lies in it. [] without `/proc`."""
    needle = f"MODULE_WORKDIR={Path(modules_dir).resolve()}/".encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            environ = (d / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or another user's
        if any(item.startswith(needle) for item in environ.split(b"\0")) and pid_alive(int(d.name)):
            found.append(int(d.name))
    return sorted(found)


class ProcessRuntime:
    """Runs each module as `sh start.sh` in its own process group (no container engine).

    Args:
        start_script: the entrypoint (default: `find_start_script()`).
        python: the interpreter `start.sh` runs the module with (default: this one).

    Raises:
        RuntimeUnavailable: start.sh cannot be found.
    """

    name = "process"

    def __init__(self, start_script: str | Path | None = None, python: str | None = None):
        self.start_script = Path(start_script) if start_script else find_start_script()
        self.python = python or sys.executable

    def describe(self) -> str:
        return f"process runtime ({self.start_script})"

    def environment(self, launch: ModuleLaunch, port: int) -> dict[str, str]:
        """The module's environment: a few host basics, the manifest's Env, the agent's vars."""
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env["PYTHON"] = self.python
        env["PYTHONUNBUFFERED"] = "1"
        env.update(launch.env)
        env.update({
            "MODULE_WORKDIR": str(launch.workdir),
            "EDGELOOP_SCENE_FILE": str(launch.scene_file),
            "PORT": str(port),
            "IOTEDGE_DEVICEID": launch.device_id,
            "IOTEDGE_MODULEID": launch.name,
            "IOTEDGE_MODULEGENERATIONID": launch.generation,
        })
        # the address the deployment publishes port 4912 on (loopback unless a binding names its
        # HostIp); the manifest's own BIND_HOST wins, as in the container runtime's host network
        env.setdefault("BIND_HOST", published_host_ip(launch.create_options))
        return env

    def start(self, launch: ModuleLaunch) -> ProcessHandle:
        """Start the module; its output goes to `<workdir>/module.log`."""
        launch.workdir.mkdir(parents=True, exist_ok=True)
        ip = published_host_ip(launch.create_options)
        port = free_port(launch.host_port, host=ip if ip != "0.0.0.0" else "127.0.0.1")
        log_path = launch.workdir / LOG_NAME
        if log_path.exists() and log_path.stat().st_size > LOG_MAX_BYTES:
            os.replace(log_path, log_path.with_suffix(".log.1"))
        with open(log_path, "ab") as out:
            out.write(f"---- {utc_now()} start {launch.name} image={launch.image} port={port}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                ["sh", str(self.start_script)],
                cwd=str(launch.workdir),
                env=self.environment(launch, port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return ProcessHandle(launch.name, proc, port, log_path)

    @staticmethod
    def kill_orphans(modules_dir: str | Path) -> list[int]:
        """Kill module processes of `modules_dir` that no record names (see `module_pids`).

        An agent killed between starting a module and recording its pid in `agent.json` leaves
        that module running unrecorded; the next agent would start a second copy beside it.

        Returns:
            The pids killed.
        """
        groups: dict[int, int] = {}
        for pid in module_pids(modules_dir):
            try:
                groups[pid] = os.getpgid(pid)  # each module leads its own group (start_new_session)
            except ProcessLookupError:
                continue
        for pgid in set(groups.values()):
            kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pgid in set(groups.values()):
            kill_group(pgid, signal.SIGKILL)
        return sorted(groups)

    @staticmethod
    def kill_stale(record: dict[str, Any]) -> bool:
        """Kill a module group left running by a previous agent, if it is still that process.

        Returns:
            True when something was killed.
        """
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if record.get("kind") != "process" or not pid_alive(pid, ticks):
            return False
        pgid = int(record.get("pgid") or pid)
        kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while pid_alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_group(pgid, signal.SIGKILL)
        return True


__all__ = ["INHERITED_ENV", "START_SCRIPT_ENV", "ProcessHandle", "ProcessRuntime", "find_start_script",
           "module_pids", "published_host_ip"]
