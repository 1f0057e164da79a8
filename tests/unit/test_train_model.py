"""fomo-box network shapes, box coding round trip, augmentation keeping boxes right, export parity."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers.geometry import BBox, iou  # noqa: E402
from helpers.train.augment import AugmentParams, augment, transform_boxes  # noqa: E402
from helpers.train.boxcoding import boxes_to_arrays, decode_outputs, encode, targets_to_outputs  # noqa: E402
from helpers.train.model import STRIDE, FomoBox  # noqa: E402


@pytest.mark.parametrize("size", [96, 160, 320])
def test_output_shapes(size):
    m = FomoBox(3, width=0.35).eval()
    with torch.no_grad():
        heat, reg = m(torch.zeros(2, 3, size, size))
        p, ltrb = m.export_forward(torch.zeros(1, 3, size, size))
    g = size // STRIDE
    assert heat.shape == (2, 3, g, g) and reg.shape == (2, 4, g, g)
    assert p.shape == (1, 3, g, g) and ltrb.shape == (1, 4, g, g)
    assert float(p.min()) >= 0 and float(p.max()) <= 1 and float(ltrb.min()) > 0


def test_box_coding_round_trip():
    labels = ["apple", "banana"]
    boxes = [BBox("apple", 20, 30, 40, 36), BBox("banana", 150, 60, 120, 50), BBox("apple", 200, 200, 30, 28)]
    image_size, size = (320, 240), 160
    sx, sy = size / image_size[0], size / image_size[1]
    xyxy, cls = boxes_to_arrays(boxes, labels)
    xyxy = xyxy * np.array([sx, sy, sx, sy], np.float32)
    heat, log_ltrb, weight = encode(xyxy, cls, len(labels), size)
    assert heat.shape == (2, 20, 20) and log_ltrb.shape == (4, 20, 20) and weight.shape == (20, 20)
    assert heat.max() == 1.0 and (weight > 0).sum() >= 3
    out = decode_outputs(*targets_to_outputs(heat, log_ltrb), labels, image_size, size, score_threshold=0.99)
    assert len(out) == 3
    for b in boxes:
        match = max(out, key=lambda o: iou(o, b))
        assert match.label == b.label
        assert iou(match, b) > 0.97, (b, match)


def test_encode_empty_image():
    heat, ltrb, w = encode(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 2, 96)
    assert heat.sum() == 0 and w.sum() == 0


def _object_image(rng):
    """A grey image with two solid squares whose positions are known exactly."""
    img = np.full((120, 200, 3), 90, np.uint8)
    img[20:60, 30:70] = (230, 20, 20)
    img[70:110, 120:190] = (240, 230, 30)
    boxes = np.array([[30, 20, 70, 60], [120, 70, 190, 110]], np.float32)
    return img, boxes


def _colour_box(img, colour):
    mask = (np.abs(img.astype(int) - np.array(colour)).sum(2) < 60)
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_augment_keeps_boxes_on_the_objects():
    img, boxes = _object_image(None)
    no_colour = AugmentParams(brightness=0, contrast=0, saturation=0, hue_deg=0, blur=0, noise=0)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        out, bx, cl = augment(img, boxes, np.array([0, 1]), 96, rng, no_colour)
        assert out.shape == (96, 96, 3)
        for b, c in zip(bx, cl):
            colour = (230, 20, 20) if c == 0 else (240, 230, 30)
            seen = _colour_box(out, colour)
            # the transformed box is the drawn square (to interpolation), clipped to the input
            assert np.abs(seen - b).max() <= 2.0, (seed, seen, b)


def test_augment_is_deterministic_per_seed_and_plain_without_rng():
    img, boxes = _object_image(None)
    a = augment(img, boxes, np.array([0, 1]), 96, np.random.default_rng(3))
    b = augment(img, boxes, np.array([0, 1]), 96, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    plain, pb, _ = augment(img, boxes, np.array([0, 1]), 100, None)
    assert np.allclose(pb, boxes * np.array([0.5, 100 / 120, 0.5, 100 / 120]))


def test_boxes_mostly_outside_are_dropped():
    m = np.array([[1.0, 0, -50], [0, 1.0, 0]])
    out, keep = transform_boxes(np.array([[0, 0, 60, 20], [60, 0, 90, 20]], np.float32), m, 96, 0.4)
    assert keep.tolist() == [False, True]
    assert out.tolist() == [[10, 0, 40, 20]]


def test_export_parity(tmp_path):
    from helpers.train.export import export_onnx, parity_check
    from helpers.train.model import ExportWrapper

    torch.manual_seed(1)
    m = FomoBox(2, width=0.35).eval()
    path = export_onnx(m, tmp_path, {"labels": ["apple", "banana"], "input_size": 96})
    card = __import__("json").loads((tmp_path / "model.json").read_text())
    assert card["export"]["parity_max_abs_diff"] < 1e-3
    assert card["onnx_sha256"] and "created_at" in card and card["version"] is None
    assert parity_check(path, ExportWrapper(m).eval(), 96, seed=5) < 1e-3


def test_ssdlite_needs_the_extra():
    from helpers.errors import MissingExtra
    from helpers.train.model import build_ssdlite

    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtra, match=r"pip install \.\[ssd\]"):
            build_ssdlite(2)
    else:
        pytest.skip("torchvision is installed: the MissingExtra path cannot be shown")


def test_prefetching_batches_trains_the_same_model():
    """The next batch is augmented on a second thread: same random draws, same history and weights."""
    from helpers.sim.scenes import render_dataset
    from helpers.train.fomo import train_fomo
    from helpers.train.trainer import TrainParams

    items = render_dataset(12, [{"objects": ["apple"]}], size=(96, 96), seed=3)
    runs = []
    for prefetch in (False, True):
        params = TrainParams(input_size=64, width=0.25, epochs=3, batch_size=4, seed=0, threads=1, prefetch=prefetch)
        runs.append(train_fomo(items[:9], items[9:], ["apple"], params, progress=False))
    serial, ahead = runs
    assert [h["loss"] for h in serial.history] == [h["loss"] for h in ahead.history]
    assert all(torch.equal(a, b) for a, b in zip(serial.model.state_dict().values(), ahead.model.state_dict().values()))
    assert len(serial.history) == 3
