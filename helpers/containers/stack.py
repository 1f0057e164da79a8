"""Set the local container stack up and take it down (`make containers`, `make containers-down`).

In a project-owned folder (`.containers/` in the checkout, or `$EDGELOOP_CONTAINERS_DIR`),
idempotently: podman's configuration (`containers.conf`: runc, cgroupfs, lowered default
ulimits; `storage.conf`: overlay storage in the folder; `registries.conf`: the local registry
marked insecure), Debian's `docker-registry` on 127.0.0.1:5000 (another free port when 5000 is
taken), the debootstrapped base image (`base_image`), and `podman system service` on
`podman.sock`, the Docker API (1.41) the docker SDK talks to. `stack.json` records what runs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

from helpers.containers.base_image import BASE_IMAGE, ensure_base_image, unmount_below
from helpers.containers.engine import (
    MANAGED_LABEL,
    STACK_FILE,
    ContainerStackError,
    Say,
    Stack,
    forget_answers,
    podman_env,
    run_podman,
    socket_answers,
    stack_dir,
)

#: Debian packages the stack needs: binary to look for -> package
PACKAGES = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap", "docker-registry": "docker-registry"}
#: Every container podman starts here gets these limits (the host's own are refused).
ULIMITS = ("nofile=20000:20000", "nproc=32768:32768")
REGISTRY_PORT = 5000


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True



def _registry_answers(address: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop_pid(pid_file: Path, timeout: float = 10.0) -> bool:
    """SIGTERM the process group recorded in `pid_file` (ours: started in its own session)."""
    pid = _read_pid(pid_file)
    stopped = False
    if pid and _pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> int:
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=str(log_path.parent))
    return proc.pid


# --------------------------------------------------------------------------- steps


def missing_packages() -> list[str]:
    """The Debian packages of `PACKAGES` whose program is not installed."""
    return [pkg for binary, pkg in PACKAGES.items() if shutil.which(binary) is None]


def install_packages(say: Say) -> None:
    """apt-get install the missing packages (root on Debian), or say how to.

    Raises:
        ContainerStackError: something is missing and cannot be installed here.
    """
    missing = missing_packages()
    if not missing:
        say(f"packages: {', '.join(PACKAGES.values())} already installed")
        return
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ContainerStackError(
            f"missing {', '.join(missing)}: install them (Debian/Ubuntu: sudo {' '.join(command)}), "
            "or use a Docker engine instead (set DOCKER_HOST)")
    say(f"packages: installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], command):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise ContainerStackError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-800:]}")
    still = missing_packages()
    if still:
        raise ContainerStackError(f"apt-get installed nothing for {', '.join(still)}")


def write_configs(folder: Path, registry: str, say: Say) -> None:
    """containers.conf, storage.conf and registries.conf in `folder` (rewritten when they differ)."""
    for sub in ("storage", "run", "tmp", "registry", "volumes"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ulimits = ", ".join(f'"{u}"' for u in ULIMITS)
    files = {
        "containers.conf": (
            "# Written by `make containers` (helpers/containers/stack.py): edits are replaced.\n"
            "[containers]\n"
            f"default_ulimits = [{ulimits}]\n"
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{folder / "run" / "events.log"}"\n'
            'runtime = "runc"\n'
            f'tmp_dir = "{folder / "tmp"}"\n'
            f'volume_path = "{folder / "volumes"}"\n'
        ),
        "storage.conf": (
            "# Written by `make containers` (helpers/containers/stack.py): edits are replaced.\n"
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{folder / "storage"}"\n'
            f'runroot = "{folder / "run"}"\n'
        ),
        "registries.conf": (
            "# Written by `make containers` (helpers/containers/stack.py): edits are replaced.\n"
            'unqualified-search-registries = ["docker.io"]\n'
            'short-name-mode = "permissive"\n'
            "\n[[registry]]\n"
            f'location = "{registry}"\n'
            "insecure = true\n"
        ),
        "registry.yml": (
            "# Written by `make containers`: Debian's docker-registry with filesystem storage.\n"
            "version: 0.1\n"
            "log:\n  level: warn\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {folder / 'registry'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {registry}\n"
        ),
    }
    changed = [name for name, text in files.items() if _write_if_changed(folder / name, text)]
    say(f"configs: {'wrote ' + ', '.join(changed) if changed else 'unchanged'} in {folder}")


def ensure_registry(folder: Path, say: Say) -> str:
    """Debian's docker-registry on 127.0.0.1 (port 5000 or a free one); its address."""
    pid_file = folder / "registry.pid"
    address_file = folder / "registry.address"
    address = address_file.read_text().strip() if address_file.is_file() else ""
    if address and _pid_alive(_read_pid(pid_file)) and _registry_answers(address):
        say(f"registry: already running on {address}")
        return address
    _stop_pid(pid_file)
    address = f"127.0.0.1:{_free_port(REGISTRY_PORT)}"
    address_file.write_text(address + "\n")
    return address


