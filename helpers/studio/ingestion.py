"""`IngestionClient`: uploads images the way Edge Impulse's ingestion service takes them.

Works against the local studio (`LocalStudio.url`) and `https://ingestion.edgeimpulse.com`:
`POST {base_url}/api/{training|testing}/files`, multipart field `data` with the images and a
`bounding_boxes.labels` file for boxes, headers `x-api-key`, `x-label` / `x-no-label`,
`x-disallow-duplicates`, `x-metadata`.
"""
from __future__ import annotations

import json
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from helpers.config import Secret
from helpers.geometry import BBox
from helpers.http import call
from helpers.protocol import ei_labels
from helpers.studio.base import CATEGORIES, UploadResult

FileLike = str | Path | tuple[str, bytes]


def read_file_like(f: FileLike) -> tuple[str, bytes]:
    """(file name, bytes) of a path or a (name, bytes) pair."""
    if isinstance(f, tuple):
        name, data = f
        return str(name), bytes(data)
    p = Path(f)
    return p.name, p.read_bytes()


def boxes_labels_file(boxes: dict[str, list[BBox | dict[str, Any]]]) -> bytes:
    """An Edge Impulse `bounding_boxes.labels` document for {file name: boxes}."""
    return ei_labels.encode(boxes)


class IngestionClient:
    """Uploads to an Edge Impulse-compatible ingestion endpoint.

    Args:
        base_url: e.g. `LocalStudio.url` or `https://ingestion.edgeimpulse.com`.
        api_key: the project's API key (a `Secret`; a plain string is wrapped).
        timeout: seconds per request.
        batch_size: files per request.
    """

    def __init__(self, base_url: str, api_key: Secret | str, timeout: float = 60.0, batch_size: int = 32):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if isinstance(api_key, Secret) else Secret(api_key, "api_key")
        self.timeout = timeout
        self.batch_size = max(1, int(batch_size))
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"IngestionClient(base_url={self.base_url!r}, api_key={self.api_key!r})"

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key.get_secret_value()}

    def upload(self, category: str, files: Sequence[FileLike], label: str | None = None,
               boxes: dict[str, list[BBox]] | None = None, metadata: dict[str, Any] | None = None,
               disallow_duplicates: bool = True) -> list[UploadResult]:
        """Upload images; one `UploadResult` per file, in order.

        Args:
            category: "training" or "testing".
            files: paths or (file name, bytes) pairs.
            label: sample label (x-label); None sends x-no-label.
            boxes: {file name: boxes in pixels}; a file named here is uploaded labeled.
            metadata: JSON-able dict sent as x-metadata (device, captured_at, ground_truth...).
            disallow_duplicates: report content already in the project as an error entry
                (it is never stored twice either way).

        Raises:
            ValueError: unknown category.
            ServiceError and subclasses: the request was refused (401 key, 400 bad file...).
        """
        if category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
        items = [read_file_like(f) for f in files]
        headers: dict[str, str] = {"x-disallow-duplicates": "1" if disallow_duplicates else "0"}
        if label is None:
            headers["x-no-label"] = "1"
        else:
            headers["x-label"] = label
        if metadata:
            headers["x-metadata"] = json.dumps(metadata)
        results: list[UploadResult] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            parts = [("data", (name, data, mimetypes.guess_type(name)[0] or "application/octet-stream")) for name, data in batch]
            if boxes:
                batch_boxes = {name: boxes[name] for name, _ in batch if name in boxes}
                if batch_boxes:
                    parts.append(("data", ("bounding_boxes.labels", boxes_labels_file(batch_boxes), "application/json")))
            resp = call(self._session, "POST", f"{self.base_url}/api/{category}/files", headers=self._headers,
                        timeout=self.timeout, files=parts, extra_headers=headers)
            body = resp.json()
            for f in body.get("files", []):
                results.append(self._result(f))
        return results

    @staticmethod
    def _result(f: dict[str, Any]) -> UploadResult:
        dup_of = f.get("duplicateOf")
        if f.get("duplicate") or dup_of is not None:
            return UploadResult(filename=f.get("fileName", ""), sample_id=None, duplicate=True, duplicate_of=dup_of,
                                error=f.get("error") if not f.get("success", True) else None)
        if not f.get("success", False):
            return UploadResult(filename=f.get("fileName", ""), sample_id=None, error=f.get("error") or "upload failed")
        sid = f.get("sampleId", f.get("id"))
        return UploadResult(filename=f.get("fileName", ""), sample_id=int(sid) if sid is not None else None)
