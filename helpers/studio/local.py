"""`LocalStudio`: the `Studio` protocol against the embedded local cloud's studio endpoints.

Authenticates with the workspace's studio API key (`x-api-key`, Edge Impulse's header), uploads
through `IngestionClient` exactly as a device's collector does. It finds the service through
`helpers.endpoints` (`service.json`, or a fixed URL) and never starts it; when the service cannot
be reached and no URL was fixed, it re-reads `service.json` once (the local cloud restarted on
another port).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from helpers.config import Secret
from helpers.endpoints import read_credentials, resolve_workspace, service_url
from helpers.errors import ModelError
from helpers.geometry import BBox, boxes_from_dicts
from helpers.http import call
from helpers.inference.card import FORMAT_FILES, format_of_file, model_format
from helpers.studio.base import STAGES, ModelVersion, Sample, Snapshot, SnapshotItem, UploadResult
from helpers.studio.ingestion import IngestionClient


def sample_from_json(d: dict[str, Any]) -> Sample:
    return Sample(id=int(d["id"]), filename=d["filename"], category=d["category"], sha256=d["sha256"], width=int(d["width"]),
                  height=int(d["height"]), boxes=boxes_from_dicts(d.get("boxes") or []), label=d.get("label"),
                  labeled=bool(d.get("labeled")), device=d.get("device"), captured_at=d.get("captured_at"),
                  created_at=d.get("created_at"), metadata=d.get("metadata") or {})


def snapshot_from_json(d: dict[str, Any]) -> Snapshot:
    items = [SnapshotItem(sample_id=int(i["sample_id"]), filename=i["filename"], sha256=i["sha256"], split=i["split"],
                          width=int(i["width"]), height=int(i["height"]), boxes=boxes_from_dicts(i.get("boxes") or []))
             for i in d.get("items", [])]
    return Snapshot(id=d["id"], created_at=d["created_at"], labels=list(d.get("labels", [])), items=items)


def model_from_json(d: dict[str, Any]) -> ModelVersion:
    return ModelVersion(version=int(d["version"]), stage=d["stage"], sha256=d["sha256"], card=d.get("card") or {},
                        created_at=d.get("created_at"))


class LocalStudio:
    """The local cloud's studio.

    Args:
        workspace: workspace folder (default: settings); the local cloud must run there
            (`session.connect()` or `python -m helpers.localcloud start` starts it).
        url: override the service URL (default: service.json).
        timeout: seconds per HTTP call.

    Attributes:
        workspace: the resolved workspace folder.
        url: the studio base URL (also the ingestion base URL for devices).
        api_key: the studio's management API key (`Secret`); devices get `device_key()`.
    """

    name = "local"

    def __init__(self, workspace: str | Path | None = None, url: str | None = None, timeout: float = 30.0):
        self.workspace = resolve_workspace(workspace)
        self._fixed_url = url.rstrip("/") if url else None
        self.timeout = timeout
        self._session = requests.Session()
        self._load()

    def _load(self) -> None:
        """(Re)read the studio API key and the service URL."""
        self.api_key: Secret = read_credentials(self.workspace)["studio_api_key"]
        self.url: str = service_url(self.workspace, self._fixed_url)
        self.ingestion = IngestionClient(self.url, self.api_key, timeout=self.timeout)

    def _reload_url(self) -> str | None:
        old = self.url
        self._load()
        return self.url if self.url != old else None

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key.get_secret_value()}

    def _req(self, method: str, path: str, **kw: Any) -> requests.Response:
        return call(self._session, method, self.url + path, headers=self._headers, timeout=self.timeout,
                    on_unreachable=None if self._fixed_url else self._reload_url, **kw)

    def __repr__(self) -> str:
        return f"LocalStudio(url={self.url!r}, api_key={self.api_key!r})"

    def device_key(self, model_version: int | None = None) -> Secret:
        """The key a device is given (`EI_API_KEY` in its manifest): uploads only, and with
        `model_version` the download of that version (`POST /api/devicekeys`, management key).

        Raises:
            ValueError: `model_version` is not a positive integer (a registry version) or None.
        """
        if model_version is not None and (isinstance(model_version, bool) or not isinstance(model_version, int) or model_version < 1):
            raise ValueError(f"model_version must be a positive integer (a registry version) or None, got {model_version!r}")
        body = self._req("POST", "/api/devicekeys", json={"modelVersion": model_version}).json()
        return Secret(body["apiKey"], "EI_API_KEY")

    # -- samples
    def upload(self, files: Sequence[str | Path | tuple[str, bytes]], *, category: str = "training", label: str | None = None,
               boxes: dict[str, list[BBox]] | None = None, metadata: dict[str, Any] | None = None,
               device: str | None = None, disallow_duplicates: bool = False) -> list[UploadResult]:
        """Upload images (see `IngestionClient.upload`); `device` goes into the metadata."""
        meta = dict(metadata or {})
        if device is not None:
            meta["device"] = device
        return self.ingestion.upload(category, files, label=label, boxes=boxes, metadata=meta or None,
                                     disallow_duplicates=disallow_duplicates)

    def samples(self, *, category: str | None = None, labeled: bool | None = None, label: str | None = None,
                device: str | None = None) -> list[Sample]:
        """Samples filtered by category, labeled state, label (sample or box) and device."""
        params = {k: v for k, v in {"category": category, "label": label, "device": device}.items() if v is not None}
        if labeled is not None:
            params["labeled"] = "true" if labeled else "false"
        return [sample_from_json(s) for s in self._req("GET", "/api/samples", params=params).json()["samples"]]

    def get_sample(self, sample_id: int) -> Sample:
        return sample_from_json(self._req("GET", f"/api/samples/{int(sample_id)}").json()["sample"])

    def get_image(self, sample_id: int) -> bytes:
        return self._req("GET", f"/api/samples/{int(sample_id)}/image").content

    def set_boxes(self, sample_id: int, boxes: list[BBox]) -> Sample:
        """Replace the boxes (pixels); the sample becomes labeled (an empty list: no objects)."""
        payload = {"boxes": [b.to_dict() if isinstance(b, BBox) else dict(b) for b in boxes]}
        for b in payload["boxes"]:
            b.pop("value", None)
        return sample_from_json(self._req("PUT", f"/api/samples/{int(sample_id)}/boxes", json=payload).json()["sample"])

    def update_sample(self, sample_id: int, *, metadata: dict[str, Any] | None = None, category: str | None = None,
                      label: str | None = None, labeled: bool | None = None) -> Sample:
        """Merge-patch metadata (None deletes a key) and/or set category, label or labeled."""
        body: dict[str, Any] = {}
        if metadata is not None:
            body["metadata"] = metadata
        if category is not None:
            body["category"] = category
        if label is not None:
            body["label"] = label
        if labeled is not None:
            body["labeled"] = labeled
        return sample_from_json(self._req("PATCH", f"/api/samples/{int(sample_id)}", json=body).json()["sample"])

    def delete_sample(self, sample_id: int) -> None:
        self._req("DELETE", f"/api/samples/{int(sample_id)}")

    # -- labels and splits
    def labels(self) -> list[str]:
        return list(self._req("GET", "/api/labels").json()["labels"])

    def add_label(self, name: str) -> list[str]:
        return list(self._req("POST", "/api/labels", json={"name": name}).json()["labels"])

    def rebalance(self, test_fraction: float = 0.2) -> dict[str, int]:
        """Re-split every sample train/test by content hash; `{"training", "testing", "moved"}`."""
        body = self._req("POST", "/api/rebalance", json={"testFraction": test_fraction}).json()
        return {k: int(body[k]) for k in ("training", "testing", "moved")}

    # -- snapshots
    def snapshot(self) -> Snapshot:
        """Freeze the labeled samples; the same content gives the same id."""
        return snapshot_from_json(self._req("POST", "/api/snapshots").json())

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        return snapshot_from_json(self._req("GET", f"/api/snapshots/{snapshot_id}").json())

    def snapshots(self) -> list[dict[str, Any]]:
        """`[{"id", "created_at", "labels", "count"}]`."""
        return list(self._req("GET", "/api/snapshots").json()["snapshots"])

    # -- models
    def register_model(self, onnx_path: str | Path, card: dict[str, Any]) -> ModelVersion:
        """Upload a model file + JSON card; the new version (1, 2, ...) has stage `candidate`.

        The file is an ONNX (`.onnx`), an Edge Impulse Linux executable (`.eim`) or a TFLite model
        (`.tflite`); its extension sets the card's `format` (which the runner loads it by).

        Raises:
            ModelError: another extension, or a card whose `format` contradicts the file's.
        """
        path = Path(onnx_path)
        fmt = format_of_file(path)
        if card.get("format", fmt) != fmt:
            raise ModelError(f"the card says format {card.get('format')!r} but {path.name} is a .{fmt} file")
        card = {**card, "format": fmt} if fmt != "onnx" or "format" in card else card
        data = path.read_bytes()
        files = {"model": (FORMAT_FILES[fmt], data, "application/octet-stream"), "card": (None, json.dumps(card))}
        return model_from_json(self._req("POST", "/api/models", files=files).json()["model"])

    def models(self) -> list[ModelVersion]:
        return [model_from_json(m) for m in self._req("GET", "/api/models").json()["models"]]

    def get_model(self, version: int) -> ModelVersion:
        return model_from_json(self._req("GET", f"/api/models/{int(version)}").json()["model"])

    def download_model(self, version: int, dest: str | Path) -> Path:
        """Write the model file (`model.onnx`, `model.eim` or `model.tflite`, by the card's
        `format`) + `model.json` into `dest` (a folder) after checking the sha256.

        Raises:
            ModelError: the downloaded bytes do not match the registered sha256.
        """
        mv = self.get_model(version)
        fmt = model_format(mv.card)
        data = self._req("GET", f"/api/models/{int(version)}/file").content
        digest = hashlib.sha256(data).hexdigest()
        if digest != mv.sha256:
            raise ModelError(f"model {version}: downloaded sha256 {digest[:12]} != registered {mv.sha256[:12]}; download again")
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        name = FORMAT_FILES[fmt]
        tmp = out / f".{name}.part"
        tmp.write_bytes(data)
        if fmt == "eim":
            tmp.chmod(0o755)
        tmp.replace(out / name)
        (out / "model.json").write_text(json.dumps(mv.card, indent=2))
        return out

    def set_model_stage(self, version: int, stage: str) -> ModelVersion:
        """candidate | production | retired (several may be production; the deploy gate retires)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return model_from_json(self._req("PUT", f"/api/models/{int(version)}/stage", json={"stage": stage}).json()["model"])
