"""What has no Edge Impulse call: the model registry and dataset snapshots (the workspace's local cloud).

On the local studio both are the local cloud's extension endpoints (`LocalStudio`); on a real
project the registry is still the workspace's local cloud, and a snapshot is computed here from
the project's labeled samples and kept in `WORKSPACE/studio-snapshots/<project id>/`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from helpers.errors import NotFound
from helpers.studio.base import ModelVersion, Snapshot, SnapshotItem
from helpers.studio.edgeimpulse.samples import EdgeImpulseSamples
from helpers.studio.local import snapshot_from_json


def canonical_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): what a snapshot's content hash is taken of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds and a Z."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EdgeImpulseExtensions(EdgeImpulseSamples):
    """Snapshots and the model registry of an Edge Impulse studio."""

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
        snap_id = hashlib.sha256(canonical_json(body).encode()).hexdigest()
        path = self._snapshot_dir() / f"{snap_id}.json"
        if not path.exists():
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


__all__ = ["EdgeImpulseExtensions", "canonical_json", "now_iso"]
