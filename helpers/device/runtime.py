"""Module runtimes for the edge agent: local processes, or Docker containers where an engine runs.

A runtime starts one module from a `ModuleLaunch` and gives back a `ModuleHandle` the agent
polls and stops. Two runtimes share that shape:

- `ProcessRuntime` (the default, no container engine needed): runs the repository's
  `start.sh` as a process in its own process group, with the module's environment, so the
  same entrypoint the image uses runs here. Container port 4912 is stood for by a free host
  port passed as `PORT`. Each module's stdout/stderr goes to `module.log` in its own folder.
- `DockerRuntime`: pulls and runs the module's image with the docker SDK, applying the
  manifest's createOptions (port bindings, device mappings, binds), as Azure IoT Edge does.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from helpers.config import REPO_ROOT, mask
from helpers.errors import ConfigError

log = logging.getLogger(__name__)

#: The container port the runner serves on; the process runtime stands for it with a host port.
CONTAINER_PORT = 4912
#: Environment variable naming the entrypoint script the process runtime runs.
START_SCRIPT_ENV = "EDGELOOP_START_SH"
#: Host environment variables a module process inherits (everything else comes from its manifest
#: `Env`, as in a container: the agent's own connection string never reaches a module).
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
                 "SYSTEMROOT", "OMP_NUM_THREADS")
LOG_NAME = "module.log"
LOG_MAX_BYTES = 2 * 1024 * 1024


class RuntimeUnavailable(ConfigError):
    """The chosen module runtime cannot run here; the message says what to install or choose."""


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a `Z` suffix."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `port` can be bound on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, else a port the OS hands out."""
    if preferred and port_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None.

    Together with the pid it identifies a process across pid reuse: a pid file that records
    both can tell "still my process" from "a new process that got the same number".
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    rest = stat.rsplit(")", 1)[-1].split()
    try:
        return int(rest[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """Whether `pid` runs (and, when given, is the process that started at `start_ticks`)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            if stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                return False  # a zombie has exited; only its parent has not reaped it yet
        except (OSError, IndexError):
            return False
    if start_ticks is not None:
        ticks = process_start_ticks(int(pid))
        if ticks is not None and ticks != start_ticks:
            return False
    return True


def kill_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False when no such group exists any more."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        log.warning("not allowed to signal process group %d: %s", pgid, exc)
        return False


@dataclass
class ModuleLaunch:
    """Everything a runtime needs to start one module.

    Attributes:
        name: module name.
        image: the module's image (the process runtime records it; Docker runs it).
        env: the module's environment from the manifest (`module_env`).
        workdir: the module's own folder (`<agent workdir>/modules/<name>`), `MODULE_WORKDIR`.
        device_id: the device the agent runs for (`IOTEDGE_DEVICEID`).
        scene_file: the device's synthetic camera scene (`EDGELOOP_SCENE_FILE`).
        create_options: the manifest's Docker createOptions (parsed).
        host_port: the host port to prefer for container port 4912 (None: any free port).
        registry_auth: registry login for a private image (Docker runtime only).
        generation: an id that changes whenever the module is recreated from a new spec.
    """

    name: str
    image: str
    env: dict[str, str]
    workdir: Path
    device_id: str
    scene_file: Path
    create_options: dict[str, Any] = field(default_factory=dict)
    host_port: int | None = None
    registry_auth: dict[str, str] | None = None
    generation: str = ""


class ModuleHandle(Protocol):
    """A started module, as the agent sees it."""

    name: str
    host_port: int | None
    started_at: str

    def poll(self) -> int | None:
        """The exit code when the module has exited, else None (never blocks)."""

    def terminate(self) -> None:
        """Ask the module to stop (SIGTERM / docker stop), without waiting."""

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for the module to exit; its exit code, or None."""

    def kill(self) -> None:
        """Force the module to stop now (SIGKILL)."""

    def record(self) -> dict[str, Any]:
        """A JSON-able description to find the module again after an agent crash."""


def stop_handles(handles: list[ModuleHandle], timeout: float) -> dict[str, int | None]:
    """Stop several modules at once: SIGTERM all, wait up to `timeout` s in all, then SIGKILL.

    Returns:
        Module name -> exit code (None when it had to be killed and gave none).
    """
    for h in handles:
        h.terminate()
    deadline = time.monotonic() + timeout
    codes: dict[str, int | None] = {}
    for h in handles:
        code = h.wait(max(0.0, deadline - time.monotonic()))
        if code is None:
            log.warning("module %s did not stop within %.0f s of SIGTERM: killing it", h.name, timeout)
            h.kill()
            code = h.wait(5.0)
        codes[h.name] = code
    return codes


# --------------------------------------------------------------------------- process runtime


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
        return env

    def start(self, launch: ModuleLaunch) -> ProcessHandle:
        """Start the module; its output goes to `<workdir>/module.log`."""
        launch.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port(launch.host_port)
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


# --------------------------------------------------------------------------- docker runtime


def docker_engine_available() -> tuple[bool, str]:
    """(True, engine version) when a Docker engine answers, else (False, the reason and fix)."""
    try:
        import docker  # noqa: F401  (optional on a device without an engine)
    except ImportError:
        return False, "the docker SDK is not installed: pip install docker==7.2.0"
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=5)
        try:
            version = client.version().get("Version", "?")
        finally:
            client.close()
    except DockerException as exc:
        return False, (
            f"no Docker engine answers ({mask(str(exc))[:200]}): start Docker (or set DOCKER_HOST), "
            "or use the process runtime (--runtime process)"
        )
    return True, f"Docker engine {version}"


class DockerHandle:
    """A module running as a Docker container."""

    def __init__(self, name: str, container: Any, host_port: int | None):
        self.name = name
        self.container = container
        self.host_port = host_port
        self.started_at = utc_now()
        self._exit: int | None = None

    def poll(self) -> int | None:
        from docker.errors import NotFound

        if self._exit is None:
            try:
                self.container.reload()
            except NotFound:
                self._exit = -1
                return self._exit
            if self.container.status in ("exited", "dead"):
                self._exit = int(self.container.attrs.get("State", {}).get("ExitCode", -1))
        return self._exit

    def terminate(self) -> None:
        from docker.errors import APIError

        if self.poll() is None:
            try:
                self.container.kill(signal="SIGTERM")
            except APIError as exc:
                log.warning("docker could not signal %s: %s", self.name, exc)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll() is not None:
                break
            time.sleep(0.2)
        code = self.poll()
        if code is not None:
            self._remove()
        return code

    def kill(self) -> None:
        from docker.errors import APIError

        try:
            self.container.kill()
        except APIError as exc:
            log.warning("docker could not kill %s: %s", self.name, exc)

    def _remove(self) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.container.remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            log.warning("docker could not remove the container of %s: %s", self.name, exc)

    def record(self) -> dict[str, Any]:
        return {"kind": "docker", "container": self.container.id}


class DockerRuntime:
    """Runs each module as a container of its image, with the manifest's createOptions.

    The module's folder is mounted at `/data` (`MODULE_WORKDIR`, where it writes
    `reported.json`), the device folder read-only at `/device` (the synthetic scene file).

    Raises:
        RuntimeUnavailable: the docker SDK is missing or no engine answers.
    """

    name = "docker"

    def __init__(self) -> None:
        ok, reason = docker_engine_available()
        if not ok:
            raise RuntimeUnavailable(f"the docker runtime cannot run modules: {reason}")
        import docker

        self.client = docker.from_env(timeout=30)
        self.engine = reason

    def describe(self) -> str:
        return f"docker runtime ({self.engine})"

    def _container_name(self, launch: ModuleLaunch) -> str:
        return f"edgeloop-{launch.device_id}-{launch.name}".replace("/", "-")

    def start(self, launch: ModuleLaunch) -> DockerHandle:
        """Pull the image when absent, replace any old container of the module, run it."""
        from docker.errors import APIError, ImageNotFound, NotFound

        launch.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.client.images.get(launch.image)
        except ImageNotFound:
            log.info("pulling %s", launch.image)
            try:
                self.client.images.pull(launch.image, auth_config=launch.registry_auth)
            except APIError as exc:
                raise RuntimeUnavailable(
                    f"cannot pull {launch.image}: {mask(str(exc))}; check the image name and the "
                    "registryCredentials in the deployment"
                ) from exc
        name = self._container_name(launch)
        try:
            self.client.containers.get(name).remove(force=True)
        except NotFound:
            pass
        opts = launch.create_options or {}
        host_config = opts.get("HostConfig") or {}
        port = free_port(launch.host_port, host="0.0.0.0")
        env = dict(launch.env)
        env.update({
            "MODULE_WORKDIR": "/data",
            "EDGELOOP_SCENE_FILE": f"/device/{launch.scene_file.name}",
            "PORT": str(CONTAINER_PORT),
            "IOTEDGE_DEVICEID": launch.device_id,
            "IOTEDGE_MODULEID": launch.name,
            "IOTEDGE_MODULEGENERATIONID": launch.generation,
        })
        for item in opts.get("Env") or []:
            key, _, value = str(item).partition("=")
            env.setdefault(key, value)
        volumes = {
            str(launch.workdir.resolve()): {"bind": "/data", "mode": "rw"},
            str(launch.scene_file.parent.resolve()): {"bind": "/device", "mode": "ro"},
        }
        devices = [
            f"{d['PathOnHost']}:{d.get('PathInContainer', d['PathOnHost'])}:{d.get('CgroupPermissions', 'rwm')}"
            for d in host_config.get("Devices") or []
        ]
        container = self.client.containers.run(
            launch.image,
            name=name,
            detach=True,
            environment=env,
            ports={f"{CONTAINER_PORT}/tcp": port},
            volumes=volumes,
            devices=devices or None,
            privileged=bool(host_config.get("Privileged")),
            labels={"edgeloop.device": launch.device_id, "edgeloop.module": launch.name},
        )
        return DockerHandle(launch.name, container, port)

    def kill_stale(self, record: dict[str, Any]) -> bool:
        """Remove a container left by a previous agent run."""
        from docker.errors import NotFound

        if record.get("kind") != "docker":
            return False
        try:
            self.client.containers.get(record["container"]).remove(force=True)
        except NotFound:
            return False
        return True


def make_runtime(name: str) -> ProcessRuntime | DockerRuntime:
    """The runtime called `name` (`process` or `docker`).

    Raises:
        RuntimeUnavailable: an unknown name, or the runtime cannot run here.
    """
    if name == "process":
        return ProcessRuntime()
    if name == "docker":
        return DockerRuntime()
    raise RuntimeUnavailable(f"unknown runtime {name!r}: use 'process' or 'docker'")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is absent or (mid-write, corrupt) unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
