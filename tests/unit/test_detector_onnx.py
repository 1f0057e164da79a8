"""OnnxDetector: loading, errors on broken models, decoding into image coordinates."""
import json
import shutil

import numpy as np
import pytest

from helpers.errors import ModelError
from helpers.inference.onnx import OnnxDetector, decode, preprocess

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny untrained fomo-box exported at 96 px (seconds to build)."""
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    torch.manual_seed(0)
    m = FomoBox(2, width=0.35).eval()
    d = tmp_path_factory.mktemp("model")
    export_onnx(m, d, {"labels": ["apple", "banana"], "input_size": 96, "score_threshold": 0.5,
                       "arch": "fomo-box", "head": {"type": "centernet", "stride": 8}})
    return d


def _copy(model_dir, tmp_path, card_update=None, drop=()):
    dst = tmp_path / "m"
    shutil.copytree(model_dir, dst)
    card = json.loads((dst / "model.json").read_text())
    card.update(card_update or {})
    for k in drop:
        card.pop(k, None)
    (dst / "model.json").write_text(json.dumps(card))
    return dst


def test_loads_and_exposes_card(model_dir):
    det = OnnxDetector(model_dir)
    assert det.labels == ["apple", "banana"]
    assert det.input_size == 96
    assert det.version is None
    assert det.card["onnx_sha256"]
    assert det.preprocess(np.zeros((50, 70, 3), np.uint8)).shape == (1, 3, 96, 96)
    # also from the .onnx path
    assert OnnxDetector(model_dir / "model.onnx").labels == ["apple", "banana"]


def test_detect_returns_boxes_in_image_pixels(model_dir):
    det = OnnxDetector(model_dir)
    rgb = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    boxes = det.detect(rgb, score_threshold=0.0)
    assert boxes, "threshold 0 keeps every peak"
    for b in boxes:
        assert b.label in det.labels and 0.0 <= b.value <= 1.0
        assert 0 <= b.x and b.x + b.width <= 200.001 and 0 <= b.y and b.y + b.height <= 120.001
    assert [b.value for b in boxes] == sorted((b.value for b in boxes), reverse=True)


def test_missing_card(model_dir, tmp_path):
    shutil.copy(model_dir / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(ModelError, match="model card"):
        OnnxDetector(tmp_path)


def test_missing_onnx(tmp_path):
    with pytest.raises(ModelError, match="no ONNX model"):
        OnnxDetector(tmp_path)


def test_corrupt_onnx(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path, drop=("onnx_sha256",))
    (d / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxDetector(d)


def test_changed_onnx_fails_hash_check(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelError, match="onnx_sha256"):
        OnnxDetector(d)


def test_input_size_mismatch(model_dir, tmp_path):
    with pytest.raises(ModelError, match="input size mismatch"):
        OnnxDetector(_copy(model_dir, tmp_path, {"input_size": 160}))


def test_labels_missing_or_wrong_count(model_dir, tmp_path):
    with pytest.raises(ModelError, match="no labels"):
        OnnxDetector(_copy(model_dir, tmp_path, drop=("labels",)))
    shutil.rmtree(tmp_path / "m")
    with pytest.raises(ModelError, match="classes"):
        OnnxDetector(_copy(model_dir, tmp_path, {"labels": ["apple"]}))


def test_card_not_json(model_dir, tmp_path):
    d = _copy(model_dir, tmp_path)
    (d / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        OnnxDetector(d)


def test_decode_peak_and_scaling():
    # One apple peak at cell (x=3, y=2) on a 12x12 grid of a 96 px input.
    heat = np.zeros((2, 12, 12), np.float32)
    heat[0, 2, 3] = 0.9
    heat[0, 2, 4] = 0.6  # a neighbour, not a local maximum: suppressed
    ltrb = np.full((4, 12, 12), 8.0, np.float32)
    boxes = decode(heat, ltrb, ["apple", "banana"], (192, 96), 96, score_threshold=0.5)
    assert len(boxes) == 1
    b = boxes[0]
    # centre (28, 20) in input px, +-8 -> (20, 12, 36, 28); x doubles for a 192 px wide image
    assert b.label == "apple" and b.value == pytest.approx(0.9)
    assert (b.x, b.y, b.width, b.height) == pytest.approx((40, 12, 32, 16))


def test_decode_cross_class_suppression():
    heat = np.zeros((2, 12, 12), np.float32)
    heat[0, 5, 5] = 0.8
    heat[1, 5, 5] = 0.7  # same place, other class: one object gets one label
    ltrb = np.full((4, 12, 12), 10.0, np.float32)
    boxes = decode(heat, ltrb, ["apple", "banana"], (96, 96), 96, score_threshold=0.5)
    assert [b.label for b in boxes] == ["apple"]


def test_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10), np.uint8), 96)
