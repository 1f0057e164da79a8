"""A local container stack without a Docker engine: podman, a local registry, a Docker-API socket.

`make containers` (`python -m helpers.containers up`) sets up, idempotently, in a
project-owned folder (`.containers/` in the checkout, or `$EDGELOOP_CONTAINERS_DIR`):

- podman's configuration: `containers.conf` (runc, cgroupfs, lowered default ulimits: the
  host's limits are refused inside a container here), `storage.conf` (overlay storage in the
  folder), `registries.conf` (the local registry marked insecure, short names from docker.io);
  every podman call and the API service read these three through `CONTAINERS_CONF`,
  `CONTAINERS_STORAGE_CONF` and `CONTAINERS_REGISTRIES_CONF`;
- a base image without any registry: `debootstrap --variant=minbase bookworm` with
  python3 (3.11, as the official `python:3.11-slim`), imported with `podman import` as
  `localhost/edgeloop-base:bookworm`;
- Debian's `docker-registry` on 127.0.0.1:5000 (another free port when 5000 is taken), with
  filesystem storage in the folder;
- `podman system service --time=0 unix://.../podman.sock`: the Docker API (1.41) the `docker`
  SDK talks to (`DOCKER_HOST=unix://.../podman.sock`).

`stack.json` in the folder says what runs (socket, registry, base image); `helpers.images` and
the agent's container runtime read it when `DOCKER_HOST` is not set. `make containers-down`
(`python -m helpers.containers down`) stops the service and the registry, removes the
containers the stack ran and deletes the folder.

Missing Debian packages (podman, runc, debootstrap, docker-registry) are installed with apt-get
when running as root on Debian; elsewhere the error names the command to run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers.config import REPO_ROOT
from helpers.errors import ConfigError

STACK_DIR_ENV = "EDGELOOP_CONTAINERS_DIR"
BASE_IMAGE = "localhost/edgeloop-base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: Debian packages the stack needs: binary to look for -> package
PACKAGES = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap", "docker-registry": "docker-registry"}
#: Packages in the base image: python3 3.11 with venv (pip comes with it), certificates for HTTPS
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: Every container podman starts here gets these limits (the host's own are refused).
ULIMITS = ("nofile=20000:20000", "nproc=32768:32768")
REGISTRY_PORT = 5000
#: Where Debian keeps a machine's own CA certificates (copied into the local base image)
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
STACK_FILE = "stack.json"
#: The label of every container the edge agent's container runtime creates.
MANAGED_LABEL = "edgeloop.managed"

Say = Callable[[str], None]


class ContainerStackError(ConfigError):
    """The local container stack could not be set up; the message says what to install or fix."""


@dataclass
class Stack:
    """What `up()` set up (also `stack.json`)."""

    dir: str
    docker_host: str
    registry: str
    base_image: str
    registry_pid: int
    service_pid: int

    @property
    def env(self) -> dict[str, str]:
        """The environment podman and the docker SDK need to reach this stack."""
        return {**podman_env(Path(self.dir)), "DOCKER_HOST": self.docker_host}


def stack_dir(path: str | Path | None = None) -> Path:
    """The stack's folder: `path`, `$EDGELOOP_CONTAINERS_DIR`, else `.containers/` in the checkout."""
    raw = path or os.environ.get(STACK_DIR_ENV) or REPO_ROOT / ".containers"
    return Path(raw).expanduser().resolve()