def start_registry(folder: Path, address: str, say: Say) -> int:
    pid_file = folder / "registry.pid"
    pid = _read_pid(pid_file)
    if _pid_alive(pid) and _registry_answers(address):
        return int(pid)  # type: ignore[arg-type]
    pid = _spawn(["docker-registry", "serve", str(folder / "registry.yml")], folder / "registry.log", dict(os.environ))
    pid_file.write_text(f"{pid}\n")
    deadline = time.monotonic() + 20
    while not _registry_answers(address):
        if not _pid_alive(pid) or time.monotonic() > deadline:
            tail = (folder / "registry.log").read_text(errors="replace")[-800:]
            raise ContainerStackError(f"docker-registry did not answer on {address}: {tail}")
        time.sleep(0.2)
    say(f"registry: started on {address} (pid {pid}, storage {folder / 'registry'})")
    return pid


def start_service(folder: Path, say: Say) -> tuple[str, int]:
    """`podman system service --time=0` on `folder/podman.sock`; (DOCKER_HOST, pid)."""
    sock = folder / "podman.sock"
    docker_host = f"unix://{sock}"
    pid_file = folder / "service.pid"
    pid = _read_pid(pid_file)
    if _pid_alive(pid) and socket_answers(docker_host):
        say(f"docker API: podman service already answers on {docker_host}")
        return docker_host, int(pid)  # type: ignore[arg-type]
    _stop_pid(pid_file)
    sock.unlink(missing_ok=True)
    env = {**os.environ, **podman_env(folder)}
    pid = _spawn(["podman", "system", "service", "--time=0", docker_host], folder / "service.log", env)
    pid_file.write_text(f"{pid}\n")
    deadline = time.monotonic() + 30
    while not socket_answers(docker_host):
        if not _pid_alive(pid) or time.monotonic() > deadline:
            tail = (folder / "service.log").read_text(errors="replace")[-800:]
            raise ContainerStackError(f"podman system service did not answer on {docker_host}: {tail}")
        time.sleep(0.2)
    say(f"docker API: podman service started on {docker_host} (pid {pid})")
    return docker_host, pid


# --------------------------------------------------------------------------- up / down


