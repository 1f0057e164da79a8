"""How the card's score threshold is chosen (threshold.best_threshold) and per-class decoding."""
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers.errors import ModelError  # noqa: E402
from helpers.geometry import BBox  # noqa: E402
from helpers.inference.onnx import OnnxDetector, decode, decode_ssd  # noqa: E402
from helpers.sim.scenes import render_dataset  # noqa: E402
from helpers.train.evaluate import detection_counts  # noqa: E402
from helpers.train.run import train_detector  # noqa: E402
from helpers.train.threshold import MIN_CLASS_OBJECTS, best_threshold, plateau_middle  # noqa: E402
from helpers.train.trainer import TrainParams  # noqa: E402

GRID = TrainParams().score_thresholds  # 0.2 .. 0.7


def _scene(n, tp_score, fp_score, label="apple", x0=0):
    """n images with one `label` each, found at `tp_score`, plus a false box at `fp_score`."""
    gts, preds = [], []
    for _i in range(n):
        g = BBox(label, x0 + 10, 10, 30, 30)
        gts.append([g])
        p = [BBox(label, g.x, g.y, g.width, g.height, value=tp_score)]
        if fp_score is not None:
            p.append(BBox(label, 100, 100, 20, 20, value=fp_score))
        preds.append(p)
    return gts, preds


def test_old_rule_sits_on_a_cliff_edge_the_plateau_rule_does_not():
    # Validation: objects score 0.75, false boxes 0.19 (just under the grid): F1 is 1.0 from
    # 0.2 to 0.7. The old rule takes 0.2, the plateau's lower edge.
    gts, preds = _scene(30, 0.75, 0.19)
    f1_old, thr_old, _ = best_threshold(gts, preds, ["apple"], GRID, "max")
    f1_new, thr_new, m = best_threshold(gts, preds, ["apple"], GRID, "plateau")
    assert (f1_old, thr_old) == (1.0, 0.2)
    assert f1_new == 1.0 and thr_new == pytest.approx(0.45)
    assert m["threshold_choice"]["plateau"] == [0.2, 0.7]
    assert m["threshold_choice"]["images"] == 30 and m["threshold_choice"]["objects"] == {"apple": 30}
    # Unseen images score a little differently (false boxes 0.25, objects 0.65): the edge falls off.
    tg, tp = _scene(30, 0.65, 0.25)

    def test_f1(thr):
        return detection_counts(tg, [[b for b in p if b.value >= thr] for p in tp], ["apple"])[1].f1

    assert test_f1(thr_old) == pytest.approx(2 / 3)
    assert test_f1(thr_new) == 1.0


def test_plateau_is_bounded_by_the_noise_of_one_object():
    f1s = [0.5, 0.9, 0.96, 0.97, 0.965, 0.8, 0.7]
    assert plateau_middle(f1s, 0.01) == (3, 2, 4)
    assert plateau_middle(f1s, 0.0) == (3, 3, 3)
    assert plateau_middle(f1s, 0.2) == (3, 1, 5)
    with pytest.raises(ValueError):
        plateau_middle([], 0.1)


def test_per_class_thresholds_only_for_classes_with_enough_objects():
    labels = ["apple", "banana"]
    # Apples: flat F1 from 0.2 to 0.7. Bananas: found at 0.45, false boxes up to 0.38.
    ga, pa = _scene(MIN_CLASS_OBJECTS, 0.75, 0.19, "apple")
    gb, pb = _scene(MIN_CLASS_OBJECTS, 0.45, 0.38, "banana", x0=200)
    gts = [a + b for a, b in zip(ga, gb)]
    preds = [a + b for a, b in zip(pa, pb)]
    f1, thr, m = best_threshold(gts, preds, labels, GRID, "plateau-per-class")
    ch = m["threshold_choice"]
    assert ch["class_thresholds"] == {"apple": 0.45, "banana": 0.4}
    assert ch["per_class"]["banana"]["plateau"] == [0.4, 0.45]
    assert f1 == 1.0 and m["per_class"]["banana"]["f1"] == 1.0
    # The same data, one banana short of the minimum: bananas keep the overall threshold.
    gts[0] = [b for b in gts[0] if b.label == "apple"]
    preds[0] = [b for b in preds[0] if b.label == "apple"]
    f1, thr, m = best_threshold(gts, preds, labels, GRID, "plateau-per-class")
    assert set(m["threshold_choice"]["class_thresholds"]) == {"apple"}


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="threshold rule"):
        best_threshold([[]], [[]], ["apple"], GRID, "median")
    with pytest.raises(ValueError, match="threshold_rule"):
        TrainParams(threshold_rule="median").check()


