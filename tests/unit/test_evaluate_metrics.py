"""Metrics on hand-made cases: perfect predictions, swapped classes, misses, false alarms."""
import json

import numpy as np
import pytest

from helpers.errors import DatasetError, ModelError
from helpers.geometry import BBox
from helpers.train.evaluate import check_labels, coco_map, confusion_matrix, detection_counts

LABELS = ["apple", "banana"]
GT = [
    [BBox("apple", 10, 10, 40, 40), BBox("banana", 100, 20, 80, 30)],
    [BBox("apple", 50, 60, 30, 30)],
]


def _pred(boxes, score=0.9):
    return [BBox(b.label, b.x, b.y, b.width, b.height, value=score) for b in boxes]


def test_perfect_predictions_give_f1_one_and_map_one():
    preds = [_pred(g) for g in GT]
    per, overall = detection_counts(GT, preds, LABELS)
    assert overall.f1 == 1.0 and per["apple"].f1 == 1.0 and per["banana"].f1 == 1.0
    assert per["apple"].support == 2
    map50, map_, per_ap = coco_map(GT, preds, LABELS, [(200, 100), (200, 100)])
    assert map50 == pytest.approx(1.0) and map_ == pytest.approx(1.0)
    assert per_ap["banana"][0] == pytest.approx(1.0)
    cm = confusion_matrix(GT, preds, LABELS)
    assert cm["names"] == ["apple", "banana", "background"]
    assert cm["matrix"] == [[2, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_swapped_classes_show_in_the_confusion_matrix():
    swap = {"apple": "banana", "banana": "apple"}
    preds = [[BBox(swap[b.label], b.x, b.y, b.width, b.height, value=0.8) for b in g] for g in GT]
    per, overall = detection_counts(GT, preds, LABELS)
    assert overall.f1 == 0.0 and overall.fp == 3 and overall.fn == 3
    cm = confusion_matrix(GT, preds, LABELS)
    names = cm["names"]
    m = cm["matrix"]
    assert m[names.index("apple")][names.index("banana")] == 2
    assert m[names.index("banana")][names.index("apple")] == 1
    assert m[names.index("apple")][names.index("apple")] == 0
    json.dumps(cm)  # serialisable


def test_miss_false_alarm_and_localisation():
    preds = [
        [BBox("apple", 12, 12, 40, 40, value=0.9), BBox("apple", 300, 300, 20, 20, value=0.7)],  # hit + false alarm
        [BBox("apple", 120, 120, 30, 30, value=0.9)],  # wrong place: a miss and a false alarm
    ]
    per, overall = detection_counts(GT, preds, LABELS)
    assert (per["apple"].tp, per["apple"].fp, per["apple"].fn) == (1, 2, 1)
    assert (per["banana"].tp, per["banana"].fp, per["banana"].fn) == (0, 0, 1)
    assert per["apple"].precision == pytest.approx(1 / 3) and per["apple"].recall == pytest.approx(0.5)
    cm = confusion_matrix(GT, preds, LABELS)
    n = cm["names"]
    assert cm["matrix"][n.index("banana")][n.index("background")] == 1
    assert cm["matrix"][n.index("background")][n.index("apple")] == 2


def test_duplicate_prediction_is_a_false_positive():
    preds = [_pred(GT[0]) + [BBox("apple", 11, 11, 40, 40, value=0.5)], _pred(GT[1])]
    per, _ = detection_counts(GT, preds, LABELS)
    assert per["apple"].tp == 2 and per["apple"].fp == 1


def test_unknown_class_counts_as_called_apple():
    # The apple-only model sees a banana and says apple: one cell of the matrix.
    gt = [[BBox("banana", 10, 10, 60, 30)]]
    preds = [[BBox("apple", 12, 10, 58, 30, value=0.7)]]
    cm = confusion_matrix(gt, preds, ["apple"])
    n = cm["names"]
    assert n == ["apple", "banana", "background"]
    assert cm["matrix"][n.index("banana")][n.index("apple")] == 1


def test_check_labels():
    check_labels(["apple", "banana"], ["banana", "apple"])
    check_labels(["apple", "banana"], ["apple"])  # a test set without bananas is fine
    with pytest.raises(ModelError, match="does not know"):
        check_labels(["apple"], ["apple", "banana"])
    check_labels(["apple"], ["apple", "banana"], allow_unknown=True)
    check_labels(["apple"], ["banana"], allow_unknown=True)  # the apple model meets bananas
    with pytest.raises(ModelError, match="do not match"):
        check_labels(["banana"], ["apple"])


def test_no_predictions_map_zero():
    map50, map_, per = coco_map(GT, [[], []], LABELS, [(200, 100)] * 2)
    assert map50 == 0.0 and per["apple"] == (0.0, 0.0)


def test_evaluate_detector_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    from helpers.inference.onnx import OnnxDetector
    from helpers.train.evaluate import evaluate_detector
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    torch.manual_seed(0)
    export_onnx(FomoBox(2, width=0.35).eval(), tmp_path, {"labels": LABELS, "input_size": 96})
    det = OnnxDetector(tmp_path)
    items = [(np.zeros((100, 200, 3), np.uint8), g) for g in GT]
    rep = evaluate_detector(det, items, latency_runs=5)
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["images"] == 2 and set(d["per_class"]) >= {"apple", "banana"}
    assert d["latency_ms"]["median"] > 0 and d["latency_ms"]["threads"] == 1
    assert d["confusion"]["names"][-1] == "background"
    with pytest.raises(DatasetError):
        evaluate_detector(det, [])
    with pytest.raises(ModelError):
        evaluate_detector(det, [(np.zeros((50, 50, 3), np.uint8), [BBox("orange", 1, 1, 10, 10)])])
