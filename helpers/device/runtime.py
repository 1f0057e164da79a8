"""Module runtimes for the edge agent: local processes, or containers where a Docker-API engine runs.

A runtime starts one module from a `ModuleLaunch` and gives back a `ModuleHandle` the agent
polls and stops. Two runtimes share that shape:

- `ProcessRuntime` (the default, no container engine needed): runs the repository's
  `start.sh` as a process in its own process group, with the module's environment, so the
  same entrypoint the image uses runs here. Container port 4912 is stood for by a free host
  port passed as `PORT`. Each module's stdout/stderr goes to `module.log` in its own folder.
- `ContainerRuntime` (`container`, formerly `docker`): pulls and runs the module's image with
  the docker SDK through any Docker-API endpoint (Docker, or podman's socket from
  `make containers`), applying the manifest's createOptions (ports bound to 127.0.0.1 unless
  the manifest names an address, device mappings, binds), as Azure IoT Edge does.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def published_host_ip(create_options: dict[str, Any] | None) -> str:
    """The host address createOptions publish container port 4912 on: its binding's `HostIp`,
    else 127.0.0.1 (a simulated device's page is for this machine unless the deployment says so)."""
    bindings = ((create_options or {}).get("HostConfig") or {}).get("PortBindings") or {}
    for entry in bindings.get(f"{CONTAINER_PORT}/tcp") or bindings.get(str(CONTAINER_PORT)) or []:
        if isinstance(entry, dict) and entry.get("HostIp"):
            return str(entry["HostIp"])
    return "127.0.0.1"


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


# --------------------------------------------------------------------------- container runtime

#: Network of the module containers when the manifest's HostConfig.NetworkMode names none:
#: `bridge` (a real device: ports published per PortBindings) or `host` (simulated devices on
#: this machine: the modules reach the hub and studio stand-ins on the host's loopback).
CONTAINER_NETWORK_ENV = "EDGELOOP_CONTAINER_NETWORK"
NETWORKS = ("bridge", "host")
#: The container runtime's names: `container`, and `docker` as the earlier name of the same.
CONTAINER_RUNTIMES = ("container", "docker")
#: Labels on every container the runtime creates; it removes no container without them.
LABEL_MANAGED = "edgeloop.managed"
LABEL_DEVICE = "edgeloop.device"
LABEL_MODULE = "edgeloop.module"
LABEL_GENERATION = "edgeloop.generation"


def docker_engine_available() -> tuple[bool, str]:
    """(True, which engine and where) when a Docker-API endpoint answers, else (False, the reason and fix).

    The endpoint is `DOCKER_HOST`, else the `make containers` podman stack, else the default
    Docker socket (`helpers.containers.engine_endpoint`).
    """
    try:
        import docker  # noqa: F401  (optional on a device without an engine)
    except ImportError:
        return False, "the docker SDK is not installed: pip install docker==7.2.0"
    from docker.errors import DockerException

    from helpers.containers import docker_client, engine_endpoint

    _, where = engine_endpoint()
    try:
        client = docker_client(timeout=5)
        try:
            info = client.version()
        finally:
            client.close()
    except DockerException as exc:
        return False, (
            f"no Docker engine answers at {where} ({mask(str(exc))[:200]}): start Docker (or set DOCKER_HOST), "
            "run `make containers` (podman's Docker API, Linux, no Docker engine), "
            "or use the process runtime (--runtime process)"
        )
    components = info.get("Components") or [{}]
    engine = str(components[0].get("Name") or "Docker Engine")
    return True, f"{engine} {info.get('Version', '?')} at {where}"


def registry_auth_for(credentials: dict[str, Any] | None, image: str) -> dict[str, str] | None:
    """The docker SDK `auth_config` for pulling `image`, from a manifest's `registryCredentials`.

    Args:
        credentials: `$edgeAgent` `runtime.settings.registryCredentials` (name -> address,
            username, password).
        image: the module's image reference.
    """
    first = image.split("/", 1)[0]
    host = first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"
    for entry in (credentials or {}).values():
        if not isinstance(entry, dict):
            continue
        address = str(entry.get("address", "")).split("://", 1)[-1].rstrip("/")
        if address.split("/", 1)[0] in (host, "index." + host) and entry.get("username"):
            password = entry.get("password", "")
            password = password.get_secret_value() if hasattr(password, "get_secret_value") else str(password)
            return {"username": str(entry["username"]), "password": password, "serveraddress": address}
    return None


def env_file_binds(env: dict[str, str], workdir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """Make the host files the module's environment names by absolute path readable inside.

    A value such as the hub CA's path (`EdgeModuleCACertificateFile=/ws/localcloud/tls/ca.pem`)
    means the same file inside the container, as it does for a module run as a process (IoT
    Edge mounts its trust bundle likewise). A file others may read is bound read-only at the
    same path; an owner-only one (the container's user could not read it through a bind) is
    copied, 0400, into `workdir/.host-files/` (the module folder, mounted at `/data`, which the
    runtime gives to the container's user) and the variable points there.

    Returns:
        (read-only binds, variables whose value changed).
    """
    binds: list[str] = []
    changed: dict[str, str] = {}
    for key, value in sorted(env.items()):
        path = Path(value)
        if not value.startswith("/") or "\n" in value or ":" in value or not path.is_file():
            continue
        if path.stat().st_mode & 0o004 or workdir is None:
            bind = f"{path}:{path}:ro"
            if bind not in binds:
                binds.append(bind)
            continue
        dest_dir = workdir / ".host-files"
        dest_dir.mkdir(mode=0o700, exist_ok=True)
        dest = dest_dir / f"{key}-{path.name}"
        dest.unlink(missing_ok=True)
        dest.write_bytes(path.read_bytes())
        dest.chmod(0o400)
        changed[key] = f"/data/.host-files/{dest.name}"
    return binds, changed


class ContainerHandle:
    """A module running as a container; its output goes to `module.log` as it runs (followed
    from the engine, masked), so the agent's `GetModuleLogs` reads it as for a process."""

    def __init__(self, name: str, container: Any, host_port: int | None, log_path: Path | None = None):
        self.name = name
        self.container = container
        self.host_port = host_port
        self.log_path = log_path
        self.started_at = utc_now()
        self._exit: int | None = None
        self._follower: threading.Thread | None = None
        if log_path is not None:
            self._follower = threading.Thread(target=self._follow_logs, name=f"logs-{name}", daemon=True)
            self._follower.start()

    def _follow_logs(self) -> None:
        """Append the container's output to module.log until it exits (a daemon thread)."""
        from docker.errors import APIError, NotFound

        try:
            with open(self.log_path, "ab") as out:  # type: ignore[arg-type]
                for chunk in self.container.logs(stdout=True, stderr=True, stream=True, follow=True):
                    out.write(mask(chunk.decode(errors="replace")).encode())
                    out.flush()
        except (APIError, NotFound, OSError) as exc:
            log.info("stopped following the output of %s: %s", self.name, exc)

    def poll(self) -> int | None:
        from docker.errors import APIError, NotFound

        if self._exit is None:
            try:
                self.container.reload()
            except NotFound:
                self._exit = -1
                return self._exit
            except APIError as exc:
                log.warning("the engine did not answer for %s: %s", self.name, exc)
                return None
            if self.container.status in ("exited", "dead", "stopped"):
                self._exit = int(self.container.attrs.get("State", {}).get("ExitCode", -1))
                self._save_logs()
        return self._exit

    def _save_logs(self) -> None:
        if self.log_path is None:
            return
        if self._follower is not None:
            self._follower.join(timeout=5)  # the stream ends with the container: let it write the last lines
        with open(self.log_path, "ab") as out:
            out.write(f"---- {utc_now()} container {self.container.name} exited {self._exit}\n".encode())

    def terminate(self) -> None:
        from docker.errors import APIError, NotFound

        if self.poll() is None:
            try:
                self.container.kill(signal="SIGTERM")
            except (APIError, NotFound) as exc:
                log.warning("the engine could not signal %s: %s", self.name, exc)

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
        from docker.errors import APIError, NotFound

        try:
            self.container.kill()
        except (APIError, NotFound) as exc:
            log.warning("the engine could not kill %s: %s", self.name, exc)

    def _remove(self) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.container.remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            log.warning("the engine could not remove the container of %s: %s", self.name, exc)

    def record(self) -> dict[str, Any]:
        return {"kind": "container", "container": self.container.id, "name": self.container.name}

    def __repr__(self) -> str:
        return f"ContainerHandle({self.name!r}, {self.container.name}, port={self.host_port}, exit={self._exit})"


DockerHandle = ContainerHandle  # the earlier name


class ContainerRuntime:
    """Runs each module as a container of its image, pulled from its registry, per createOptions.

    As Azure IoT Edge's edgeAgent does, it pulls the image (with the deployment's
    `registryCredentials`) when it starts a new module generation, creates the container from
    the manifest's createOptions (`Env`, `HostConfig.PortBindings` bound to 127.0.0.1 unless a
    binding names its `HostIp`, `Devices`, `Binds`, `NetworkMode`, `Privileged`, `Cmd`,
    `Entrypoint`, `User`, `Memory`) and leaves restarts to the agent (the container's own
    restart policy is `no`). The module's folder is mounted at `/data` (`MODULE_WORKDIR`,
    where it writes `reported.json`), the device folder read-only at `/device` (the synthetic
    scene file). Every container it creates carries the `edgeloop.managed` label; it replaces
    or removes no other container.

    Networks: `bridge` publishes the module's ports; `host` (simulated devices on one machine,
    `EDGELOOP_CONTAINER_NETWORK=host`) shares the host's network, so the modules reach the
    loopback stand-ins by the same URLs; container port 4912 is then stood for by a free host
    port passed as `PORT`, bound to 127.0.0.1 (`BIND_HOST`).

    Args:
        network: `bridge` or `host` (default: `$EDGELOOP_CONTAINER_NETWORK`, else `bridge`).
        client: a `docker.DockerClient` (default: `helpers.containers.docker_client()`).

    Raises:
        RuntimeUnavailable: the docker SDK is missing, no engine answers, or an unknown network.
    """

    name = "container"

    def __init__(self, network: str | None = None, client: Any = None) -> None:
        network = network or os.environ.get(CONTAINER_NETWORK_ENV) or "bridge"
        if network not in NETWORKS:
            raise RuntimeUnavailable(f"container network {network!r} is not one of {NETWORKS} "
                                     f"(set {CONTAINER_NETWORK_ENV}=bridge or host)")
        self.network = network
        if client is None:
            ok, reason = docker_engine_available()
            if not ok:
                raise RuntimeUnavailable(f"the container runtime cannot run modules: {reason}")
            from helpers.containers import docker_client

            client = docker_client(timeout=120)
            self.engine = reason
        else:
            self.engine = "given client"
        self.client = client
        self._pulled: set[tuple[str, str]] = set()

    def describe(self) -> str:
        return f"container runtime ({self.engine}, network {self.network})"

    def _container_name(self, launch: ModuleLaunch) -> str:
        return f"edgeloop-{launch.device_id}-{launch.name}".replace("/", "-")

    def _pull(self, launch: ModuleLaunch) -> Any:
        """Pull the image once per module generation (as edgeAgent does on create); the image."""
        from docker.errors import APIError, ImageNotFound

        key = (launch.image, launch.generation)
        if key not in self._pulled:
            log.info("pulling %s", launch.image)
            try:
                self.client.images.pull(launch.image, auth_config=launch.registry_auth)
                self._pulled.add(key)
            except APIError as exc:
                try:
                    image = self.client.images.get(launch.image)
                except ImageNotFound:
                    raise RuntimeUnavailable(
                        f"cannot pull {launch.image}: {mask(str(exc))}; check the image name, that it was pushed, "
                        "and the registryCredentials in the deployment"
                    ) from exc
                log.warning("cannot pull %s (%s): running the copy already on this device", launch.image,
                            mask(str(exc)))
                return image
        return self.client.images.get(launch.image)

    def _replace_old(self, name: str) -> None:
        from docker.errors import NotFound

        try:
            old = self.client.containers.get(name)
        except NotFound:
            return
        if (old.labels or {}).get(LABEL_MANAGED) != "true":
            raise RuntimeUnavailable(f"a container named {name} exists that the edge agent did not create: "
                                     "remove or rename it (the agent removes only its own, labelled "
                                     f"{LABEL_MANAGED}=true)")
        old.remove(force=True)

    def _user(self, image: Any, opts: dict[str, Any], workdir: Path) -> str | None:
        """Who runs the module: createOptions `User`; else the agent's own uid when it is not root
        (the bind-mounted module folder stays the user's); else the image's user, who is then
        given the module folder."""
        if opts.get("User"):
            return str(opts["User"])
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        user = str(((image.attrs or {}).get("Config") or {}).get("User") or "")
        uid, _, gid = user.partition(":")
        if uid.isdigit() and int(uid) != 0:
            gid_n = int(gid) if gid.isdigit() else int(uid)
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, int(uid), gid_n, follow_symlinks=False)
        return None

    def start(self, launch: ModuleLaunch) -> ContainerHandle:
        """Pull the image for a new generation, replace the module's old container, run it."""
        from docker.errors import APIError

        launch.workdir.mkdir(parents=True, exist_ok=True)
        image = self._pull(launch)
        name = self._container_name(launch)
        self._replace_old(name)
        opts = dict(launch.create_options or {})
        host_config = opts.get("HostConfig") or {}
        network = str(host_config.get("NetworkMode") or self.network)
        env = dict(launch.env)
        for item in opts.get("Env") or []:
            key, _, value = str(item).partition("=")
            env.setdefault(key, value)
        env.update({
            "MODULE_WORKDIR": "/data",
            "EDGELOOP_SCENE_FILE": f"/device/{launch.scene_file.name}",
            "IOTEDGE_DEVICEID": launch.device_id,
            "IOTEDGE_MODULEID": launch.name,
            "IOTEDGE_MODULEGENERATIONID": launch.generation,
        })
        bindings = host_config.get("PortBindings") or {}
        main_key = f"{CONTAINER_PORT}/tcp"
        main_ip = "127.0.0.1"
        for b in bindings.get(main_key) or []:
            main_ip = str((b or {}).get("HostIp") or main_ip)
        ports: dict[str, Any] = {}
        host_port: int | None = None
        if network == "host":
            # no publishing on the host's network: the module listens on the host port itself
            host_port = free_port(launch.host_port, host=main_ip if main_ip != "0.0.0.0" else "127.0.0.1")
            env["PORT"] = str(host_port)
            env.setdefault("BIND_HOST", main_ip)
        else:
            env["PORT"] = str(CONTAINER_PORT)
            for key, entries in bindings.items():
                key = key if "/" in key else f"{key}/tcp"
                published = []
                for b in entries or [{}]:
                    ip = str((b or {}).get("HostIp") or "127.0.0.1")
                    wanted = int((b or {}).get("HostPort") or 0) or None
                    if key == main_key:
                        wanted = launch.host_port or wanted
                    port = free_port(wanted, host=ip if ip != "0.0.0.0" else "127.0.0.1")
                    published.append((ip, port))
                    if key == main_key and host_port is None:
                        host_port = port
                ports[key] = published if len(published) > 1 else published[0]
        file_binds, moved = env_file_binds(env, launch.workdir)
        env.update(moved)
        volumes = [
            f"{launch.workdir.resolve()}:/data:rw",
            f"{launch.scene_file.parent.resolve()}:/device:ro",
            *[str(b) for b in host_config.get("Binds") or []],
            *file_binds,
        ]
        devices = [
            f"{d['PathOnHost']}:{d.get('PathInContainer', d['PathOnHost'])}:{d.get('CgroupPermissions', 'rwm')}"
            for d in host_config.get("Devices") or []
        ]
        user = self._user(image, opts, launch.workdir)
        log_path = launch.workdir / LOG_NAME
        if log_path.exists() and log_path.stat().st_size > LOG_MAX_BYTES:
            os.replace(log_path, log_path.with_suffix(".log.1"))
        with open(log_path, "ab") as out:
            out.write(f"---- {utc_now()} start {launch.name} image={launch.image} container={name} "
                      f"network={network} port={host_port}\n".encode())
        kwargs: dict[str, Any] = {
            "name": name,
            "detach": True,
            "environment": env,
            "volumes": volumes,
            "devices": devices or None,
            "privileged": bool(host_config.get("Privileged")),
            "labels": {LABEL_MANAGED: "true", LABEL_DEVICE: launch.device_id, LABEL_MODULE: launch.name,
                       LABEL_GENERATION: launch.generation},
            "restart_policy": {"Name": "no"},  # restarts are the agent's, per the manifest's restartPolicy
        }
        if network == "host":
            kwargs["network_mode"] = "host"
        else:
            kwargs["ports"] = ports
            if network != "bridge":
                kwargs["network"] = network
        if user:
            kwargs["user"] = user
        if opts.get("Cmd"):
            kwargs["command"] = opts["Cmd"]
        if opts.get("Entrypoint"):
            kwargs["entrypoint"] = opts["Entrypoint"]
        if host_config.get("Memory"):
            kwargs["mem_limit"] = int(host_config["Memory"])
        try:
            container = self.client.containers.run(image.id if hasattr(image, "id") else launch.image, **kwargs)
        except APIError as exc:
            raise RuntimeUnavailable(f"the engine could not start {name} from {launch.image}: {mask(str(exc))}") from exc
        return ContainerHandle(launch.name, container, host_port, log_path)

    def managed_containers(self, device_id: str | None = None) -> list[Any]:
        """The containers this runtime created (for `device_id`, or every device)."""
        filters = [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_DEVICE}={device_id}"] if device_id else [])
        return self.client.containers.list(all=True, filters={"label": filters})

    def kill_stale(self, record: dict[str, Any]) -> bool:
        """Remove a container a previous agent run left, when it carries this runtime's label."""
        from docker.errors import NotFound

        if record.get("kind") not in CONTAINER_RUNTIMES:
            return False
        try:
            container = self.client.containers.get(record["container"])
        except NotFound:
            return False
        if (container.labels or {}).get(LABEL_MANAGED) != "true":
            return False
        container.remove(force=True)
        return True


DockerRuntime = ContainerRuntime  # the earlier name


def make_runtime(name: str) -> ProcessRuntime | ContainerRuntime:
    """The runtime called `name`: `process`, or `container` (`docker` is the same).

    Raises:
        RuntimeUnavailable: an unknown name, or the runtime cannot run here.
    """
    if name == "process":
        return ProcessRuntime()
    if name in CONTAINER_RUNTIMES:
        return ContainerRuntime()
    raise RuntimeUnavailable(f"unknown runtime {name!r}: use 'process' or 'container'")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is absent or (mid-write, corrupt) unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
