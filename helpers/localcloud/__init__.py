"""The embedded local cloud: one HTTP service (hub + studio) on 127.0.0.1, state in the workspace.

Python API::

    from helpers import localcloud
    info = localcloud.ensure_running(workspace)   # {"url", "pid", "port", "running", "started", ...}
    localcloud.status(workspace)                  # {"running": bool, ...}
    localcloud.stop(workspace)                    # SIGTERM, wait, state flushed

Command line: ``python -m helpers.localcloud start|status|stop --workspace DIR`` prints JSON.
Files under ``WORKSPACE/localcloud/``: ``state.db`` (SQLite, WAL), ``files/``, ``service.json``,
``credentials.json`` (0600), ``service.log``.
"""
from helpers.localcloud.service import (
    ensure_running,
    read_credentials,
    read_service,
    status,
    stop,
)

__all__ = ["ensure_running", "status", "stop", "read_credentials", "read_service"]