def up(path: str | Path | None = None, say: Say = print, install: bool = True,
       platforms: tuple[str, ...] = ()) -> Stack:
    """Set the stack up (idempotent) and return it; prints each step's outcome through `say`.

    `platforms` adds local bases for other platforms (e.g. `("linux/arm64",)` for a Raspberry
    Pi), built under qemu-user-static's binfmt emulation.

    Raises:
        ContainerStackError: a package is missing and cannot be installed, or a step failed
            (the message carries the tool's own words).
    """
    if sys.platform != "linux":
        raise ContainerStackError("the podman stack runs on Linux; on macOS/Windows use Docker Desktop "
                                  "(DOCKER_HOST) and a registry of your own")
    folder = stack_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if install:
        install_packages(say)
    elif missing_packages():
        raise ContainerStackError(f"missing {', '.join(missing_packages())}: run `make containers`")
    registry = ensure_registry(folder, say)
    write_configs(folder, registry, say)
    registry_pid = start_registry(folder, registry, say)
    ensure_base_image(folder, say)
    for platform in platforms:
        ensure_base_image(folder, say, platform=platform)
    docker_host, service_pid = start_service(folder, say)
    stack = Stack(str(folder), docker_host, registry, BASE_IMAGE, registry_pid, service_pid)
    _write_if_changed(folder / STACK_FILE, json.dumps(asdict(stack), indent=1) + "\n")
    say(f"ready: DOCKER_HOST={docker_host}  registry {registry}  base {BASE_IMAGE}")
    return stack


def _stop_processes(folder: Path, say: Say) -> None:
    """Remove the edge agents' containers, then stop the Docker-API service and the registry."""
    forget_answers()
    if shutil.which("podman") and (folder / "storage.conf").is_file():
        ids = run_podman(folder, "ps", "-aq", "--filter", f"label={MANAGED_LABEL}=true", check=False).stdout.split()
        if ids:
            run_podman(folder, "rm", "-f", "-t", "5", *[i.decode() for i in ids], check=False)
            say(f"containers: removed {len(ids)} edge-agent container(s)")
    for name, what in (("service.pid", "docker API service"), ("registry.pid", "registry")):
        if _stop_pid(folder / name):
            say(f"{what}: stopped")


def running(path: str | Path | None = None) -> bool:
    """Whether this stack's Docker-API service or registry process is alive (started by `up`)."""
    folder = stack_dir(path)
    return any(_pid_alive(_read_pid(folder / name)) for name in ("service.pid", "registry.pid"))


def stop(path: str | Path | None = None, say: Say = print) -> None:
    """Stop the service and the registry and unmount what podman mounted, keeping the images.

    What a test that ran `up` calls to leave the machine as it found it: no process left and no
    mount under the folder (so the checkout deletes), while the base image stays cached for the
    next `up`, which starts the processes again in seconds.
    """
    folder = stack_dir(path)
    _stop_processes(folder, say)
    if shutil.which("podman") and (folder / "storage.conf").is_file():
        run_podman(folder, "unmount", "--all", check=False, timeout=120)
    if folder.exists():
        unmounted = unmount_below(folder)
        if unmounted:
            say(f"unmounted {len(unmounted)} mount(s) under {folder}")


def down(path: str | Path | None = None, say: Say = print) -> None:
    """Stop the service and the registry, remove the stack's containers and its folder."""
    folder = stack_dir(path)
    forget_answers()
    if not folder.exists():
        say(f"nothing to remove: {folder} does not exist")
        return
    _stop_processes(folder, say)
    if shutil.which("podman") and (folder / "storage.conf").is_file():
        # unmounts the overlay layers and deletes images, containers and podman's state
        proc = run_podman(folder, "system", "reset", "--force", check=False, timeout=300)
        if proc.returncode == 0:
            say("podman storage: reset")
        else:
            say(f"podman storage: reset failed ({proc.stderr.decode(errors='replace').strip()[-300:]}); removing files")
    try:
        unmounted = unmount_below(folder)  # never delete through a mount
    except ContainerStackError as exc:
        say(f"not removing {folder}: {exc}")
        return
    if unmounted:
        say(f"unmounted {len(unmounted)} leftover mount(s) under {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    say(f"removed {folder}" if not folder.exists() else f"could not remove all of {folder}")


__all__ = [
    "running",
    "stop",
    "PACKAGES",
    "REGISTRY_PORT",
    "ULIMITS",
    "down",
    "ensure_registry",
    "install_packages",
    "missing_packages",
    "start_registry",
    "start_service",
    "up",
    "write_configs",
]
