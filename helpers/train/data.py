"""Training data: (rgb, boxes) pairs from a dataset folder, a studio snapshot or renders.

Items are plain `(rgb uint8 (H, W, 3), list[BBox])` tuples everywhere in training and
evaluation, so notebooks can pass renders, imported folders or studio snapshots alike.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from helpers.datasets import import_dataset
from helpers.errors import DatasetError
from helpers.geometry import BBox

Item = tuple[np.ndarray, list[BBox]]
TRAIN_SPLITS = ("train", "training")
TEST_SPLITS = ("test", "testing", "val", "validation")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8; grey and RGBA images become RGB.

    Raises:
        DatasetError: the bytes are not an image OpenCV can read.
    """
    # Boxes are in stored-pixel coordinates (the importer bakes EXIF rotations out), so an
    # EXIF orientation tag must not rotate the pixels under them.
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None:
        raise DatasetError(f"{name}: not a readable image (JPEG/PNG expected)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def validate_items(items: Sequence[Item], labels: Sequence[str], what: str = "training set",
                   min_images: int = 2) -> None:
    """Refuse data the trainer cannot learn from, with a message that says what to fix.

    Raises:
        DatasetError: no images, fewer than `min_images`, a box with an unknown label, or a
            label with no boxes at all.
    """
    if not labels:
        raise DatasetError(f"the {what} has no labels: label some boxes first")
    if len(items) == 0:
        raise DatasetError(f"the {what} is empty: add labeled images (or check --dataset/--format)")
    if len(items) < min_images:
        raise DatasetError(f"the {what} has only {len(items)} image(s); training needs at least {min_images} "
                           "(one to learn from and one to check on); label more images")
    counts = {name: 0 for name in labels}
    for k, (rgb, boxes) in enumerate(items):
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise DatasetError(f"{what} item {k}: expected an RGB uint8 array (H, W, 3), got "
                               f"{getattr(rgb, 'shape', type(rgb))} {getattr(rgb, 'dtype', '')}")
        for b in boxes:
            if b.label not in counts:
                raise DatasetError(f"{what} item {k} has a box labeled {b.label!r}, not one of {list(labels)}")
            counts[b.label] += 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DatasetError(f"the {what} has no boxes for class(es) {empty}: label some, or drop the class "
                           f"(classes with boxes: {[n for n, c in counts.items() if c]})")


def split_items(items: Sequence[Item], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Random train/validation split, at least one image on each side."""
    if len(items) < 2:
        raise DatasetError(f"cannot split {len(items)} image(s) into train and validation: need at least 2")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    n_val = min(len(items) - 1, max(1, int(round(len(items) * val_fraction))))
    val = [items[i] for i in sorted(order[:n_val])]
    train = [items[i] for i in sorted(order[n_val:])]
    return train, val


def dataset_hash(items: Sequence[Item]) -> str:
    """Content hash of a training set: image pixels and boxes, order-independent."""
    parts = []
    for rgb, boxes in items:
        h = hashlib.sha256(np.ascontiguousarray(rgb).tobytes())
        h.update(json.dumps([b.to_dict() for b in boxes], sort_keys=True).encode())
        parts.append(h.hexdigest())
    return hashlib.sha256("".join(sorted(parts)).encode()).hexdigest()


def items_from_dataset(dataset: Any) -> tuple[list[Item], list[Item], list[str]]:
    """(train items, test items, labels) from a `helpers.datasets.Dataset`.

    Items whose split is not a test split count as training.
    """
    train: list[Item] = []
    test: list[Item] = []
    for it in dataset.items:
        rgb = decode_image(it.image_bytes, it.name)
        (test if str(getattr(it, "split", "train")).lower() in TEST_SPLITS else train).append((rgb, list(it.boxes)))
    labels = list(getattr(dataset, "labels", None) or sorted({b.label for _, bs in train + test for b in bs}))
    return train, test, labels


def load_dataset_dir(path: str | Path, fmt: str = "auto") -> tuple[list[Item], list[Item], list[str]]:
    """Import a dataset folder (Edge Impulse, Pascal VOC or COCO) through the formats module.

    Raises:
        DatasetError: the folder does not exist, or the importer refused it.
    """
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"dataset folder {p} does not exist")
    dataset, report = import_dataset(p, fmt)
    train, test, labels = items_from_dataset(dataset)
    return train, test, labels


def load_studio_snapshot(studio: Any) -> tuple[list[Item], list[Item], list[str], str]:
    """(train, test, labels, snapshot id) from the studio's current labeled snapshot.

    `studio` is anything with `.snapshot()` and `.get_image(sample_id)` (a `helpers.studio` client).
    """
    snap = studio.snapshot()
    train: list[Item] = []
    test: list[Item] = []
    for it in snap.items:
        rgb = decode_image(studio.get_image(it.sample_id), it.filename)
        (test if it.split in TEST_SPLITS else train).append((rgb, list(it.boxes)))
    return train, test, list(snap.labels), snap.id


def label_counts(items: Sequence[Item]) -> dict[str, int]:
    """Boxes per class."""
    out: dict[str, int] = {}
    for _, boxes in items:
        for b in boxes:
            out[b.label] = out.get(b.label, 0) + 1
    return dict(sorted(out.items()))