def test_decode_honours_class_thresholds():
    heat = np.zeros((2, 12, 12), np.float32)
    heat[0, 2, 2] = 0.5  # apple
    heat[1, 8, 8] = 0.5  # banana
    ltrb = np.full((4, 12, 12), 6.0, np.float32)
    both = decode(heat, ltrb, ["apple", "banana"], (96, 96), 96, score_threshold=0.4)
    assert sorted(b.label for b in both) == ["apple", "banana"]
    only = decode(heat, ltrb, ["apple", "banana"], (96, 96), 96, score_threshold=0.4, class_thresholds=[0.4, 0.6])
    assert [b.label for b in only] == ["apple"]
    boxes = np.array([[10, 10, 30, 30], [50, 50, 80, 80]], np.float32)
    scores = np.array([[0.5, 0.0], [0.0, 0.5]], np.float32)
    assert [b.label for b in decode_ssd(boxes, scores, ["apple", "banana"], (96, 96), 96, 0.4,
                                        class_thresholds=[0.6, 0.4])] == ["banana"]
    with pytest.raises(ModelError, match="class thresholds"):
        decode(heat, ltrb, ["apple", "banana"], (96, 96), 96, class_thresholds=[0.5])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model")
    export_onnx(FomoBox(2, width=0.35).eval(), d, {"labels": ["apple", "banana"], "input_size": 96,
                                                  "score_threshold": 0.0, "arch": "fomo-box",
                                                  "head": {"type": "centernet", "stride": 8}})
    return d


def _with_card(model_dir, tmp_path, **update):
    dst = tmp_path / "m"
    shutil.copytree(model_dir, dst)
    card = json.loads((dst / "model.json").read_text())
    card.update(update)
    (dst / "model.json").write_text(json.dumps(card))
    return dst


def test_detector_uses_the_cards_class_thresholds(model_dir, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    plain = OnnxDetector(model_dir).detect(rgb)
    assert {b.label for b in plain} == {"apple", "banana"}, "threshold 0 keeps every peak of both classes"
    det = OnnxDetector(_with_card(model_dir, tmp_path, class_thresholds={"apple": 1.0}))
    assert det.class_thresholds == {"apple": 1.0}
    assert {b.label for b in det.detect(rgb)} == {"banana"}
    # An explicit threshold (a runner's setting, an evaluation sweep) overrides the card's.
    assert {b.label for b in det.detect(rgb, score_threshold=0.0)} == {"apple", "banana"}


def test_detector_refuses_bad_class_thresholds(model_dir, tmp_path):
    with pytest.raises(ModelError, match="class_thresholds"):
        OnnxDetector(_with_card(model_dir, tmp_path, class_thresholds={"orange": 0.5}))


def test_the_card_records_how_the_threshold_was_chosen():
    items = render_dataset(10, [{"objects": ["apple", "banana"]}], size=(96, 96), seed=3)
    params = TrainParams(input_size=96, width=0.35, epochs=1, batch_size=4, threads=1, min_epochs=1,
                         threshold_rule="plateau-per-class")
    res = train_detector(items[:6], items[6:], ["apple", "banana"], params, progress=False)
    card = res.card()
    ch = card["threshold_choice"]
    assert ch["rule"] == "plateau-per-class" and ch["images"] == 4
    assert ch["objects"] == {n: sum(1 for _, bs in items[6:] for b in bs if b.label == n) for n in ("apple", "banana")}
    assert ch["plateau"][0] <= card["score_threshold"] <= ch["plateau"][1]
    assert "threshold_choice" not in card["metrics"]["validation"]
    # 4 validation images hold too few objects for a threshold per class.
    assert "class_thresholds" not in card
    assert TrainParams().threshold_rule == "plateau"
