"""What the edge agent supervises modules with, whatever runs them: the launch, the handle,
stopping, process and port helpers shared by the process and container runtimes."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from helpers.errors import ConfigError

log = logging.getLogger("helpers.device.runtime")

#: The container port the runner serves on; the process runtime stands for it with a host port.
CONTAINER_PORT = 4912
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


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is absent or (mid-write, corrupt) unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


__all__ = [
    "CONTAINER_PORT",
    "LOG_MAX_BYTES",
    "LOG_NAME",
    "ModuleHandle",
    "ModuleLaunch",
    "RuntimeUnavailable",
    "free_port",
    "kill_group",
    "pid_alive",
    "port_free",
    "process_start_ticks",
    "read_json",
    "stop_handles",
    "utc_now",
]
