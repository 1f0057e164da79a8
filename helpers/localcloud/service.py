"""Start, find and stop the local cloud process; its files under `WORKSPACE/localcloud/`.

The service runs detached (`python -m helpers.localcloud serve`) in its own session, so a
notebook kernel or a CLI call can exit and leave it running. `ensure_running()` is idempotent
(an exclusive file lock around check-and-spawn), reuses the previous port when it is free so
device connection strings stay valid across restarts, and waits until the service answers.
`stop()` sends SIGTERM, waits for the clean shutdown (WAL checkpoint, service.json marked
stopped) and only then escalates to SIGKILL.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from helpers.config import Secret, mask, parse_connection_string
from helpers.endpoints import cloud_dir, read_credentials, read_service, resolve_workspace
from helpers.errors import ServiceUnavailable
from helpers.localcloud.common import tls
from helpers.localcloud.common.auth import SERVICE_POLICY
from helpers.localcloud.common.clock import now_iso
from helpers.protocol.sas import generate_sas_token, new_key

HOST = "127.0.0.1"
DEFAULT_MAX_BODY_MB = 20.0
_CHILDREN: dict[int, subprocess.Popen] = {}


#: WORKSPACE/localcloud/ holds the service key, device keys and manifests with API keys: owner-only.
DIR_MODE, FILE_MODE = 0o700, 0o600


def make_cloud_dir(workspace: str | Path | None) -> Path:
    """WORKSPACE/localcloud/, created (or tightened) owner-only."""
    d = cloud_dir(workspace)
    d.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(d, DIR_MODE)
    return d


def secure_state(workspace: str | Path | None) -> int:
    """Make WORKSPACE/localcloud/ and everything under it owner-only (directories 0700, files 0600).

    The service runs it on every start, so a workspace made by an older version or loosened by
    hand is tightened; symlinks are left alone (chmod would follow them out of the folder).

    Returns:
        How many modes it changed.
    """
    changed = 0
    root = make_cloud_dir(workspace)
    for dirpath, dirnames, filenames in os.walk(root):
        for name, want in [(n, DIR_MODE) for n in dirnames] + [(n, FILE_MODE) for n in filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode) or stat.S_IMODE(st.st_mode) == want:
                continue
            os.chmod(path, want)
            changed += 1
    return changed


def service_file(workspace: str | Path | None) -> Path:
    return cloud_dir(workspace) / "service.json"


def credentials_file(workspace: str | Path | None) -> Path:
    return cloud_dir(workspace) / "credentials.json"


def _write_json_atomic(path: Path, data: dict[str, Any], mode: int = FILE_MODE) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_service(workspace: Path, data: dict[str, Any]) -> None:
    _write_json_atomic(service_file(workspace), data)


def ensure_credentials(workspace: Path, port: int, hub_host: str | None = None) -> dict[str, Secret]:
    """Create credentials.json (0600) on first start; afterwards keep the keys, update the host.

    The service connection string's HostName is `hub_host` (`ADDRESS:HUB_PORT`, the hub's HTTPS
    endpoint, which the service SDK reaches as `https://HostName`), or `127.0.0.1:<port>` when
    no HTTPS port is given.
    """
    path = credentials_file(workspace)
    make_cloud_dir(workspace)
    if path.is_file():
        raw = json.loads(path.read_text())
        parts = parse_connection_string(raw["service_connection_string"])
        key = parts["SharedAccessKey"]
        api_key = raw["studio_api_key"]
    else:
        key = new_key()
        api_key = "ei_" + secrets.token_hex(16)
    cs = f"HostName={hub_host or f'{HOST}:{port}'};SharedAccessKeyName={SERVICE_POLICY};SharedAccessKey={key}"
    _write_json_atomic(path, {"service_connection_string": cs, "studio_api_key": api_key}, mode=0o600)
    return read_credentials(workspace)


def _port_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as uvicorn binds: SO_REUSEADDR ignores TIME_WAIT leftovers, never a live listener
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not a service
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _auth_headers(workspace: Path) -> dict[str, str]:
    creds = read_credentials(workspace)
    parts = parse_connection_string(creds["service_connection_string"])
    token = generate_sas_token(parts["HostName"], parts["SharedAccessKey"], SERVICE_POLICY, ttl_s=300)
    return {"Authorization": token.get_secret_value()}


def _health(workspace: Path, url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        resp = requests.get(f"{url}/api/health", headers=_auth_headers(workspace), timeout=timeout)
    except requests.RequestException:
        return None
    if resp.status_code != 200:
        return None
    return resp.json()


def status(workspace: str | Path | None = None) -> dict[str, Any]:
    """`{"running", "url", "pid", "port", "workspace", ...}` of this workspace's local cloud."""
    ws = resolve_workspace(workspace)
    info = read_service(ws) or {}
    pid = info.get("pid")
    running = False
    if _pid_alive(pid) and info.get("url"):
        health = _health(ws, info["url"])
        running = bool(health) and health.get("pid") == pid
    return {**info, "running": running, "workspace": str(ws)}


