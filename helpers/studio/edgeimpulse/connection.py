"""The connection to an Edge Impulse project: the generated Studio API client, its errors, the endpoints.

`EdgeImpulseConnection` holds what every part of `EdgeImpulseStudio` calls through: the
`edgeimpulse-api` client (`_call`, `_raw`), Edge Impulse's failures as `helpers.errors`
exceptions, the project id, and the endpoints (Studio API, ingestion, and the model registry,
which is the workspace's local cloud for a real project too). It finds the local studio through
`helpers.endpoints` and never starts it.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

from helpers.config import Secret, load_settings, mask
from helpers.endpoints import local_studio as local_studio_endpoint
from helpers.errors import ConfigError, Forbidden, NotFound, ServiceError, ServiceUnavailable, Unauthorized
from helpers.studio.local import LocalStudio


class EdgeImpulseError(ServiceError):
    """Edge Impulse answered `{"success": false, "error": ...}`; the message is Edge Impulse's."""


class EdgeImpulseNotFound(EdgeImpulseError, NotFound):
    """The sample, job or block the call named does not exist (an Edge Impulse `success: false`)."""


class TrainingFailed(EdgeImpulseError):
    """A training job finished unsuccessfully or was cancelled on timeout; the message ends with its log."""


def enum_text(x: Any) -> str:
    """An enum field's text (the generated models keep some enums as str)."""
    return str(getattr(x, "value", x))


