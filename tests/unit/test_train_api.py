"""train_detector's argument checks, callback, and the model card it produces."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers.errors import DatasetError  # noqa: E402
from helpers.sim.scenes import render_dataset  # noqa: E402
from helpers.train.fomo import focal_heat_loss, load_matching_weights  # noqa: E402
from helpers.train.model import FomoBox  # noqa: E402
from helpers.train.run import train_detector  # noqa: E402
from helpers.train.trainer import TrainParams  # noqa: E402

TINY = dict(input_size=96, width=0.35, epochs=2, batch_size=4, threads=1, min_epochs=1)


@pytest.fixture(scope="module")
def items():
    return render_dataset(8, [{"objects": ["apple", "banana"]}], size=(96, 96), seed=3)


def test_refuses_bad_data(items):
    labels = ["apple", "banana"]
    with pytest.raises(DatasetError, match="empty"):
        train_detector([], None, labels, TrainParams(**TINY), progress=False)
    with pytest.raises(DatasetError, match="only 1 image"):
        train_detector(items[:1], None, labels, TrainParams(**TINY), progress=False)
    with pytest.raises(DatasetError, match="no boxes for class"):
        train_detector(items, None, labels + ["orange"], TrainParams(**TINY), progress=False)
    with pytest.raises(DatasetError, match="not one of"):
        train_detector(items, None, ["apple"], TrainParams(**TINY), progress=False)
    with pytest.raises(ValueError, match="input_size"):
        train_detector(items, None, labels, TrainParams(**{**TINY, "input_size": 100}), progress=False)


@pytest.mark.parametrize("over, message", [
    ({"score_threshold": 1.2}, "score_threshold must be between 0 and 1"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ({"val_fraction": 0.0, "score_threshold": 0.4}, "nanodet-ft only"),
    ({"arch": "nanodet-ft", "input_size": 224, "val_fraction": 0.0}, "--score-threshold"),
])
def test_threshold_and_validation_settings_are_checked(over, message):
    with pytest.raises(ValueError, match=message):
        TrainParams(**{**TINY, **over}).check()


def test_a_fixed_threshold_is_the_cards(items):
    """With `score_threshold` set, validation F1 is measured at it and the card carries it."""
    res = train_detector(items[:6], items[6:], ["apple", "banana"], TrainParams(**TINY, score_threshold=0.35),
                         progress=False)
    assert res.score_threshold == 0.35 and all(h["score_threshold"] == 0.35 for h in res.history)
    assert res.card()["score_threshold"] == 0.35 and res.card()["training"]["score_threshold"] == 0.35


def test_trains_calls_back_and_fills_the_card(items):
    seen = []
    res = train_detector(items[:6], items[6:], ["apple", "banana"], TrainParams(**TINY), progress=False,
                         callback=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2]
    assert {"loss", "val_f1", "epoch", "score_threshold"} <= set(seen[0])
    assert np.isfinite(seen[-1]["loss"])
    card = res.card()
    assert card["labels"] == ["apple", "banana"] and card["input_size"] == 96 and card["arch"] == "fomo-box"
    assert card["version"] is None and card["parent_version"] is None
    assert len(card["dataset"]["hash"]) == 64 and card["training"]["epochs"] == 2
    assert not res.model.training


def test_callback_can_stop(items):
    res = train_detector(items[:6], items[6:], ["apple", "banana"], TrainParams(**{**TINY, "epochs": 5}),
                         progress=False, callback=lambda r: False)
    assert len(res.history) == 1


def test_focal_loss_prefers_the_right_answer():
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 2] = 1.0
    good = torch.full((1, 1, 4, 4), -6.0)
    good[0, 0, 1, 2] = 6.0
    bad = -good
    assert focal_heat_loss(good, target) < 0.01 < focal_heat_loss(bad, target)


def test_pretrained_weights_map_heat_rows_by_label():
    src = FomoBox(2, 0.35)
    with torch.no_grad():
        src.heat[1].weight[0].fill_(1.0)  # apple row
        src.heat[1].weight[1].fill_(2.0)  # banana row
    dst = FomoBox(1, 0.35)
    load_matching_weights(dst, src.state_dict(), ["banana"], ["apple", "banana"])
    assert float(dst.heat[1].weight[0].detach().mean()) == 2.0
    assert torch.equal(dst.stem[0].weight, src.stem[0].weight)


def test_synthetic_pretraining_is_cached_under_the_workspace(tmp_path):
    from helpers.sim.pretrain import synthetic_pretrained

    params = TrainParams(**{**TINY, "pretrain_images": 6, "pretrain_epochs": 1})
    state, labels, path = synthetic_pretrained(params, workspace=tmp_path, progress=False)
    assert labels == ["apple", "banana"]
    assert path.is_file() and path.parent == tmp_path / "models" / "pretrained"
    assert json.loads(path.with_suffix(".json").read_text()) == {"labels": ["apple", "banana"]}  # the weights' labels
    mtime = path.stat().st_mtime_ns
    state2, _, path2 = synthetic_pretrained(params, workspace=tmp_path, progress=False)
    assert path2 == path and path.stat().st_mtime_ns == mtime  # reused, not retrained
    assert all(torch.equal(state[k], state2[k]) for k in state)
    # and fine-tuning starts from it
    res = train_detector(render_dataset(4, [{"objects": ["banana"]}], size=(96, 96), seed=1), None, ["banana"],
                         TrainParams(**{**TINY, "epochs": 1, "pretrain_images": 6, "pretrain_epochs": 1,
                                        "pretrained": str(path)}), progress=False)
    assert res.model.num_classes == 1


def test_greyscale_model_takes_one_channel_end_to_end(items, tmp_path):
    """Colour depth "grayscale" (Edge Impulse's option): one input channel, in training, in the
    ONNX file and in the device's preprocessing; the card says so."""
    from helpers.inference.onnx import OnnxDetector
    from helpers.train.export import export_result

    r = train_detector(items[:6], items[6:], ["apple", "banana"], TrainParams(**TINY, color="grayscale"), progress=False)
    export_result(r, tmp_path)
    det = OnnxDetector(tmp_path)
    assert det.card["color"] == "grayscale" and det.card["preprocessing"]["channel_order"] == "grayscale"
    assert det.preprocess(items[0][0]).shape == (1, 1, 96, 96)
    assert det.session.get_inputs()[0].shape[1] == 1
    assert isinstance(det.detect(items[0][0], score_threshold=0.0), list)
    with pytest.raises(ValueError, match="color"):
        TrainParams(color="sepia").check()
    with pytest.raises(ValueError, match="RGB"):
        TrainParams(arch="ssdlite320", input_size=320, color="grayscale").check()


def test_greyscale_preprocessing_is_luma():
    from helpers.inference.onnx import preprocess, preprocessing_for

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 255  # pure green: luma 0.587
    x = preprocess(rgb, 8, preprocessing_for("grayscale"))
    assert x.shape == (1, 1, 8, 8)
    assert np.allclose(x, (0.587 - 0.449) / 0.226, atol=1e-3)
    with pytest.raises(ValueError, match="colour depth"):
        preprocessing_for("sepia")


def test_best_epoch_prefers_the_low_learning_rate_tail():
    """A lucky early epoch does not beat the decayed weights; before the tail the best so far is kept."""
    from helpers.train.trainer import BestEpoch

    model = FomoBox(1, 0.35)
    best = BestEpoch(TrainParams(epochs=8, patience=2))  # the tail starts at epoch 6
    assert best.first_stop == 6
    for epoch, f1 in [(1, 0.5), (2, 0.99), (3, 0.7), (4, 0.8), (5, 0.8)]:
        best.update(epoch, f1, 0.4, {}, model)
        assert not best.should_stop(epoch)
    assert best.epoch == 2  # what a time budget ending here would keep
    best.update(6, 0.9, 0.45, {}, model)
    assert (best.epoch, best.f1) == (6, 0.9)
    assert best.update(7, 0.9, 0.5, {}, model) and best.epoch == 7  # ties go to the later epoch
    assert not best.update(8, 0.85, 0.5, {}, model)
    assert not best.should_stop(8)
    assert best.should_stop(9)


def test_train_and_export_needs_a_dataset_or_a_studio(tmp_path):
    """No default studio: the studio stand-in's training job imports this without any client."""
    from helpers.train.run import train_and_export

    with pytest.raises(ValueError, match="dataset=.*studio="):
        train_and_export(tmp_path / "model")