def podman_env(folder: Path) -> dict[str, str]:
    """`CONTAINERS_*` variables that make podman read this stack's configuration."""
    return {
        "CONTAINERS_CONF": str(folder / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(folder / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(folder / "registries.conf"),
    }


_answered: dict[str, float] = {}  # socket -> when it last answered (a busy machine answers slowly)


def load_stack(path: str | Path | None = None) -> Stack | None:
    """The stack described by `stack.json` when its Docker-API socket answers, else None.

    A socket that answered in the last 30 s counts as answering (one ping, up to 10 s, per
    half minute: several calls per build on a loaded machine stay cheap).
    """
    folder = stack_dir(path)
    try:
        data = json.loads((folder / STACK_FILE).read_text())
        stack = Stack(**data)
    except (OSError, ValueError, TypeError):
        return None
    if time.monotonic() - _answered.get(stack.docker_host, -1e9) < 30:
        return stack
    if _socket_answers(stack.docker_host, timeout=10.0):
        _answered[stack.docker_host] = time.monotonic()
        return stack
    return None


def engine_endpoint() -> tuple[str | None, str]:
    """Which Docker-API endpoint to use: (base_url or None for the SDK's default, a description).

    `DOCKER_HOST` wins; else the local podman stack when `make containers` runs it; else
    the docker SDK's default (`/var/run/docker.sock`).
    """
    if os.environ.get("DOCKER_HOST"):
        return None, f"DOCKER_HOST={os.environ['DOCKER_HOST']}"
    stack = load_stack()
    if stack is not None:
        return stack.docker_host, f"podman's Docker API (make containers, {stack.docker_host})"
    return None, "the default Docker socket"


def docker_client(timeout: int = 60):
    """A `docker.DockerClient` for `engine_endpoint()` (it may not answer: call `.ping()`).

    Raises:
        docker.errors.DockerException: the SDK cannot build a client for the endpoint.
    """
    import docker

    base_url, _ = engine_endpoint()
    if base_url:
        return docker.DockerClient(base_url=base_url, timeout=timeout)
    return docker.from_env(timeout=timeout)


# --------------------------------------------------------------------------- helpers


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


def _socket_answers(docker_host: str, timeout: float = 2.0) -> bool:
    """Whether the Docker API at `unix://PATH` answers `GET /_ping` with OK."""
    if not docker_host.startswith("unix://"):
        return False
    path = docker_host[len("unix://"):]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            reply = s.recv(256)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


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


def run_podman(folder: Path, *args: str, check: bool = True, input: bytes | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `podman ARGS` with this stack's configuration.

    Raises:
        ContainerStackError: a non-zero exit when `check` (podman's own words in the message).
    """
    env = {**os.environ, **podman_env(folder)}
    proc = subprocess.run(["podman", *args], env=env, input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise ContainerStackError(f"podman {' '.join(args[:3])} failed ({proc.returncode}): "
                                  f"{proc.stderr.decode(errors='replace').strip()[-800:]}")
    return proc


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
            "# Written by `make containers` (helpers/containers.py): edits are replaced.\n"
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
            "# Written by `make containers` (helpers/containers.py): edits are replaced.\n"
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{folder / "storage"}"\n'
            f'runroot = "{folder / "run"}"\n'
        ),
        "registries.conf": (
            "# Written by `make containers` (helpers/containers.py): edits are replaced.\n"
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


def add_local_cas(rootfs: Path, source: Path = LOCAL_CA_DIR) -> list[str]:
    """Make the base trust this machine's own CAs, as the host does (a TLS-inspecting proxy's).

    Copies `/usr/local/share/ca-certificates/*.crt` into the root filesystem (so a later
    `update-ca-certificates` keeps them), appends them to its bundle, and points pip at the
    system bundle (`/etc/pip.conf`): pip otherwise trusts only its own certifi copy. Only
    public certificates travel; the local base never leaves this machine.

    Returns:
        The names of the certificates added.
    """
    certs = sorted(source.glob("*.crt")) if source.is_dir() else []
    bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
    if not certs or not bundle.is_file():
        return []
    dest = rootfs / "usr/local/share/ca-certificates"
    dest.mkdir(parents=True, exist_ok=True)
    with open(bundle, "a") as out:
        for cert in certs:
            text = cert.read_text()
            (dest / cert.name).write_text(text)
            out.write("\n" + text.strip() + "\n")
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    return [c.name for c in certs]


#: Docker platform -> Debian architecture
DEBIAN_ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armhf"}


def base_image_name(platform: str | None = None) -> str:
    """The local base for `platform`: `localhost/edgeloop-base:bookworm` for this machine's,
    `...:bookworm-arm64` (etc.) for another one."""
    from helpers.images import host_platform

    if platform is None or platform == host_platform():
        return BASE_IMAGE
    if platform not in DEBIAN_ARCH:
        raise ContainerStackError(f"no Debian architecture for {platform}: use one of {sorted(DEBIAN_ARCH)}")
    return f"{BASE_IMAGE}-{DEBIAN_ARCH[platform].replace('armhf', 'armv7')}"


def unmount_below(root: Path) -> list[str]:
    """Unmount every mount point under `root` (deepest first), so deleting the tree never
    reaches into a mounted /proc, /sys or /dev.

    Raises:
        ContainerStackError: something stays mounted (then nothing may delete the tree).
    """
    prefix = str(root.resolve()) + "/"
    def mounted() -> list[str]:
        points = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
        return sorted(set(points), key=len, reverse=True)
    done = []
    for point in mounted():
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
        done.append(point)
    left = mounted()
    if left:
        raise ContainerStackError(f"still mounted under {root}: {left}; unmount them before deleting {root}")
    return done


def ensure_base_image(folder: Path, say: Say, mirror: str = MIRROR, platform: str | None = None) -> None:
    """The local base (debootstrap minbase + python3) for `platform` (default this machine's), unless present.

    Another platform's base is debootstrapped for its Debian architecture, its second stage run
    under qemu-user-static's binfmt emulation.

    Raises:
        ContainerStackError: another platform without emulation (the message says how to get it).
    """
    from helpers.images import can_emulate, host_platform

    platform = platform or host_platform()
    image = base_image_name(platform)
    if run_podman(folder, "image", "exists", image, check=False).returncode == 0:
        say(f"base image: {image} already present")
        return
    ok, how = can_emulate(platform)
    if not ok:
        raise ContainerStackError(how)
    arch = DEBIAN_ARCH.get(platform, "")
    started = time.monotonic()
    # emulated, debootstrap's second stage (dpkg under qemu) takes many times longer
    timeout = 1200 if platform == host_platform() else 3600
    tmp = Path(tempfile.mkdtemp(dir=folder / "tmp"))
    try:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--arch={arch}", f"--include={','.join(BASE_PACKAGES)}", SUITE,
               str(rootfs), mirror]
        say(f"base image: {' '.join(cmd)}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its chroot'ed dpkg children go with it
            proc.wait()
            unmount_below(rootfs)  # a killed debootstrap leaves /proc mounted in the tree
            raise ContainerStackError(
                f"debootstrap for {platform} did not finish in {timeout} s ({how}); on a busy or small machine "
                "run it again later, or build the image on a machine of that platform") from None
        if proc.returncode != 0:
            unmount_below(rootfs)
            raise ContainerStackError(f"debootstrap failed ({proc.returncode}): {output[-1200:]}")
        unmount_below(rootfs)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        # as debian:bookworm-slim does: no manuals, no docs but each package's copyright file
        for docs in ("usr/share/man", "usr/share/info"):
            shutil.rmtree(rootfs / docs, ignore_errors=True)
        for item in (rootfs / "usr/share/doc").glob("*/*"):
            if item.name != "copyright":
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        trusted = add_local_cas(rootfs)
        if trusted:
            say(f"base image: trusts this machine's local CA certificate(s) {', '.join(trusted)}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        env = {**os.environ, **podman_env(folder)}
        os_name, _, rest = platform.partition("/")
        cpu, _, variant = rest.partition("/")
        cmd_import = ["podman", "import", "--change", "CMD=/bin/bash", "--os", os_name, "--arch", cpu]
        if variant:
            cmd_import += ["--variant", variant]
        proc2 = subprocess.run([*cmd_import, "-", image], stdin=tar.stdout,
                               env=env, capture_output=True, text=True, timeout=600)
        tar.stdout.close()  # type: ignore[union-attr]
        tar.wait()
        if proc2.returncode != 0 or tar.returncode != 0:
            raise ContainerStackError(f"podman import of the base image failed: {proc2.stderr.strip()[-800:]}")
    finally:
        # never delete through a mount: unmount_below raises while anything stays mounted
        unmount_below(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"base image: {image} imported ({time.monotonic() - started:.0f} s, {how})")


def start_service(folder: Path, say: Say) -> tuple[str, int]:
    """`podman system service --time=0` on `folder/podman.sock`; (DOCKER_HOST, pid)."""
    sock = folder / "podman.sock"
    docker_host = f"unix://{sock}"
    pid_file = folder / "service.pid"
    pid = _read_pid(pid_file)
    if _pid_alive(pid) and _socket_answers(docker_host):
        say(f"docker API: podman service already answers on {docker_host}")
        return docker_host, int(pid)  # type: ignore[arg-type]
    _stop_pid(pid_file)
    sock.unlink(missing_ok=True)
    env = {**os.environ, **podman_env(folder)}
    pid = _spawn(["podman", "system", "service", "--time=0", docker_host], folder / "service.log", env)
    pid_file.write_text(f"{pid}\n")
    deadline = time.monotonic() + 30
    while not _socket_answers(docker_host):
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


def down(path: str | Path | None = None, say: Say = print) -> None:
    """Stop the service and the registry, remove the stack's containers and its folder."""
    folder = stack_dir(path)
    _answered.clear()
    if not folder.exists():
        say(f"nothing to remove: {folder} does not exist")
        return
    if shutil.which("podman") and (folder / "storage.conf").is_file():
        ids = run_podman(folder, "ps", "-aq", "--filter", f"label={MANAGED_LABEL}=true", check=False).stdout.split()
        if ids:
            run_podman(folder, "rm", "-f", "-t", "5", *[i.decode() for i in ids], check=False)
            say(f"containers: removed {len(ids)} edge-agent container(s)")
    for name, what in (("service.pid", "docker API service"), ("registry.pid", "registry")):
        if _stop_pid(folder / name):
            say(f"{what}: stopped")
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


def main(argv: list[str] | None = None) -> int:
    """`python -m helpers.containers up|down|status`."""
    p = argparse.ArgumentParser(prog="python -m helpers.containers", description=__doc__.split("\n", 1)[0])
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--dir", default=None, help=f"the stack's folder (default ${STACK_DIR_ENV} or .containers/)")
    p.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing missing packages")
    p.add_argument("--platform", action="append", default=[], metavar="linux/arm64",
                   help="also a base image for this platform (needs qemu-user-static's binfmt emulation)")
    args = p.parse_args(argv)
    say = lambda line: print(f"containers: {line}", flush=True)  # noqa: E731
    try:
        if args.action == "up":
            started = time.monotonic()
            up(args.dir, say, install=not args.no_install, platforms=tuple(args.platform))
            say(f"done in {time.monotonic() - started:.1f} s")
        elif args.action == "down":
            down(args.dir, say)
        else:
            stack = load_stack(args.dir)
            say(json.dumps(asdict(stack)) if stack else f"not running (no answering stack in {stack_dir(args.dir)})")
            return 0 if stack else 1
    except ContainerStackError as exc:
        say(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
