"""`EdgeImpulseStudio`: the one `Studio`, on Edge Impulse's official clients.

    studio = get_studio()                 # the workspace's local studio (the stand-in)
    studio = get_studio("edgeimpulse")    # a real project: EI_API_KEY (+ EI_PROJECT_ID)

Uploads go through the `edgeimpulse` SDK (`edgeimpulse.data.upload_samples`, Edge Impulse's
ingestion service); everything else through the generated `edgeimpulse-api` client
(`ProjectsApi`, `RawDataApi`, `ImpulseApi`, `DSPApi`, `JobsApi`, `LearnApi`, `DeploymentApi`).
Pointed at the local studio (`target="local"`) the endpoints are the workspace's local cloud
(`{url}/v1` and `{url}`) and the key its studio API key; pointed at Edge Impulse they are
`EI_STUDIO_URL/v1` and `EI_INGESTION_URL` with `EI_API_KEY`. The code is the same.

Edge Impulse answers many failures with HTTP 200 and `{"success": false, "error": "..."}`; the
generated client raises them as a bare `Exception`, and this class raises them once as
`EdgeImpulseError` (a `ServiceError`; `NotFound` for an unknown sample or job) with Edge
Impulse's message. HTTP errors become the `helpers.errors` class of their status.

Two things have no Edge Impulse call and stay documented extensions of the workspace's local
cloud, whichever project the samples live in: the model registry (ONNX + model card, stages
candidate/production/retired: `register_model`, `models`, `get_model`, `download_model`,
`set_model_stage`) and dataset snapshots (`snapshot`, `get_snapshot`, `snapshots`; on a real
project the snapshot is computed from the project's samples here and kept in the workspace).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from helpers.config import Secret, load_settings, mask
from helpers.errors import ConfigError, Forbidden, NotFound, ServiceError, ServiceUnavailable, Unauthorized
from helpers.geometry import BBox
from helpers.studio.base import CATEGORIES, ModelVersion, Sample, Snapshot, SnapshotItem, UploadResult

LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9 _\-]{0,63}$")  # the studio's label rule
PAGE = 500  # samples per list_samples page
_SDK_LOCK = threading.Lock()  # the SDK reads its ingestion endpoint from a module global


class EdgeImpulseError(ServiceError):
    """Edge Impulse answered `{"success": false, "error": ...}`; the message is Edge Impulse's."""


class EdgeImpulseNotFound(EdgeImpulseError, NotFound):
    """The sample, job or block the call named does not exist (an Edge Impulse `success: false`)."""


class TrainingFailed(EdgeImpulseError):
    """A training job finished unsuccessfully or was cancelled on timeout; the message ends with its log."""


def _decode_meta(meta: dict[str, str] | None) -> dict[str, Any]:
    """Edge Impulse metadata values are strings; JSON lists/objects/literals are decoded back."""
    out: dict[str, Any] = {}
    for k, v in (meta or {}).items():
        if isinstance(v, str) and v and (v[:1] in "[{-0123456789" or v in ("true", "false", "null")):
            try:
                decoded = json.loads(v)
            except json.JSONDecodeError:
                decoded = v
            # numbers only where the text is exactly how JSON writes that number ("7", not "007" or "1e3")
            if not isinstance(decoded, (int, float)) or isinstance(decoded, bool) or json.dumps(decoded) == v:
                out[k] = decoded
                continue
        out[k] = v
    return out


def _encode_meta(meta: dict[str, Any] | None) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}


def _value(x: Any) -> str:
    """An enum field's text (the generated models keep some enums as str)."""
    return str(getattr(x, "value", x))


def _iso(ts: Any) -> str | None:
    if ts is None:
        return None
    return ts.isoformat() if hasattr(ts, "isoformat") else str(ts)


def _int_box(b: BBox | dict[str, Any]) -> dict[str, Any]:
    d = b.to_dict() if isinstance(b, BBox) else dict(b)
    return {"label": str(d["label"]), "x": int(round(float(d["x"]))), "y": int(round(float(d["y"]))),
            "width": max(1, int(round(float(d["width"])))), "height": max(1, int(round(float(d["height"]))))}


