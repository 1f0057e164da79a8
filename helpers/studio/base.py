"""The `Studio` protocol: samples and labels (Edge Impulse-style), dataset snapshots, models."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from helpers.geometry import BBox

CATEGORIES = ("training", "testing")
STAGES = ("candidate", "production", "retired")


@dataclass
class Sample:
    """One image in the studio.

    `metadata` carries device id, capture time and, for synthetic cameras, the ground truth
    under the key `ground_truth` (list of box dicts). Labeling UIs must never show it; only
    the oracle labeler reads it.
    """

    id: int
    filename: str
    category: str
    sha256: str
    width: int
    height: int
    boxes: list[BBox] = field(default_factory=list)
    label: str | None = None
    labeled: bool = False
    device: str | None = None
    captured_at: str | None = None
    created_at: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class UploadResult:
    """One uploaded file: the sample id, or `duplicate_of` when its content was already there."""

    filename: str
    sample_id: int | None
    duplicate: bool = False
    duplicate_of: int | None = None
    error: str | None = None


@dataclass
class SnapshotItem:
    sample_id: int
    filename: str
    sha256: str
    split: str  # "train" | "test"
    width: int
    height: int
    boxes: list[BBox] = field(default_factory=list)


@dataclass
class Snapshot:
    """An immutable, content-hashed dataset version (labeled samples only)."""

    id: str  # the content hash
    created_at: str
    labels: list[str]
    items: list[SnapshotItem]

    def split(self, name: str) -> list[SnapshotItem]:
        return [i for i in self.items if i.split == name]


@dataclass
class ModelVersion:
    version: int
    stage: str
    sha256: str
    card: dict[str, Any]
    created_at: str | None = None


@runtime_checkable
class Studio(Protocol):
    """What the notebooks, labeling and training need from a studio."""

    def upload(self, files: Sequence[str | Path | tuple[str, bytes]], *, category: str = "training", label: str | None = None, boxes: dict[str, list[BBox]] | None = None, metadata: dict[str, Any] | None = None, device: str | None = None) -> list[UploadResult]: ...
    def samples(self, *, category: str | None = None, labeled: bool | None = None, label: str | None = None, device: str | None = None) -> list[Sample]: ...
    def get_sample(self, sample_id: int) -> Sample: ...
    def get_image(self, sample_id: int) -> bytes: ...
    def set_boxes(self, sample_id: int, boxes: list[BBox]) -> Sample: ...
    def delete_sample(self, sample_id: int) -> None: ...
    def labels(self) -> list[str]: ...
    def add_label(self, name: str) -> list[str]: ...
    def rebalance(self, test_fraction: float = 0.2) -> dict[str, int]: ...
    def snapshot(self) -> Snapshot: ...
    def register_model(self, onnx_path: str | Path, card: dict[str, Any]) -> ModelVersion: ...
    def models(self) -> list[ModelVersion]: ...
    def get_model(self, version: int) -> ModelVersion: ...
    def download_model(self, version: int, dest: str | Path) -> Path: ...
    def set_model_stage(self, version: int, stage: str) -> ModelVersion: ...
