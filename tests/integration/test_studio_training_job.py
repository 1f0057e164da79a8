"""Notebooks 04 and 06 train through the Studio's job API: the job trains exactly what the kernel did.

On the local stand-in, `EdgeImpulseStudio.set_impulse` + `train` (the official `edgeimpulse-api`
client: `ImpulseApi`, `DSPApi`, `LearnApi.set_keras`, `JobsApi.train_keras_job`, `get_job_status`,
`get_jobs_logs`, `LearnApi.download_learn_model`) must give the model a direct
`run.train_detector` call gives for the same settings and seed: the same training settings on
the card, the same per-epoch losses and validation F1, the same best epoch, validation F1 and
score threshold, and the same ONNX outputs.
"""
from __future__ import annotations

import json

import cv2
import pytest

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def _upload_synthetic(studio, n_train: int = 20, n_test: int = 4) -> None:
    from helpers.sim.scenes import render_dataset

    scenes = [{"objects": ["apple"], "distractors": []}, {"objects": ["apple", "banana"], "distractors": []},
              {"objects": ["banana"], "distractors": []}]
    for split, n, seed in (("training", n_train, 11), ("testing", n_test, 12)):
        for i, (rgb, boxes) in enumerate(render_dataset(n, scenes, size=(96, 96), seed=seed)):
            ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            assert ok
            name = f"{split}-{i}.png"
            r = studio.upload([(name, buf.tobytes())], category=split, boxes={name: boxes})[0]
            assert r.sample_id, r


def test_job_trains_what_the_kernel_trains_for_the_same_seed(fresh_cloud, tmp_path):
    from helpers import ui
    from helpers.inference.card import load_card
    from helpers.inference.onnx import OnnxDetector
    from helpers.protocol.joblog import parse_epoch_line
    from helpers.studio.edgeimpulse import EdgeImpulseStudio
    from helpers.train import data, run, trainer

    studio = EdgeImpulseStudio(fresh_cloud.workspace)
    _upload_synthetic(studio)
    # what notebook 04 builds in the kernel, with a seed, validation share and budget off the defaults
    params = trainer.TrainParams(arch="fomo-box", input_size=96, color="RGB", epochs=4, batch_size=8, lr=5e-3, seed=3,
                                 val_fraction=0.25, time_budget_s=600.0)
    imp = studio.set_impulse(input_size=params.input_size, color=params.color, arch=params.arch, epochs=params.epochs,
                             learning_rate=params.lr, batch_size=params.batch_size, validation_split=params.val_fraction,
                             seed=params.seed, time_budget_s=params.time_budget_s)
    assert (imp["seed"], imp["validation_split"], imp["time_budget_s"], imp["epochs"]) == (3, 0.25, 600.0, 4)
    keras = studio.api("LearnApi").get_keras(studio.project_id, imp["learn_id"])
    assert keras.train_test_split == 0.25 and keras.custom_parameters == {"arch": "fomo-box", "seed": "3", "time_budget_s": "600.0"}

    plot = ui.LivePlot("job", epochs=params.epochs)
    view = ui.JobLog(plot)
    job = studio.train(tmp_path / "job", timeout_s=480, poll_s=0.5, on_log=view, register=False)
    assert job["format"] == "onnx" and job["version"] is None
    assert any("seed 3, validation 0.25, time budget 600 s" in ln for ln in job["log"]), job["log"][:2]
    onnx_path, card = load_card(tmp_path / "job")

    train_items, test_items, labels, snapshot_id = data.load_studio_snapshot(studio)
    assert card["dataset"]["studio_snapshot"] == snapshot_id and card["labels"] == labels == ["apple", "banana"]
    direct = run.train_detector(train_items, None, labels, params, progress=False)

    assert card["training"] == json.loads(json.dumps(params.to_dict()))  # every TrainParams field reached the job
    epochs = [parse_epoch_line(ln) for ln in job["log"]]
    epochs = [e for e in epochs if e is not None]
    assert [e["epoch"] for e in epochs] == [h["epoch"] for h in direct.history] == [h["epoch"] for h in plot.history]
    assert [e["loss"] for e in epochs] == [h["loss"] for h in direct.history]
    assert [e["val_f1"] for e in epochs] == [h["val_f1"] for h in direct.history]
    assert card["metrics"]["best_epoch"] == direct.best_epoch
    assert card["metrics"]["validation"]["f1"] == direct.val_f1
    assert card["score_threshold"] == direct.score_threshold
    assert len({h["loss"] for h in direct.history}) == len(direct.history)  # real numbers to compare, not constants
    assert card.get("class_thresholds") == direct.card().get("class_thresholds")

    from helpers.train.export import export_result

    export_result(direct, tmp_path / "direct")
    a, b = OnnxDetector(tmp_path / "job"), OnnxDetector(tmp_path / "direct")
    compared = 0
    for rgb, _ in train_items[:4] + test_items:
        found = [[(d.label, round(d.x, 2), round(d.y, 2), round(d.value or 0, 4)) for d in m.detect(rgb, score_threshold=0.01)]
                 for m in (a, b)]
        assert found[0] == found[1]
        compared += len(found[0])
    assert compared > 0  # the two models' boxes and scores were compared, not two empty lists


def test_bad_training_settings_are_refused_with_the_field(fresh_cloud):
    from edgeimpulse_api.models import SetKerasParameterRequest

    from helpers.errors import ServiceError
    from helpers.studio.edgeimpulse import EdgeImpulseStudio

    studio = EdgeImpulseStudio(fresh_cloud.workspace)
    imp = studio.set_impulse(input_size=224, arch="nanodet-ft", epochs=2, seed=1)  # nanodet-ft's 224 px is an input size
    assert (imp["input_size"], imp["arch"], imp["seed"], imp["time_budget_s"]) == (224, "nanodet-ft", 1, None)
    for bad, field in (({"custom_parameters": {"seed": "one"}}, "customParameters.seed"),
                       ({"custom_parameters": {"time_budget_s": "-5"}}, "customParameters.time_budget_s"),
                       ({"custom_parameters": {"warm_start": "1"}}, "customParameters"),
                       ({"train_test_split": 1.5}, "trainTestSplit")):
        with pytest.raises(ServiceError) as e:
            studio._call("LearnApi", "set_keras", studio.project_id, imp["learn_id"], SetKerasParameterRequest(**bad))  # noqa: SLF001
        assert e.value.status == 400 and e.value.field == field, (bad, e.value)
    with pytest.raises(ValueError, match="validation_split"):
        studio.set_impulse(validation_split=0.0)
    assert studio.get_impulse()["seed"] == 1  # nothing half-applied


def test_timeout_message_names_what_to_change(fresh_cloud, tmp_path):
    from helpers.studio.edgeimpulse import EdgeImpulseStudio, TrainingFailed

    studio = EdgeImpulseStudio(fresh_cloud.workspace)
    _upload_synthetic(studio, n_train=6, n_test=2)
    studio.set_impulse(input_size=96, epochs=500, batch_size=2)
    with pytest.raises(TrainingFailed, match="train_timeout_s parameter"):
        studio.train(tmp_path / "slow", timeout_s=2, poll_s=0.5)
    assert studio.api("JobsApi").list_active_jobs(studio.project_id).jobs == []
    assert not (tmp_path / "slow" / "model.onnx").exists()