class EdgeImpulseConnection:
    """A project's Studio API client and endpoints; `EdgeImpulseStudio` documents the arguments."""

    def __init__(self, workspace: str | Path | None = None, target: str = "local", api_key: Secret | str | None = None,
                 project_id: int | str | None = None, api_url: str | None = None, ingestion_url: str | None = None,
                 timeout: float = 30.0):
        if target not in ("local", "edgeimpulse"):
            raise ValueError(f"target must be 'local' or 'edgeimpulse', got {target!r}")
        self.name = target
        self.target = target
        self.timeout = timeout
        self.settings = load_settings(workspace)
        self.workspace = self.settings.workspace
        self._fixed = {"api_url": api_url, "ingestion_url": ingestion_url}
        self._lock = threading.Lock()
        self._client: Any = None
        self._registry_client: LocalStudio | None = None
        if target == "local":
            self.api_key = Secret(api_key or local_studio_endpoint(self.workspace).api_key, "EI_API_KEY")
        else:
            key = api_key or self.settings.ei_api_key
            if not key:
                raise ConfigError("EI_API_KEY is not set: export the Edge Impulse project's API key (Dashboard > Keys) "
                                  "or add `EI_API_KEY=...` to .env")
            self.api_key = Secret(key, "EI_API_KEY")
        self._set_urls()
        pid = project_id if project_id not in (None, "") else (self.settings.ei_project_id if target == "edgeimpulse" else None)
        try:
            self._project_id: int | None = int(pid) if pid not in (None, "") else None
        except ValueError:
            raise ConfigError(f"EI_PROJECT_ID must be the project's number (Dashboard > Project info), got {pid!r}") from None

    def _set_urls(self) -> None:
        if self.target == "local":
            endpoint = local_studio_endpoint(self.workspace)
            self.api_url = (self._fixed["api_url"] or endpoint.url + "/v1").rstrip("/")
            self.url = (self._fixed["ingestion_url"] or endpoint.ingestion_url).rstrip("/")
        else:
            self.api_url = (self._fixed["api_url"] or self.settings.ei_studio_url.rstrip("/") + "/v1").rstrip("/")
            self.url = (self._fixed["ingestion_url"] or self.settings.ei_ingestion_url).rstrip("/")

    def __repr__(self) -> str:
        return f"EdgeImpulseStudio(target={self.target!r}, api_url={self.api_url!r}, api_key={self.api_key!r})"

    # ------------------------------------------------------------ the model registry (an extension)
    @property
    def registry(self) -> LocalStudio:
        """The workspace's local cloud, which keeps the model registry and snapshots (extensions)."""
        with self._lock:
            if self._registry_client is None:
                self._registry_client = LocalStudio(self.workspace)
            return self._registry_client

    def device_key(self, model_version: int | None = None) -> Secret:
        """The API key a device is given (its `EI_API_KEY`): it may only upload samples and, with
        `model_version`, download that model version; never the project's management key.

        The local studio hands it out through its API (`POST /api/devicekeys`), as Edge Impulse
        creates project API keys with a role.

        Raises:
            ConfigError: a real project without `EI_DEVICE_API_KEY` (an ingestion-only key).
        """
        if self.target == "local" or model_version is not None:
            # A runner downloads its model from the model registry, which is the workspace's local
            # cloud also for a real project: its key there may download that version only.
            return self.registry.device_key(model_version)
        key = self.settings.ei_device_api_key
        if not key:
            raise ConfigError("EI_DEVICE_API_KEY is not set: devices get a key that may only upload data, never the "
                              "project's admin key; create one with the ingestion role (Dashboard > Keys) and export it")
        return key

    @property
    def model_url(self) -> str:
        """Where a runner downloads its model version (its `STUDIO_URL`): the model registry, this
        workspace's local cloud, for the local studio and for a real project alike."""
        return self.url if self.target == "local" else self.registry.url

    # ------------------------------------------------------------ the generated client
    @property
    def client(self) -> Any:
        """The `edgeimpulse_api.ApiClient` (imported on first use: the package takes seconds to import)."""
        with self._lock:
            if self._client is None:
                import edgeimpulse_api as api  # takes seconds to import: on first use

                config = api.Configuration(host=self.api_url)
                if self.target == "local":
                    # loopback: fail fast and let _call follow a restarted local cloud (the client's own
                    # default, 10 retries with exponential backoff, waits minutes for a port nobody serves)
                    config.retries = urllib3.Retry(total=2, read=0, backoff_factor=0.1)
                config.api_key["ApiKeyAuthentication"] = self.api_key.get_secret_value()
                client = api.ApiClient(config)
                client.user_agent += " edgeloop"
                self._client = client
                self._apis = {name: getattr(api, name)(client) for name in
                              ("ProjectsApi", "RawDataApi", "ImpulseApi", "DSPApi", "JobsApi", "LearnApi", "DeploymentApi")}
            return self._client

    def api(self, name: str) -> Any:
        """One generated API class bound to this studio's client, e.g. `api("RawDataApi")`."""
        self.client  # noqa: B018 (builds the APIs)
        return self._apis[name]

    def _call(self, api_name: str, method: str, *args: Any, **kw: Any) -> Any:
        """Call a generated API method; Edge Impulse's failures become `helpers.errors` exceptions, once."""
        from edgeimpulse_api.exceptions import ApiException  # the generated client takes seconds to import: on use

        for attempt in (0, 1):
            fn = getattr(self.api(api_name), method)
            try:
                kw.setdefault("_request_timeout", self.timeout)
                return fn(*args, **kw)
            except ApiException as e:
                raise self._http_error(e, f"{api_name}.{method}") from None
            except Urllib3Error as e:
                if attempt == 0 and self._reconnect():
                    continue
                raise ServiceUnavailable(mask(f"{api_name}.{method}: {self.api_url} cannot be reached ({type(e).__name__}); "
                                              + ("is the local cloud running? `python -m helpers.localcloud start`"
                                                 if self.target == "local" else "check the network and EI_STUDIO_URL")), 0) from None
            except Exception as e:  # the generated client raises success:false as a bare Exception
                if type(e) is not Exception:
                    raise
                raise self._ei_error(str(e), f"{api_name}.{method}") from None
        raise AssertionError("unreachable")

    def _reconnect(self) -> bool:
        """The local cloud restarted on another port: point the client at it (True when the URL changed)."""
        if self.target != "local" or self._fixed["api_url"]:
            return False
        old = self.api_url
        self._set_urls()
        if self.api_url == old:
            return False
        with self._lock:
            self._client = None
        return True

    @staticmethod
    def _ei_error(message: str, where: str) -> EdgeImpulseError:
        text = mask(f"{where}: {message}")
        low = message.lower()
        # Edge Impulse's own "No sample found with ID ..." (which the `edgeimpulse` SDK matches) included
        if any(k in low for k in ("does not exist", "unknown job", "not found", "no sample found", "not in the impulse")):
            return EdgeImpulseNotFound(text, 200)
        return EdgeImpulseError(text, 200)

    @staticmethod
    def _http_error(e: Any, where: str) -> ServiceError:
        body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else (e.body or "")
        try:
            parsed = json.loads(body)
            message = parsed.get("error") or parsed.get("message") or body
            field = parsed.get("field")
        except (ValueError, AttributeError):
            message, field = body[:300] or e.reason, None
        cls = {401: Unauthorized, 403: Forbidden, 404: NotFound}.get(e.status, ServiceUnavailable if e.status in (502, 503, 504) else ServiceError)
        return cls(mask(f"{where}: HTTP {e.status}: {message}"), e.status, field)

    def _raw(self, api_name: str, method: str, *args: Any, **kw: Any) -> bytes:
        """A download (image, model file): the response bytes, unparsed."""
        resp = self._call(api_name, method, *args, _preload_content=False, **kw)
        data = resp.data
        if resp.status != 200:
            raise ServiceError(f"{api_name}.{method}: HTTP {resp.status}", resp.status)
        ctype = resp.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            body = json.loads(data)
            if isinstance(body, dict) and body.get("success") is False:
                raise self._ei_error(str(body.get("error")), f"{api_name}.{method}")
        return data

    @property
    def project_id(self) -> int:
        """The project's id: EI_PROJECT_ID, else the one project this API key belongs to."""
        if self._project_id is None:
            projects = self._call("ProjectsApi", "list_projects").projects
            if not projects:
                raise ConfigError("this API key has no project; create a project API key in the Edge Impulse dashboard")
            self._project_id = int(projects[0].id)
        return self._project_id

    # ------------------------------------------------------------ project
    def project_info(self) -> Any:
        """`ProjectsApi.get_project_info` (the generated `ProjectInfoResponse`)."""
        return self._call("ProjectsApi", "get_project_info", self.project_id)

    def key_role(self) -> str:
        """The API key's role: `admin`, or `ingestion_deployment` for a device key."""
        return enum_text(self._call("ProjectsApi", "get_current_api_key_info").role)


__all__ = ["EdgeImpulseConnection", "EdgeImpulseError", "EdgeImpulseNotFound", "TrainingFailed", "enum_text"]