class EdgeImpulseStudio:
    """The `Studio` protocol on Edge Impulse's Studio API, for the local stand-in or a real project.

    Args:
        workspace: workspace folder (default: settings); its local cloud holds the model
            registry, and is the project itself for `target="local"`.
        target: "local" (the workspace's local studio) or "edgeimpulse" (a real project).
        api_key: the project API key (default: credentials.json for local, EI_API_KEY otherwise).
        project_id: default: EI_PROJECT_ID, else the key's project (`ProjectsApi.list_projects`).
        api_url: Studio API base, ending in /v1 (default: local cloud URL + /v1, or EI_STUDIO_URL + /v1).
        ingestion_url: ingestion base (default: the local cloud URL, or EI_INGESTION_URL).
        timeout: seconds per HTTP call.
        autostart: start the workspace's local cloud when it is not running.

    Attributes:
        url: the ingestion base URL devices upload to (their `STUDIO_URL`).
        api_key: the project's management key (`Secret`); devices get `device_key()` instead.
        project_id: the project's id.
    """

    def __init__(self, workspace: str | Path | None = None, target: str = "local", api_key: Secret | str | None = None,
                 project_id: int | str | None = None, api_url: str | None = None, ingestion_url: str | None = None,
                 timeout: float = 30.0, autostart: bool = False):
        if target not in ("local", "edgeimpulse"):
            raise ValueError(f"target must be 'local' or 'edgeimpulse', got {target!r}")
        self.name = target
        self.target = target
        self.timeout = timeout
        self.settings = load_settings(workspace)
        self.workspace = self.settings.workspace
        self._autostart = autostart
        self._fixed = {"api_url": api_url, "ingestion_url": ingestion_url}
        self._lock = threading.Lock()
        self._client: Any = None
        self._registry_client: Any = None
        if target == "local":
            from helpers.localcloud import service

            if autostart:
                service.ensure_running(self.workspace)
            self.api_key = Secret(api_key or service.read_credentials(self.workspace)["studio_api_key"], "EI_API_KEY")
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
            from helpers.localcloud import service

            base = service.service_url(self.workspace, None)
            self.api_url = (self._fixed["api_url"] or base + "/v1").rstrip("/")
            self.url = (self._fixed["ingestion_url"] or base).rstrip("/")
        else:
            self.api_url = (self._fixed["api_url"] or self.settings.ei_studio_url.rstrip("/") + "/v1").rstrip("/")
            self.url = (self._fixed["ingestion_url"] or self.settings.ei_ingestion_url).rstrip("/")

    def __repr__(self) -> str:
        return f"EdgeImpulseStudio(target={self.target!r}, api_url={self.api_url!r}, api_key={self.api_key!r})"

    def device_key(self, model_version: int | None = None) -> Secret:
        """The API key a device is given (its `EI_API_KEY`): it may only upload samples and, with
        `model_version`, download that model version; never the project's management key.

        Raises:
            ConfigError: a real project without `EI_DEVICE_API_KEY` (an ingestion-only key).
        """
        if self.target == "local":
            from helpers.localcloud.keys import device_key

            return device_key(self.api_key, model_version)
        if model_version is not None:
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
                import edgeimpulse_api as api

                config = api.Configuration(host=self.api_url)
                if self.target == "local":
                    # loopback: fail fast and let _call follow a restarted local cloud (the client's own
                    # default, 10 retries with exponential backoff, waits minutes for a port nobody serves)
                    import urllib3

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
        from edgeimpulse_api.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

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
        if "does not exist" in low or "unknown job" in low or "not found" in low or "not in the impulse" in low:
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
        return _value(self._call("ProjectsApi", "get_current_api_key_info").role)

    # ------------------------------------------------------------ samples
    def upload(self, files: Sequence[str | Path | tuple[str, bytes]], *, category: str = "training", label: str | None = None,
               boxes: dict[str, list[BBox]] | None = None, metadata: dict[str, Any] | None = None,
               device: str | None = None, disallow_duplicates: bool = False) -> list[UploadResult]:
        """Upload images with `edgeimpulse.data.upload_samples` (one `UploadResult` per file, in order).

        Content already in the project is never stored twice: the upload asks the ingestion
        service to refuse duplicates and reports them as `duplicate=True, duplicate_of=<id>`.
        `disallow_duplicates=True` also sets `error` on those results.

        Args:
            category: "training", "testing" or "split" (Edge Impulse's 80/20 by hash).
            label: the sample label; boxes: {file name: boxes in pixels}; metadata: JSON-able
                values (non-strings are sent JSON-encoded, Edge Impulse takes strings);
            device: stored as metadata `device`.
        """
        import edgeimpulse as ei
        from edgeimpulse.data.sample_type import Sample as EiSample

        from helpers.studio.ingestion import read_file_like

        if category not in CATEGORIES + ("split",):
            raise ValueError(f"category must be one of {CATEGORIES + ('split',)}, got {category!r}")
        meta = dict(metadata or {})
        if device is not None:
            meta["device"] = device
        items = [read_file_like(f) for f in files]
        samples = []
        for name, data in items:
            bs = (boxes or {}).get(name)
            samples.append(EiSample(data=io.BytesIO(data), filename=name, category=category, label=label,
                                    bounding_boxes=[_int_box(b) for b in bs] if bs is not None else None,
                                    metadata=_encode_meta(meta) or None))
        import requests

        for attempt in (0, 1):
            with _SDK_LOCK:
                saved = ei.INGESTION_ENDPOINT
                ei.INGESTION_ENDPOINT = self.url
                try:
                    resp = ei.data.upload_samples(samples, allow_duplicates=False, api_key=self.api_key.get_secret_value(),
                                                  timeout_sec=self.timeout, max_workers=1)  # ids in file order
                    break
                except (requests.ConnectionError, requests.Timeout) as e:
                    if attempt == 1 or not self._reconnect():
                        raise ServiceUnavailable(mask(f"upload: {self.url} cannot be reached ({type(e).__name__}); "
                                                      + ("is the local cloud running? `python -m helpers.localcloud start`"
                                                         if self.target == "local" else "check the network and EI_INGESTION_URL")),
                                                 0) from None
                    for smp, (_, data) in zip(samples, items):
                        smp.data = io.BytesIO(data)  # the failed attempt may have read the stream
                finally:
                    ei.INGESTION_ENDPOINT = saved
        by_name: dict[str, UploadResult] = {}
        for r in resp.successes:
            by_name[r.sample.filename] = UploadResult(filename=r.sample.filename, sample_id=int(r.sample_id))
        for r in resp.fails:
            by_name[r.sample.filename] = self._failed_upload(r, disallow_duplicates)
        return [by_name.get(name, UploadResult(filename=name, sample_id=None, error="no answer for this file")) for name, _ in items]

    @staticmethod
    def _failed_upload(r: Any, disallow: bool) -> UploadResult:
        err = str(r.error or "upload failed")
        low = err.lower()
        if "already exists" in low:
            dup = r.sample_id
            if dup is None and "(id " in low:
                dup = int(low.rsplit("(id ", 1)[1].split(")")[0])
            return UploadResult(filename=r.sample.filename, sample_id=None, duplicate=True,
                                duplicate_of=int(dup) if dup is not None else None, error=err if disallow else None)
        if "api key" in low or "x-api-key" in low or "unauthor" in low:
            raise Unauthorized(mask(f"upload {r.sample.filename}: {err}"), 401, "x-api-key")
        return UploadResult(filename=r.sample.filename, sample_id=None, error=err)

    def _list_pages(self, category: str, **filters: Any) -> Iterator[Any]:
        offset = 0
        while True:
            page = self._call("RawDataApi", "list_samples", self.project_id, category, limit=PAGE, offset=offset, **filters)
            yield from page.samples
            offset += len(page.samples)
            if not page.samples or offset >= page.total_count:
                return

    def label_queue(self) -> list[int]:
        """Ids of the samples still to label (`RawDataApi.get_object_detection_label_queue`), oldest first."""
        return sorted(int(s.id) for s in self._call("RawDataApi", "get_object_detection_label_queue", self.project_id).samples)

    def _sample(self, s: Any, unlabeled: set[int]) -> Sample:
        meta = _decode_meta(s.metadata)
        dims = s.image_dimensions
        boxes = [BBox(b.label, float(b.x), float(b.y), float(b.width), float(b.height)) for b in (s.bounding_boxes or [])]
        return Sample(id=int(s.id), filename=s.filename, category=_value(s.category), sha256=s.sha256_hash,
                      width=int(dims.width) if dims else 0, height=int(dims.height) if dims else 0, boxes=boxes,
                      label=s.label or None, labeled=int(s.id) not in unlabeled,
                      device=meta.get("device") if isinstance(meta.get("device"), str) else s.device_name,
                      captured_at=meta.get("captured_at") if meta.get("captured_at") is None else str(meta["captured_at"]),
                      created_at=_iso(s.created), metadata=meta)

    def samples(self, *, category: str | None = None, labeled: bool | None = None, label: str | None = None,
                device: str | None = None) -> list[Sample]:
        """Samples (oldest first), filtered by category, labeled state (the label queue), label and device."""
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
        filters: dict[str, Any] = {}
        if label is not None:
            filters["labels"] = json.dumps([label])
        if device is not None:
            filters["metadata"] = json.dumps([{"key": "device", "op": "eq", "values": [device]}])
        unlabeled = set(self.label_queue())
        cats = [category] if category else list(CATEGORIES)
        out = [self._sample(s, unlabeled) for c in cats for s in self._list_pages(c, **filters)]
        if labeled is not None:
            out = [s for s in out if s.labeled == labeled]
        return sorted(out, key=lambda s: s.id)

    def get_sample(self, sample_id: int) -> Sample:
        s = self._call("RawDataApi", "get_sample", self.project_id, int(sample_id)).sample
        return self._sample(s, set(self.label_queue()))

    def get_image(self, sample_id: int) -> bytes:
        """The image bytes as uploaded (`RawDataApi.get_sample_as_image`)."""
        return self._raw("RawDataApi", "get_sample_as_image", self.project_id, int(sample_id))

    def set_boxes(self, sample_id: int, boxes: list[BBox]) -> Sample:
        """Replace the boxes (whole pixels, as Edge Impulse stores them); the sample leaves the label queue."""
        from edgeimpulse_api.models import BoundingBox, SampleBoundingBoxesRequest

        req = SampleBoundingBoxesRequest(bounding_boxes=[BoundingBox(**_int_box(b)) for b in boxes])
        self._call("RawDataApi", "set_sample_bounding_boxes", self.project_id, int(sample_id), req)
        return self.get_sample(sample_id)

    def update_sample(self, sample_id: int, *, metadata: dict[str, Any] | None = None, category: str | None = None,
                      label: str | None = None, labeled: bool | None = None) -> Sample:
        """Merge-patch metadata (None deletes a key), move to a category, set the label, or put the
        sample back into (labeled=False) or take it out of (True) the label queue."""
        from edgeimpulse_api.models import EditSampleLabelRequest, MoveRawDataRequest, SetSampleMetadataRequest

        pid, sid = self.project_id, int(sample_id)
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
        if metadata is not None:
            current = self.get_sample(sid).metadata
            for k, v in metadata.items():
                if v is None:
                    current.pop(k, None)
                else:
                    current[k] = v
            self._call("RawDataApi", "set_sample_metadata", pid, sid, SetSampleMetadataRequest(metadata=_encode_meta(current)))
        if category is not None:
            self._call("RawDataApi", "move_sample", pid, sid, MoveRawDataRequest(new_category=category))
        if label is not None:
            self._call("RawDataApi", "edit_label", pid, sid, EditSampleLabelRequest(label=label))
        if labeled is False:
            self._call("RawDataApi", "move_to_labeling_queue", pid, sid)
        elif labeled is True:
            self.set_boxes(sid, self.get_sample(sid).boxes)
        return self.get_sample(sid)

    def delete_sample(self, sample_id: int) -> None:
        self._call("RawDataApi", "delete_sample", self.project_id, int(sample_id))

    # ------------------------------------------------------------ labels and splits
    def labels(self) -> list[str]:
        """The label set: labels in the data and those added with `add_label` (project metadata `labels`)."""
        info = self.project_info()
        added = (info.project.metadata or {}).get("labels") or []
        return sorted(set(info.data_summary.labels) | {str(x) for x in added})

    def add_label(self, name: str) -> list[str]:
        """Add a class before any box has it (kept in the project's metadata, `ProjectsApi.update_project`)."""
        from edgeimpulse_api.models import UpdateProjectRequest

        name = str(name).strip().lower()
        if not LABEL_RE.match(name):
            raise ValueError(f"label {name[:40]!r} must be a short lowercase name such as 'apple' (letters, digits, space, '_' or '-')")
        info = self.project_info()
        meta = dict(info.project.metadata or {})
        meta["labels"] = sorted({str(x) for x in meta.get("labels") or []} | {name})
        self._call("ProjectsApi", "update_project", self.project_id, UpdateProjectRequest(metadata=meta))
        return self.labels()

    def rebalance(self, test_fraction: float = 0.2) -> dict[str, int]:
        """Re-split training/testing by content hash (`RawDataApi.rebalance_dataset`).

        Edge Impulse always splits 80/20; another `test_fraction` is an extension only the local
        studio honours (header `x-test-fraction`). Returns {"training", "testing", "moved"}.
        """
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        if self.target != "local" and abs(test_fraction - 0.2) > 1e-9:
            raise ValueError("Edge Impulse's rebalance always splits 80/20; use test_fraction=0.2 on a real project")
        before = {s.id: s.category for s in self.samples()}
        resp = self._call("RawDataApi", "rebalance_dataset", self.project_id, _headers={"x-test-fraction": repr(float(test_fraction))})
        after = {s.id: s.category for s in self.samples()}
        moved = sum(1 for k, v in after.items() if before.get(k) not in (None, v))
        counts = {c: sum(1 for v in after.values() if v == c) for c in CATEGORIES}
        if resp.ratio is not None and resp.ratio.training is not None and self.target == "local":
            counts = {"training": int(resp.ratio.training), "testing": int(resp.ratio.testing or 0)}
        return {**counts, "moved": moved}

    # ------------------------------------------------------------ impulse and training
    def get_impulse(self) -> dict[str, Any] | None:
        """The impulse as settings: input size, resize mode, colour depth, architecture, epochs,
        learning rate, batch size, and the block ids; None when the project has none yet."""
        imp = self._call("ImpulseApi", "get_impulse", self.project_id).impulse
        if imp is None or not imp.learn_blocks:
            return None
        inp, dsp, learn = imp.input_blocks[0], imp.dsp_blocks[0], imp.learn_blocks[0]
        color = "RGB"
        cfg = self._call("DSPApi", "get_dsp_config", self.project_id, int(dsp.id))
        for group in cfg.config or []:
            for item in group.items:
                if item.param == "channels" and item.value:
                    color = "grayscale" if str(item.value).lower().startswith("gray") else "RGB"
        keras = self._call("LearnApi", "get_keras", self.project_id, int(learn.id))
        from helpers.localcloud.studio_v1 import EI_MODEL_ARCH

        layer = _value(keras.visual_layers[0].type) if keras.visual_layers else None
        custom = getattr(keras, "custom_parameters", None) or {}
        arch = custom.get("arch") or EI_MODEL_ARCH.get(layer, layer)
        budget = custom.get("time_budget_s")
        return {"input_size": int(inp.image_width), "resize_mode": _value(inp.resize_mode),
                "color": color, "arch": arch, "epochs": int(keras.training_cycles), "learning_rate": float(keras.learning_rate),
                "batch_size": int(keras.default_batch_size),
                "validation_split": None if keras.train_test_split is None else float(keras.train_test_split),
                "seed": int(custom["seed"]) if custom.get("seed") not in (None, "") else None,
                "time_budget_s": float(budget) if budget not in (None, "") else None,
                "impulse_id": int(imp.id), "dsp_id": int(dsp.id),
                "learn_id": int(learn.id), "learn_block_type": _value(learn.type)}

    def set_impulse(self, *, input_size: int = 160, color: str = "RGB", arch: str = "fomo-box", epochs: int = 30,
                    learning_rate: float = 0.005, batch_size: int = 16, resize_mode: str = "squash",
                    validation_split: float = 0.2, seed: int = 0, time_budget_s: float | None = None) -> dict[str, Any]:
        """Create the impulse (image input, image block, object-detection learn block) and set its
        colour depth and training settings: what notebooks 04 and 06 set. Returns `get_impulse()`.

        `validation_split` is Edge Impulse's validation set size (`trainTestSplit`); what Edge
        Impulse has no field for travels as the learn block's custom parameters: `arch` (an
        architecture of helpers.train without an Edge Impulse model), `seed` and `time_budget_s`
        (seconds of training before the best epoch so far is kept). The local job builds from
        these exactly the `TrainParams` the notebooks build (`helpers.localcloud.train_job.train_params`).
        """
        from edgeimpulse_api.models import (
            DSPConfigRequest,
            Impulse,
            ImpulseDspBlock,
            ImpulseInputBlock,
            ImpulseLearnBlock,
            SetKerasParameterRequest,
        )

        from helpers.localcloud.studio_v1 import ARCH_EI_MODEL, COLOR_EI

        if color not in COLOR_EI:
            raise ValueError(f"color must be one of {list(COLOR_EI)}, got {color!r}")
        if not 0 < validation_split < 1:
            raise ValueError(f"validation_split must be in (0, 1), got {validation_split}")
        if time_budget_s is not None and not time_budget_s > 0:
            raise ValueError(f"time_budget_s must be > 0 seconds or None, got {time_budget_s}")
        impulse = Impulse(
            id=1, name="Object detection", type="default", post_processing_blocks=[],
            input_blocks=[ImpulseInputBlock(id=1, type="image", name="Image data", title="Image data", image_width=input_size,
                                            image_height=input_size, resize_mode=resize_mode)],
            dsp_blocks=[ImpulseDspBlock(id=2, type="image", name="Image", axes=["image"], title="Image", implementation_version=1,
                                        input=1)],
            learn_blocks=[ImpulseLearnBlock(id=3, type="keras-object-detection", name="Object detection", dsp=[2],
                                            title="Object detection (Images)")])
        self._call("ImpulseApi", "create_impulse", self.project_id, impulse)
        imp = self._call("ImpulseApi", "get_impulse", self.project_id).impulse
        dsp_id, learn_id = int(imp.dsp_blocks[0].id), int(imp.learn_blocks[0].id)
        self._call("DSPApi", "set_dsp_config", self.project_id, dsp_id, DSPConfigRequest(config={"channels": COLOR_EI[color]}))
        keras: dict[str, Any] = {"training_cycles": int(epochs), "learning_rate": float(learning_rate), "batch_size": float(batch_size),
                                 "train_test_split": float(validation_split)}
        custom = {"seed": str(int(seed)), "time_budget_s": "" if time_budget_s is None else repr(float(time_budget_s))}
        if arch in ARCH_EI_MODEL:
            keras["visual_layers"] = [{"type": ARCH_EI_MODEL[arch]}]
        else:
            custom["arch"] = arch
        keras["custom_parameters"] = custom
        self._call("LearnApi", "set_keras", self.project_id, learn_id, SetKerasParameterRequest(**keras))
        return self.get_impulse() or {}

    def train(self, dest: str | Path, *, timeout_s: float = 3600.0, poll_s: float = 2.0,
              on_log: Callable[[str], Any] | None = None, register: bool = True,
              card_extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the impulse's training job, stream its log, fetch the model into `dest`.

        Starts `JobsApi.train_keras_job`, polls `get_job_status` every `poll_s` seconds and passes
        each new log line (`get_jobs_logs`) to `on_log` (the notebook's progress view); after
        `timeout_s` the job is cancelled (`cancel_job`) and `TrainingFailed` raised. On success the
        model is downloaded: from the local studio `model.onnx` + `model.json`
        (`LearnApi.download_learn_model`), from Edge Impulse the Linux `.eim` build
        (`DeploymentApi.download_build`, type runner-linux-x86_64) with a card of format "eim"
        whose labels and threshold the executable itself reports (`edge_impulse_linux`); with
        `register` either goes into the model registry and the version is returned, so the
        notebooks deploy it the same way.

        Returns:
            {"job_id", "model_dir", "format" ("onnx" | "eim"), "log" (lines), "version" (or None)}.
        """
        imp = self.get_impulse()
        if imp is None:
            raise ConfigError("the project has no impulse yet: call set_impulse(...) (notebook 04) first")
        pid, learn_id = self.project_id, imp["learn_id"]
        job_id = int(self._call("JobsApi", "train_keras_job", pid, learn_id, _set_keras_request()).id)
        seen = 0
        log: list[str] = []
        deadline = time.monotonic() + timeout_s

        def pump() -> None:
            nonlocal seen
            resp = self._call("JobsApi", "get_jobs_logs", pid, job_id)
            lines = [item.data.rstrip("\n") for item in reversed(resp.stdout)]  # served newest first
            for line in lines[seen:]:
                log.append(line)
                if on_log is not None:
                    on_log(line)
            seen = max(seen, len(lines))

        while True:
            job = self._call("JobsApi", "get_job_status", pid, job_id).job
            pump()
            if job.finished is not None:
                break
            if time.monotonic() > deadline:
                self._call("JobsApi", "cancel_job", pid, job_id, force_cancel="true")
                raise TrainingFailed(f"training job {job_id} did not finish within {timeout_s:.0f} s and was cancelled; "
                                     "give it more time (timeout_s; in notebooks 04 and 06 the train_timeout_s parameter) "
                                     "or train less (fewer epochs, or a time_budget_s)", 0)
            time.sleep(poll_s)
        if not job.finished_successful:
            tail = "\n".join(log[-8:])
            raise TrainingFailed(f"training job {job_id} failed: {job.additional_info or ''}\n{tail}", 200)
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        result: dict[str, Any] = {"job_id": job_id, "model_dir": str(out), "log": log, "version": None}
        if self.target == "local":
            onnx = self._raw("LearnApi", "download_learn_model", pid, learn_id, "onnx")
            card = json.loads(self._raw("LearnApi", "download_learn_model", pid, learn_id, "card"))
            card.update(card_extra or {})
            card["studio_job"] = {"job_id": job_id, "project_id": pid, "target": self.target}
            (out / "model.onnx").write_bytes(onnx)
            (out / "model.json").write_text(json.dumps(card, indent=2))
            result["format"] = "onnx"
            if register:
                result["version"] = self.register_model(out / "model.onnx", card).version
        else:
            eim = self._raw("DeploymentApi", "download_build", pid, "runner-linux-x86_64")
            path = out / "model.eim"
            path.write_bytes(eim)
            path.chmod(0o755)
            card = {"format": "eim", "input_size": imp["input_size"], "color": imp["color"],
                    "preprocessing": {"resize": imp.get("resize_mode") or "squash"},
                    "studio_job": {"job_id": job_id, "project_id": pid, "target": self.target}, **(card_extra or {})}
            (out / "model.json").write_text(json.dumps(card, indent=2))
            card.update(_eim_model_info(out))
            (out / "model.json").write_text(json.dumps(card, indent=2))
            result["format"] = "eim"
            if register:  # the registry keeps the .eim itself; the runner runs it by the card's format
                result["version"] = self.register_model(path, card).version
        return result

    def download_eim(self, dest: str | Path) -> Path:
        """The trained impulse as an `.eim` Linux executable (`DeploymentApi.download_build`)."""
        data = self._raw("DeploymentApi", "download_build", self.project_id, "runner-linux-x86_64")
        p = Path(dest)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(0o755)
        return p

    # ------------------------------------------------------------ extensions: registry and snapshots
    @property
    def registry(self) -> Any:
        """The workspace's local cloud, which keeps the model registry and snapshots (extensions)."""
        with self._lock:
            if self._registry_client is None:
                from helpers.studio.local import LocalStudio

                self._registry_client = LocalStudio(self.workspace, autostart=self._autostart or self.target != "local")
            return self._registry_client

    def snapshot(self) -> Snapshot:
        """Freeze the labeled samples into a content-hashed snapshot (the same content, the same id)."""
        if self.target == "local":
            return self.registry.snapshot()
        items = [SnapshotItem(sample_id=s.id, filename=s.filename, sha256=s.sha256, split="train" if s.category == "training" else "test",
                              width=s.width, height=s.height, boxes=list(s.boxes)) for s in self.samples(labeled=True)]
        items.sort(key=lambda i: i.sha256)
        body = {"labels": sorted({b.label for i in items for b in i.boxes}),
                "items": [{"sample_id": i.sample_id, "filename": i.filename, "sha256": i.sha256, "split": i.split, "width": i.width,
                           "height": i.height, "boxes": [b.to_dict() for b in i.boxes]} for i in items]}
        from helpers.localcloud.db import dumps

        snap_id = hashlib.sha256(dumps(body).encode()).hexdigest()
        path = self._snapshot_dir() / f"{snap_id}.json"
        if not path.exists():
            from helpers.localcloud.service import now_iso

            tmp = path.with_suffix(".part")
            tmp.write_text(json.dumps({"id": snap_id, "created_at": now_iso(), **body}))
            tmp.replace(path)
        return self.get_snapshot(snap_id)

    def _snapshot_dir(self) -> Path:
        d = self.workspace / "studio-snapshots" / str(self.project_id)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        if self.target == "local":
            return self.registry.get_snapshot(snapshot_id)
        from helpers.studio.local import snapshot_from_json

        path = self._snapshot_dir() / f"{snapshot_id}.json"
        if not path.is_file():
            raise NotFound(f"snapshot {snapshot_id[:16]!r} not found; create one with Studio.snapshot()", 404)
        return snapshot_from_json(json.loads(path.read_text()))

    def snapshots(self) -> list[dict[str, Any]]:
        """`[{"id", "created_at", "labels", "count"}]`, oldest first."""
        if self.target == "local":
            return self.registry.snapshots()
        out = []
        for p in self._snapshot_dir().glob("*.json"):
            d = json.loads(p.read_text())
            out.append({"id": d["id"], "created_at": d["created_at"], "labels": d["labels"], "count": len(d["items"])})
        return sorted(out, key=lambda d: d["created_at"])

    def register_model(self, onnx_path: str | Path, card: dict[str, Any]) -> ModelVersion:
        """Registry extension: upload a model file (.onnx, .eim or .tflite) + card; the new
        version has stage `candidate`."""
        return self.registry.register_model(onnx_path, card)

    def models(self) -> list[ModelVersion]:
        return self.registry.models()

    def get_model(self, version: int) -> ModelVersion:
        return self.registry.get_model(version)

    def download_model(self, version: int, dest: str | Path) -> Path:
        """Write the model file (`model.onnx`, `model.eim` or `model.tflite`, by the card's
        `format`) + `model.json` into `dest` (sha256 checked)."""
        return self.registry.download_model(version, dest)

    def set_model_stage(self, version: int, stage: str) -> ModelVersion:
        return self.registry.set_model_stage(version, stage)


# Seconds of training per image and epoch that `training_timeout_s` allows: a generous multiple of
# what 2 busy cores take (fomo-box: about 0.09 s measured with another process beside it; the
# pipeline's cell limits use the same 0.5), nanodet-ft and ssdlite320 about 6x the compute.
TRAIN_SECONDS_PER_IMAGE_EPOCH = {"fomo-box": 0.5, "nanodet-ft": 3.0, "ssdlite320": 3.0}
TRAIN_OVERHEAD_S = 300  # starting the job, loading the snapshot, export, evaluation, download


def training_timeout_s(images: int, epochs: int, arch: str = "fomo-box", time_budget_s: float | None = None) -> float:
    """How long `EdgeImpulseStudio.train` waits for a job on `images` training images: the
    overhead plus the per-image-epoch allowance of `arch`; with a time budget, at most the budget
    plus the overhead. Below the pipeline's cell limit, so a slow job ends with `TrainingFailed`
    (and is cancelled) before the cell is killed."""
    per = TRAIN_SECONDS_PER_IMAGE_EPOCH.get(arch, max(TRAIN_SECONDS_PER_IMAGE_EPOCH.values()))
    limit = TRAIN_OVERHEAD_S + per * max(1, int(images)) * max(1, int(epochs))
    if time_budget_s is not None:
        limit = min(limit, TRAIN_OVERHEAD_S + float(time_budget_s) * 1.5)
    return float(limit)


def _eim_model_info(model_dir: Path) -> dict[str, Any]:
    """What an Edge Impulse `.eim` says about itself (labels, score threshold), for its card: the
    executable is started once through `edge_impulse_linux` (which checks it against the card's
    input size). Without the `[eim]` extra the card leaves them out and the runner asks the model."""
    import logging

    from helpers.errors import MissingExtra
    from helpers.inference.backends import EimDetector

    try:
        det = EimDetector(model_dir)
    except MissingExtra as exc:
        logging.getLogger(__name__).warning("%s: the card lists no labels; the runner reads them from the .eim", exc)
        return {}
    try:
        return {"labels": det.labels, "score_threshold": det.score_threshold,
                "model_type": det.model_parameters.get("model_type"), "edge_impulse_project": det.project}
    finally:
        det.close()


def _set_keras_request() -> Any:
    """An empty `SetKerasParameterRequest`: train with the settings stored on the learn block."""
    from edgeimpulse_api.models import SetKerasParameterRequest

    return SetKerasParameterRequest()


def local_studio(workspace: str | Path | None = None, **kw: Any) -> EdgeImpulseStudio:
    """The workspace's local studio (registered as backend "local")."""
    return EdgeImpulseStudio(workspace, target="local", **kw)


def edge_impulse_studio(workspace: str | Path | None = None, **kw: Any) -> EdgeImpulseStudio:
    """A real Edge Impulse project from EI_API_KEY / EI_PROJECT_ID (registered as backend "edgeimpulse")."""
    return EdgeImpulseStudio(workspace, target="edgeimpulse", **kw)


__all__ = ["EdgeImpulseStudio", "EdgeImpulseError", "EdgeImpulseNotFound", "TrainingFailed", "local_studio", "edge_impulse_studio",
           "training_timeout_s"]
