"""Every setting a tool needs to reach a workspace's stand-ins (`python -m helpers.localcloud credentials`).

The hub's service connection string and the CA file to trust for its host (what `azure-iot-hub`
and `az iot` take), and the studio's API key, project id and the two endpoints the `edgeimpulse`
SDK reads from its environment (`EI_API_KEY`, `EI_API_ENDPOINT`, `EI_INGESTION_ENDPOINT`), as
JSON or as `NAME=value` lines (`--format env`) for a `.env` file or `eval "$(...)"`.

Another stand-in adds its settings with `extra` (environment name -> value), e.g.
`credentials(ws, extra={"IOTHUB_EVENTHUB_CONNECTION_STRING": cs})`: they join the `env` mapping
and the `--format env` lines.
"""
from __future__ import annotations

import shlex
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from helpers.endpoints import cloud_dir, local_eventhub, read_credentials, read_service, resolve_workspace
from helpers.errors import ConfigError
from helpers.localcloud.service import hub_credentials, status

# the environment names, in the order `--format env` prints them
ENV_NAMES = ("IOTHUB_CONNECTION_STRING", "IOTHUB_CA_FILE", "EI_API_KEY", "EI_PROJECT_ID", "EI_API_ENDPOINT",
             "EI_INGESTION_ENDPOINT", "IOTHUB_EVENTHUB_CONNECTION_STRING")


def _project_id(ws: Path, url: str | None, api_key: str, running: bool) -> int | None:
    """The studio's project id: asked of the running studio (as `edgeimpulse` does), else read from its state."""
    if running and url:
        resp = requests.get(f"{url}/v1/api/projects", headers={"x-api-key": api_key}, timeout=10)
        resp.raise_for_status()
        return int(resp.json()["projects"][0]["id"])
    db = cloud_dir(ws) / "state.db"
    if not db.is_file():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='studio_project_id'").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()
    return int(row[0]) if row else None


def credentials(workspace: str | Path | None = None, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The hub's and the studio's settings of this workspace's stand-ins (the local stand-in's own keys only).

    Returns:
        `hub_credentials()`'s keys (`service_connection_string`, `host_name`, `hub_url`, `ca_file`,
        `workspace`, `note`) and `studio_api_key`, `studio_project_id` (None until the studio has
        answered once), `ei_api_endpoint`, `ei_ingestion_endpoint`, `running`, and `env`: each
        setting under the name tools read (`ENV_NAMES`, then `extra`'s).

    Raises:
        ConfigError: the local cloud never started in this workspace, or `extra` has a bad name.
    """
    ws = resolve_workspace(workspace)
    out = hub_credentials(ws)
    api_key = read_credentials(ws)["studio_api_key"].get_secret_value()
    url = (read_service(ws) or {}).get("url")
    running = bool(status(ws).get("running"))
    pid = _project_id(ws, url, api_key, running)
    out.update(studio_api_key=api_key, studio_project_id=pid, ei_api_endpoint=f"{url}/v1" if url else None,
               ei_ingestion_endpoint=url, running=running)
    if not running:
        out["note"] += ("; the local cloud is not running: the endpoints are those of its last run "
                        "(python -m helpers.localcloud start --workspace ... starts it on the same port when free)")
    env = {"IOTHUB_CONNECTION_STRING": out["service_connection_string"], "IOTHUB_CA_FILE": out["ca_file"],
           "EI_API_KEY": api_key, "EI_PROJECT_ID": None if pid is None else str(pid),
           "EI_API_ENDPOINT": out["ei_api_endpoint"], "EI_INGESTION_ENDPOINT": url}
    # IoT Hub's built-in Event Hubs-compatible endpoint (telemetry, azure-eventhub); None when it did not start
    try:
        out["eventhub_connection_string"] = local_eventhub(ws).connection_string.get_secret_value()
    except ConfigError as exc:
        out["eventhub_connection_string"], out["eventhub_error"] = None, str(exc)
    env["IOTHUB_EVENTHUB_CONNECTION_STRING"] = out["eventhub_connection_string"]
    for name, value in (extra or {}).items():
        if not name.isidentifier() or name.upper() != name:
            raise ConfigError(f"credentials: extra setting {name!r} must be an upper-case environment name")
        env[name] = value
    out["env"] = env
    return out


def env_lines(creds: Mapping[str, Any]) -> str:
    """`NAME=value` lines (shell-quoted) of `credentials()`'s `env`; unknown values are left out."""
    return "".join(f"{name}={shlex.quote(str(value))}\n" for name, value in creds["env"].items() if value is not None)


__all__ = ["ENV_NAMES", "credentials", "env_lines"]
