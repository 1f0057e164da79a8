"""The embedded local cloud: one HTTP service (hub + studio) on 127.0.0.1, state in the workspace.

Python API::

    from helpers import localcloud
    info = localcloud.ensure_running(workspace)   # {"url", "pid", "port", "running", "started", ...}
    localcloud.status(workspace)                  # {"running": bool, ...}
    localcloud.stop(workspace)                    # SIGTERM, wait, state flushed

Command line: ``python -m helpers.localcloud start|status|stop|credentials --workspace DIR`` prints JSON.
Clients find a running stand-in through `helpers.endpoints` (service.json, credentials.json), never through this package.
Files under ``WORKSPACE/localcloud/``: ``state.db`` (SQLite, WAL), ``files/``, ``service.json``,
``credentials.json`` (0600), ``service.log``.
"""
from helpers.localcloud.credentials import credentials
from helpers.localcloud.service import ensure_running, hub_credentials, status, stop

__all__ = ["credentials", "ensure_running", "status", "stop", "hub_credentials"]
