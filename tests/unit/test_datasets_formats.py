"""Dataset import/export: messy real-world files and EI -> VOC -> COCO -> EI round trips."""
from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers.datasets import (
    Dataset,
    DatasetItem,
    dataset_from_arrays,
    detect_format,
    export_dataset,
    import_dataset,
)
from helpers.errors import DatasetError
from helpers.geometry import BBox

W, H = 64, 48


def picture(seed: int = 0, w: int = W, h: int = H) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 255, 3)
    cv2.rectangle(img, (5, 5), (w // 2, h // 2), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return img


def write_jpg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(buf.tobytes())


def voc_xml(filename: str, objects: list[tuple], size=(W, H)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    return (
        f"<annotation><folder>train</folder><filename>{filename}</filename>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )


@pytest.fixture
def messy_voc(tmp_path: Path) -> Path:
    d = tmp_path / "voc"
    d.mkdir()
    # 1. a clean JPEG
    write_jpg(d / "apple_1.jpg", picture(1))
    (d / "apple_1.xml").write_text(voc_xml("apple_1.jpg", [("apple", 5, 5, 30, 20)]))
    # 2. a PNG named .jpg, RGB, with a 0x0 size
    Image.fromarray(picture(2)).save(d / "apple_2.jpg", format="PNG")
    (d / "apple_2.xml").write_text(voc_xml("apple_2.jpg", [("Apple", 1, 2, 20, 30)], size=(0, 0)))
    # 3. an RGBA PNG named .jpg, with a box running off the image and a degenerate box
    rgba = np.dstack([picture(3), np.full((H, W), 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # a transparent corner
    Image.fromarray(rgba, "RGBA").save(d / "banana_1.jpg", format="PNG")
    (d / "banana_1.xml").write_text(
        voc_xml("banana_1.jpg", [("banana", 40, 30, 80, 60), ("banana", 10, 10, 10, 25), ("banana", 100, 100, 120, 120)])
    )
    # 4. a palette PNG with transparency, and an orange box
    pal = Image.fromarray(picture(4)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    pal.save(d / "mixed_1.png", transparency=0)
    (d / "mixed_1.xml").write_text(voc_xml("mixed_1.png", [("apple", 2, 2, 12, 12), ("orange", 20, 20, 40, 40)]))
    # 5. an annotation whose image is missing
    (d / "apple_3.xml").write_text(voc_xml("apple_3.jpg", [("apple", 1, 1, 5, 5)]))
    # 6. a broken annotation file
    (d / "broken.xml").write_text("<annotation><filename>x.jpg</filename>")
    return d


def test_messy_voc_is_repaired_and_reported(messy_voc: Path):
    ds, report = import_dataset(messy_voc, unknown="keep")
    assert detect_format(messy_voc) == "voc"
    names = sorted(i.name for i in ds.items)
    assert names == ["apple_1.jpg", "apple_2.png", "banana_1.png", "mixed_1.png"]
    assert report.images == 4
    assert report.fixed["png_named_jpg"] == 2
    assert report.fixed["converted_rgba"] == 1
    assert report.fixed["converted_palette"] == 1
    assert report.fixed["size_from_image"] == 1
    assert report.fixed["box_clipped"] == 1
    assert report.skipped["degenerate_box"] == 1
    assert report.skipped["box_outside_image"] == 1
    assert report.skipped["missing_image"] == 1
    assert report.skipped["malformed_annotation"] == 1
    items = {i.name: i for i in ds.items}
    assert items["banana_1.png"].boxes == [BBox("banana", 40, 30, W - 40, H - 30)]
    assert items["apple_2.png"].boxes == [BBox("apple", 1, 2, 19, 28)]  # label lower-cased
    assert (items["apple_2.png"].width, items["apple_2.png"].height) == (W, H)
    assert report.boxes == sum(len(i.boxes) for i in ds.items) == 5
    for item in ds.items:
        rgb = item.rgb()
        assert rgb.shape == (item.height, item.width, 3) and rgb.dtype == np.uint8
        assert Image.open(io.BytesIO(item.image_bytes)).mode == "RGB"
    # transparent pixels are composited on white, not left black
    assert items["banana_1.png"].rgb()[2, 2].tolist() == [255, 255, 255]
    # the clean JPEG keeps its bytes
    assert items["apple_1.jpg"].image_bytes == (messy_voc / "apple_1.jpg").read_bytes()
    text = str(report)
    assert "imported 4 images, 5 boxes" in text and "png_named_jpg 2" in text and "missing_image 1" in text
    assert any("apple_3" in m for m in report.messages)
    assert ds.labels == ["apple", "banana", "orange"]


def test_unknown_classes_refused_with_the_fix(messy_voc: Path):
    with pytest.raises(DatasetError) as err:
        import_dataset(messy_voc, classes=["apple", "banana"])
    msg = str(err.value)
    assert "'orange'" in msg and "class_map={'orange':" in msg and "unknown='skip'" in msg


def test_unknown_classes_skip_keep_and_map(messy_voc: Path):
    ds, report = import_dataset(messy_voc, classes=["apple", "banana"], unknown="skip")
    assert report.skipped["unknown_class"] == 1 and ds.labels == ["apple", "banana"]
    assert ds.box_counts() == {"apple": 3, "banana": 1}
    ds, _ = import_dataset(messy_voc, classes=["apple", "banana"], unknown="keep")
    assert ds.labels == ["apple", "banana", "orange"]
    ds, report = import_dataset(messy_voc, classes=["apple", "banana"], class_map={"Orange": "apple"})
    assert ds.box_counts() == {"apple": 4, "banana": 1} and report.fixed["class_mapped"] == 1
    ds, report = import_dataset(messy_voc, class_map={"orange": None})
    assert "orange" not in ds.labels and report.skipped["dropped_by_class_map"] == 1
    with pytest.raises(ValueError, match="unknown="):
        import_dataset(messy_voc, unknown="ignore")


def make_dataset() -> Dataset:
    samples = [(picture(i), [BBox("apple", 3 + i, 4, 20, 15)] + ([BBox("banana", 30, 20, 25, 20)] if i % 2 else []))
               for i in range(6)]
    ds = dataset_from_arrays(samples, names=[f"s{i}" for i in range(6)])
    for i, item in enumerate(ds.items):
        item.split = "train" if i < 4 else "test"
    ds.items.append(DatasetItem("empty.png", ds.items[0].image_bytes, W, H, [], "train"))
    return ds


def snapshot(ds: Dataset) -> dict:
    return {i.name: (i.split, i.width, i.height, sorted((b.label, b.x, b.y, b.width, b.height) for b in i.boxes))
            for i in ds.items}


def test_round_trip_ei_voc_coco_ei_keeps_every_box(tmp_path: Path):
    original = make_dataset()
    export_dataset(original, tmp_path / "ei", "ei")
    assert (tmp_path / "ei" / "training" / "bounding_boxes.labels").is_file()
    assert (tmp_path / "ei" / "testing" / "bounding_boxes.labels").is_file()
    doc = json.loads((tmp_path / "ei" / "training" / "bounding_boxes.labels").read_text())
    assert doc["version"] == 1 and doc["type"] == "bounding-box-labels"
    assert doc["boundingBoxes"]["s0.png"] == [{"label": "apple", "x": 3, "y": 4, "width": 20, "height": 15}]

    ei, r1 = import_dataset(tmp_path / "ei")
    assert detect_format(tmp_path / "ei") == "ei" and not r1.fixed and not r1.skipped
    export_dataset(ei, tmp_path / "voc", "voc")
    voc, r2 = import_dataset(tmp_path / "voc")
    assert detect_format(tmp_path / "voc") == "voc" and not r2.fixed and not r2.skipped
    export_dataset(voc, tmp_path / "coco", "coco")
    coco, r3 = import_dataset(tmp_path / "coco")
    assert detect_format(tmp_path / "coco") == "coco" and not r3.fixed and not r3.skipped
    export_dataset(coco, tmp_path / "ei2", "ei")
    back, _ = import_dataset(tmp_path / "ei2", fmt="ei")

    for ds in (ei, voc, coco, back):
        assert snapshot(ds) == snapshot(original)
        assert sum(len(i.boxes) for i in ds.items) == 9
        assert {i.name: i.sha256 for i in ds.items} == {i.name: i.sha256 for i in original.items}
    assert back.labels == ["apple", "banana"]


def test_coco_export_loads_in_pycocotools(tmp_path: Path):
    from pycocotools.coco import COCO

    ds = make_dataset()
    for item in ds.items:
        item.split = None
    export_dataset(ds, tmp_path / "coco", "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations" / "instances.json"))
    assert len(coco.getImgIds()) == 7 and len(coco.getAnnIds()) == 9
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"apple", "banana"}


def test_coco_import_variants(tmp_path: Path):
    d = tmp_path / "coco"
    (d / "images").mkdir(parents=True)
    write_jpg(d / "images" / "a.jpg", picture(1))
    Image.fromarray(picture(2)).convert("L").save(d / "images" / "b.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H},
                   {"id": 2, "file_name": "b.png", "width": W, "height": H},
                   {"id": 3, "file_name": "gone.jpg", "width": W, "height": H}],
        "categories": [{"id": 7, "name": "Apple"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 10], "iscrowd": 0},
                        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 2, 0, 10], "iscrowd": 0},
                        {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 50, 40], "iscrowd": 1},
                        {"id": 4, "image_id": 3, "category_id": 7, "bbox": [0, 0, 5, 5]}],
    }
    (d / "instances.json").write_text(json.dumps(doc))
    ds, report = import_dataset(d)
    assert [i.name for i in ds.items] == ["a.jpg", "b.png"]
    assert ds.items[0].boxes == [BBox("apple", 1, 2, 10, 10)]
    assert report.fixed["converted_grayscale"] == 1
    assert report.skipped["degenerate_box"] == 1 and report.skipped["crowd_box"] == 1
    assert report.skipped["missing_image"] == 1


def test_ei_import_reports_unlisted_and_finds_renamed_image(tmp_path: Path):
    d = tmp_path / "ei"
    d.mkdir()
    Image.fromarray(picture(1)).save(d / "x.png")
    write_jpg(d / "unlabelled.jpg", picture(2))
    (d / "bounding_boxes.labels").write_text(json.dumps({
        "version": 1, "type": "bounding-box-labels",
        "boundingBoxes": {"x.jpg": [{"label": "apple", "x": 1, "y": 1, "width": 9, "height": 9}]},
    }))
    ds, report = import_dataset(d)
    assert [i.name for i in ds.items] == ["x.png"] and ds.items[0].split is None
    assert report.fixed["image_found_by_stem"] == 1 and report.skipped["unannotated_image"] == 1


def test_exif_orientation_is_baked_into_the_pixels(tmp_path: Path):
    d = tmp_path / "voc"
    d.mkdir()
    img = Image.fromarray(picture(5, w=40, h=20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    img.save(d / "r.jpg", format="JPEG", exif=exif)
    (d / "r.xml").write_text(voc_xml("r.jpg", [("apple", 1, 1, 10, 10)], size=(20, 40)))
    ds, report = import_dataset(d)
    item = ds.items[0]
    assert (item.width, item.height) == (20, 40) and report.fixed["exif_orientation"] == 1
    assert item.rgb().shape == (40, 20, 3)
    assert Image.open(io.BytesIO(item.image_bytes)).getexif().get(0x0112, 1) == 1


def test_detect_format_and_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        import_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="bounding_boxes.labels"):
        detect_format(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bounding_boxes.labels").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        import_dataset(bad)
    with pytest.raises(ValueError, match="fmt"):
        export_dataset(make_dataset(), tmp_path / "x", "yolo")


def test_duplicate_names_across_splits_are_made_unique(tmp_path: Path):
    d = tmp_path / "ei"
    for sub in ("training", "testing"):
        (d / sub).mkdir(parents=True)
        Image.fromarray(picture(1)).save(d / sub / "a.png")
        (d / sub / "bounding_boxes.labels").write_text(json.dumps({
            "version": 1, "type": "bounding-box-labels",
            "boundingBoxes": {"a.png": [{"label": "apple", "x": 1, "y": 1, "width": 9, "height": 9}]}}))
    ds, report = import_dataset(d)
    assert sorted((i.name, i.split) for i in ds.items) == [("a.png", "train"), ("a_2.png", "test")]
    assert report.fixed["duplicate_name"] == 1
    export_dataset(ds, tmp_path / "voc", "voc")
    again, _ = import_dataset(tmp_path / "voc")
    assert sorted((i.name, i.split) for i in again.items) == [("a.png", "train"), ("a_2.png", "test")]