@contextmanager
def _lock(ws: Path) -> Iterator[None]:
    d = make_cloud_dir(ws)
    with os.fdopen(os.open(d / ".lock", os.O_WRONLY | os.O_CREAT, FILE_MODE), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log_tail(ws: Path, n: int = 20) -> str:
    log = cloud_dir(ws) / "service.log"
    if not log.is_file():
        return "(no log)"
    return mask("\n".join(log.read_text(errors="replace").splitlines()[-n:]))


def ensure_running(workspace: str | Path | None = None, port: int | None = None, max_body_mb: float | None = None,
                   timeout_s: float = 30.0, hub_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the local cloud for `workspace` unless it already runs; return its status dict.

    Args:
        workspace: the workspace folder (default: settings).
        port: a port to use; default the previous run's port when free, else a free one.
        max_body_mb: request body limit in MB (default 20, env EDGELOOP_LOCALCLOUD_MAX_BODY_MB).
        timeout_s: how long to wait for the service to answer.
        hub_settings: the hub's `throttle_rps`, `throttle_burst`, `deployment_timing` for a new
            start (see `python -m helpers.localcloud start --help`; default from the environment).

    Raises:
        ServiceUnavailable: the service did not come up; the message carries its log tail.
    """
    ws = resolve_workspace(workspace)
    with _lock(ws):
        current = status(ws)
        if current["running"]:
            return {**current, "started": False}
        previous = current.get("port")
        previous_hub = current.get("hub_port")
        address = tls.hub_address(ws)
        last_error = ""
        for attempt in range(3):
            if port is not None:
                chosen = port
            elif previous and attempt == 0 and _port_free(int(previous)):
                chosen = int(previous)
            else:
                chosen = _free_port()
            if previous_hub and attempt == 0 and _port_free(int(previous_hub), address):
                hub_port = int(previous_hub)
            else:
                hub_port = _free_port(address)
            ensure_credentials(ws, chosen, hub_host=f"{address}:{hub_port}")
            proc = _spawn(ws, chosen, max_body_mb, hub_port, hub_settings)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    last_error = f"exited with code {proc.returncode}"
                    break
                info = read_service(ws) or {}
                if info.get("pid") == proc.pid and info.get("running"):
                    if _health(ws, info["url"]):
                        return {**status(ws), "started": True}
                time.sleep(0.1)
            else:
                _terminate(proc.pid, grace_s=5)
                last_error = f"did not answer within {timeout_s:.0f} s"
            if port is not None:
                break
        raise ServiceUnavailable(
            f"the local cloud {last_error}; see {cloud_dir(ws) / 'service.log'}:\n{_log_tail(ws)}", 0
        )


def _spawn(ws: Path, port: int, max_body_mb: float | None, hub_port: int | None = None,
           hub_settings: dict[str, Any] | None = None) -> subprocess.Popen:
    d = make_cloud_dir(ws)
    log = os.fdopen(os.open(d / "service.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "ab")
    cmd = [sys.executable, "-m", "helpers.localcloud", "serve", "--workspace", str(ws), "--port", str(port)]
    if max_body_mb is not None:
        cmd += ["--max-body-mb", str(max_body_mb)]
    if hub_port is not None:
        cmd += ["--hub-port", str(hub_port)]
    for key, value in (hub_settings or {}).items():
        if key not in ("throttle_rps", "throttle_burst", "deployment_timing"):
            raise ValueError(f"hub_settings: unknown {key!r}; use throttle_rps, throttle_burst, deployment_timing")
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=str(ws)
        )
    finally:
        log.close()
    _CHILDREN[proc.pid] = proc
    return proc


def _terminate(pid: int, grace_s: float) -> bool:
    """SIGTERM, wait up to `grace_s`, then SIGKILL. True when it ended on SIGTERM."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _CHILDREN.pop(pid, None)
        return True
    deadline = time.monotonic() + grace_s
    clean = True
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            clean = False
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            kill_deadline = time.monotonic() + 5
            while _pid_alive(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)
            break
        time.sleep(0.05)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)
    return clean


def stop(workspace: str | Path | None = None, timeout_s: float = 15.0) -> dict[str, Any]:
    """Stop this workspace's local cloud (SIGTERM, wait, SIGKILL after `timeout_s`).

    Returns the status dict with `stopped` (whether a process was stopped) and `clean`.
    """
    ws = resolve_workspace(workspace)
    with _lock(ws):
        info = read_service(ws) or {}
        pid = info.get("pid")
        if not _pid_alive(pid):
            return {**info, "running": False, "stopped": False, "clean": True, "workspace": str(ws)}
        clean = _terminate(int(pid), timeout_s)
        if not clean:  # it could not flush service.json itself
            write_service(ws, {**info, "running": False, "stopped_at": now_iso()})
        return {**(read_service(ws) or {}), "running": False, "stopped": True, "clean": clean, "workspace": str(ws)}


def hub_credentials(workspace: str | Path | None = None) -> dict[str, Any]:
    """What an IoT Hub tool needs to reach this workspace's local hub (the stand-in only).

    Returns `{"service_connection_string", "hub_url", "host_name", "ca_file", "workspace"}`:
    the plain connection string (this is the local stand-in's own key, made in this workspace;
    an Azure connection string never passes here) and the CA file to trust for that host.

    Raises:
        ConfigError: the local cloud never started in this workspace.
    """
    ws = resolve_workspace(workspace)
    creds = read_credentials(ws)
    cs = creds["service_connection_string"].get_secret_value()
    host = parse_connection_string(cs)["HostName"]
    return {"service_connection_string": cs, "host_name": host, "hub_url": f"https://{host}",
            "ca_file": str(tls.ca_file(ws)), "workspace": str(ws),
            "note": "local stand-in only; trust ca_file for this host alone (e.g. REQUESTS_CA_BUNDLE for that one tool's process)"}
