"""`LocalCloudClient`: what the clients of the embedded local cloud (`LocalHub`, `LocalStudio`) share.

Finds the service in the workspace (`service.json`, or a fixed URL), optionally starts it, and
sends each call through `helpers.http.call`; when the service cannot be reached and
no URL was fixed, it re-reads `service.json` once (the local cloud restarted on another port).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from helpers.http import call
from helpers.localcloud import service


class LocalCloudClient:
    """Base of the local cloud's clients; `LocalHub` and `LocalStudio` document the arguments.

    Subclasses override `_load()` to read their credentials, then call `super()._load()` (it
    finds the service), and `_headers()` to sign each call.

    Attributes:
        workspace: the resolved workspace folder.
        url: the service base URL, without a trailing slash.
        timeout: seconds per HTTP call.
    """

    def __init__(self, workspace: str | Path | None, url: str | None, timeout: float, autostart: bool):
        self.workspace = service.resolve_workspace(workspace)
        if autostart:
            service.ensure_running(self.workspace)
        self._fixed_url = url.rstrip("/") if url else None
        self.timeout = timeout
        self._session = requests.Session()
        self._load()

    def _load(self) -> None:
        """(Re)read the service URL; subclasses read their credentials first, then call this."""
        self.url: str = service.service_url(self.workspace, self._fixed_url)

    def _headers(self) -> dict[str, str]:
        """Auth headers for one call (fresh per call: SAS tokens expire)."""
        raise NotImplementedError

    def _reload_url(self) -> str | None:
        old = self.url
        self._load()
        return self.url if self.url != old else None

    def _req(self, method: str, path: str, **kw: Any) -> requests.Response:
        return call(self._session, method, self.url + path, headers=self._headers, timeout=self.timeout,
                    on_unreachable=None if self._fixed_url else self._reload_url, **kw)


__all__ = ["LocalCloudClient"]
