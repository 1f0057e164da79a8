"""The importer on real photographs: /work/shared/datasets/fruit-voc-train (skipped when absent).

The folder's README lists its faults: 33 `.jpg` files are PNGs, 22 images are RGBA and 4 are
palette images, 33 VOC files give a 0x0 size. Override the location with EDGELOOP_FRUIT_VOC.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from helpers.datasets import detect_format, export_dataset, import_dataset

FRUIT = Path(os.environ.get("EDGELOOP_FRUIT_VOC", "/work/shared/datasets/fruit-voc-train"))

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not FRUIT.is_dir(), reason=f"{FRUIT} is not here (optional real-photo data set)")]


@pytest.fixture(scope="module")
def fruit():
    return import_dataset(FRUIT)


def test_fruit_voc_imports_with_every_fault_repaired(fruit):
    ds, report = fruit
    assert detect_format(FRUIT) == "voc"
    assert len(ds) == report.images == 240
    assert ds.box_counts() == {"apple": 156, "banana": 169, "orange": 140}
    assert report.boxes == 465
    assert report.fixed["png_named_jpg"] == 33
    assert report.fixed["converted_rgba"] == 22
    assert report.fixed["converted_palette"] == 4
    assert report.fixed["size_from_image"] == 33
    assert not report.skipped, report.summary()
    for item in ds.items:
        assert Image.open(io.BytesIO(item.image_bytes)).mode == "RGB"
        assert item.name.endswith(".png") == (Image.open(io.BytesIO(item.image_bytes)).format == "PNG")
        for b in item.boxes:
            assert 0 <= b.x and b.x + b.width <= item.width and 0 <= b.y and b.y + b.height <= item.height


def test_fruit_voc_apple_banana_only_and_round_trip(fruit, tmp_path):
    ds, _ = fruit
    two, report = import_dataset(FRUIT, classes=["apple", "banana"], unknown="skip")
    assert two.box_counts() == {"apple": 156, "banana": 169} and report.skipped["unknown_class"] == 140
    export_dataset(ds, tmp_path / "ei", "ei")
    back, again = import_dataset(tmp_path / "ei")
    assert back.box_counts() == ds.box_counts() and not again.fixed and not again.skipped
    assert sorted(i.sha256 for i in back.items) == sorted(i.sha256 for i in ds.items)
