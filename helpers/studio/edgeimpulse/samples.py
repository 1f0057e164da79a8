"""Samples, labels and the train/test split of an Edge Impulse project (`RawDataApi`, the `edgeimpulse` SDK)."""
from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

from helpers.config import mask
from helpers.errors import ServiceUnavailable, Unauthorized
from helpers.geometry import BBox
from helpers.studio.base import CATEGORIES, Sample, UploadResult
from helpers.studio.edgeimpulse.connection import EdgeImpulseConnection, enum_text
from helpers.studio.ingestion import read_file_like

LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9 _\-]{0,63}$")  # the studio's label rule
PAGE = 500  # samples per list_samples page
_SDK_LOCK = threading.Lock()  # the SDK reads its ingestion endpoint from a module global


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


def _iso(ts: Any) -> str | None:
    if ts is None:
        return None
    return ts.isoformat() if hasattr(ts, "isoformat") else str(ts)


def _int_box(b: BBox | dict[str, Any]) -> dict[str, Any]:
    d = b.to_dict() if isinstance(b, BBox) else dict(b)
    return {"label": str(d["label"]), "x": int(round(float(d["x"]))), "y": int(round(float(d["y"]))),
            "width": max(1, int(round(float(d["width"])))), "height": max(1, int(round(float(d["height"]))))}


class EdgeImpulseSamples(EdgeImpulseConnection):
    """The project's samples and labels: upload, list, read, box, edit, delete, re-split."""

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
        import edgeimpulse as ei  # Edge Impulse's SDKs take seconds to import: on use
        from edgeimpulse.data.sample_type import Sample as EiSample

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
        return Sample(id=int(s.id), filename=s.filename, category=enum_text(s.category), sha256=s.sha256_hash,
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
        from edgeimpulse_api.models import BoundingBox, SampleBoundingBoxesRequest  # on use (heavy)

        req = SampleBoundingBoxesRequest(bounding_boxes=[BoundingBox(**_int_box(b)) for b in boxes])
        self._call("RawDataApi", "set_sample_bounding_boxes", self.project_id, int(sample_id), req)
        return self.get_sample(sample_id)

    def update_sample(self, sample_id: int, *, metadata: dict[str, Any] | None = None, category: str | None = None,
                      label: str | None = None, labeled: bool | None = None) -> Sample:
        """Merge-patch metadata (None deletes a key), move to a category, set the label, or put the
        sample back into (labeled=False) or take it out of (True) the label queue."""
        from edgeimpulse_api.models import EditSampleLabelRequest, MoveRawDataRequest, SetSampleMetadataRequest  # on use (heavy)

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
        from edgeimpulse_api.models import UpdateProjectRequest  # on use (heavy)

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


__all__ = ["EdgeImpulseSamples", "LABEL_RE", "PAGE"]
