"""The dataset types: an item (image bytes and boxes), a dataset, and the report of an import."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from helpers.errors import DatasetError
from helpers.geometry import BBox

FORMATS = ("ei", "voc", "coco")
UNKNOWN_POLICIES = ("refuse", "skip", "keep")
SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Boxes narrower or lower than this many pixels (after clipping) are skipped as degenerate.
MIN_BOX_SIZE = 1.0
JPEG_QUALITY = 95

Split = Literal["train", "test"]


@dataclass
class DatasetItem:
    """One image and its boxes.

    Attributes:
        name: file name (unique in the dataset; its extension matches the content).
        image_bytes: the encoded image, RGB JPEG or PNG.
        width: image width in pixels.
        height: image height in pixels.
        boxes: labelled boxes in pixels (top-left x/y, width/height).
        split: `"train"`, `"test"` or None (not assigned).
    """

    name: str
    image_bytes: bytes
    width: int
    height: int
    boxes: list[BBox] = field(default_factory=list)
    split: Split | None = None

    def rgb(self) -> np.ndarray:
        """Decode the image to an RGB uint8 array (H, W, 3)."""
        buf = np.frombuffer(self.image_bytes, dtype=np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise DatasetError(f"{self.name}: image bytes cannot be decoded; re-import the dataset")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    @property
    def sha256(self) -> str:
        """Content hash of the image bytes (the sample's identity in a dataset snapshot)."""
        return hashlib.sha256(self.image_bytes).hexdigest()


@dataclass
class Dataset:
    """Items plus the class list (`labels`, in a stable order)."""

    items: list[DatasetItem]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def box_counts(self) -> dict[str, int]:
        """Boxes per label, every label of `labels` present (0 when it has none)."""
        counts = Counter(b.label for item in self.items for b in item.boxes)
        return {label: counts.get(label, 0) for label in self.labels} | {
            k: v for k, v in sorted(counts.items()) if k not in self.labels
        }

    def split(self, name: Split | None) -> list[DatasetItem]:
        """The items of one split (`None`: the unassigned ones)."""
        return [item for item in self.items if item.split == name]


@dataclass
class ImportReport:
    """What an import took, repaired and left out.

    Attributes:
        source: the folder or file imported.
        format: `ei`, `voc` or `coco`.
        images: images taken.
        boxes: boxes taken.
        fixed: repairs by kind (`png_named_jpg`, `converted_rgba`, `size_from_image`, `box_clipped`, ...).
        skipped: things left out by kind (`degenerate_box`, `missing_image`, `unknown_class`, ...).
        messages: one line per event, naming the file.
    """

    source: str
    format: str
    images: int = 0
    boxes: int = 0
    fixed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def fix(self, kind: str, message: str) -> None:
        self.fixed[kind] += 1
        self.messages.append(f"fixed ({kind}): {message}")

    def skip(self, kind: str, message: str) -> None:
        self.skipped[kind] += 1
        self.messages.append(f"skipped ({kind}): {message}")

    def note(self, message: str) -> None:
        self.messages.append(message)

    def summary(self, max_messages: int = 10) -> str:
        """A few lines for a notebook: counts, then the first `max_messages` messages."""
        lines = [f"imported {self.images} images, {self.boxes} boxes from {self.source} ({self.format})"]
        if self.fixed:
            lines.append("fixed: " + ", ".join(f"{k} {v}" for k, v in sorted(self.fixed.items())))
        if self.skipped:
            lines.append("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())))
        shown = self.messages[:max_messages]
        lines.extend(f"  {m}" for m in shown)
        if len(self.messages) > len(shown):
            lines.append(f"  ... and {len(self.messages) - len(shown)} more (report.messages)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
