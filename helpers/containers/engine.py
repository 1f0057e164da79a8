"""Where the Docker API is, and podman calls with the local stack's configuration.

The endpoint is `DOCKER_HOST`, else the podman stack `make containers` runs (its `stack.json`
names the socket), else the docker SDK's default socket. `helpers.images` builds through it and
the edge agent's container runtime (`helpers.device.runtime.container`) runs modules through it.
The docker SDK is optional (a device without an engine runs modules as processes): it is
imported only where a client is made.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.config import REPO_ROOT, mask
from helpers.errors import ConfigError

STACK_DIR_ENV = "EDGELOOP_CONTAINERS_DIR"
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


def forget_answers() -> None:
    """Forget which sockets answered lately (the stack is being taken down)."""
    _answered.clear()


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
    if socket_answers(stack.docker_host, timeout=10.0):
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
    import docker  # the SDK is optional: only an engine's users need it

    base_url, _ = engine_endpoint()
    if base_url:
        return docker.DockerClient(base_url=base_url, timeout=timeout)
    return docker.from_env(timeout=timeout)


def socket_answers(docker_host: str, timeout: float = 2.0) -> bool:
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


def docker_engine_available() -> tuple[bool, str]:
    """(True, which engine and where) when a Docker-API endpoint answers, else (False, the reason and fix).

    The endpoint is `DOCKER_HOST`, else the `make containers` podman stack, else the default
    Docker socket (`engine_endpoint`).
    """
    try:
        import docker  # noqa: F401  (optional on a device without an engine)
    except ImportError:
        return False, "the docker SDK is not installed: pip install docker==7.2.0"
    from docker.errors import DockerException

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


__all__ = [
    "MANAGED_LABEL",
    "STACK_DIR_ENV",
    "STACK_FILE",
    "ContainerStackError",
    "Say",
    "Stack",
    "docker_client",
    "docker_engine_available",
    "engine_endpoint",
    "forget_answers",
    "load_stack",
    "podman_env",
    "run_podman",
    "socket_answers",
    "stack_dir",
]
