"""The training job's log as the notebooks' progress view, and the job's settings as the notebooks' TrainParams."""
from __future__ import annotations

import pytest

from helpers.localcloud.studio.train_job import train_params
from helpers.protocol.joblog import format_epoch_line, parse_epoch_line


def test_an_epoch_record_survives_the_log_line():
    rec = {"epoch": 7, "loss": 0.12345, "val_f1": 0.8125, "score_threshold": 0.45, "lr": 0.0031234, "elapsed_s": 42.3}
    line = format_epoch_line(rec, 40)
    assert line.startswith("Epoch 7/40: loss 0.12345, validation F1 0.8125, score threshold 0.45")
    back = parse_epoch_line(line)
    assert back == {"epoch": 7, "epochs": 40, "loss": 0.12345, "val_f1": 0.8125, "score_threshold": 0.45,
                    "lr": pytest.approx(0.003123), "elapsed_s": 42.3}
    nan = parse_epoch_line(format_epoch_line({"epoch": 1, "loss": float("nan"), "val_f1": 0.0}, 2))
    assert nan is not None and nan["val_f1"] == 0.0 and nan["loss"] != nan["loss"]  # nan stays nan


@pytest.mark.parametrize("line", ["Epoch 1/30", "Epoch 3/30: loss 0.1", "Finished training: best epoch 3",
                                  "Job completed", "Epoch 2/4: loss x, validation F1 0.5, score threshold 0.3, lr 0.1, 1.0 s",
                                  "12/12 [======] - 3s - loss: 0.4093 - val_loss: 0.3"])
def test_other_lines_are_not_epoch_records(line):
    assert parse_epoch_line(line) is None


def test_job_log_drives_the_live_plot_and_prints_the_rest(capsys, tmp_path, monkeypatch):
    from helpers import ui

    progress = tmp_path / "progress.json"
    monkeypatch.setenv(ui.PROGRESS_ENV, str(progress))
    plot = ui.LivePlot("t", epochs=2)
    view = ui.JobLog(plot)
    for rec in ({"epoch": 1, "loss": 0.5, "val_f1": 0.25, "score_threshold": 0.3, "lr": 0.004, "elapsed_s": 1.0},
                {"epoch": 2, "loss": 0.25, "val_f1": 0.75, "score_threshold": 0.35, "lr": 0.002, "elapsed_s": 2.0}):
        view(format_epoch_line(rec, 2))
    assert [h["val_f1"] for h in plot.history] == [0.25, 0.75] and [h["epoch"] for h in plot.history] == [1, 2]
    assert "epoch 2/2" in progress.read_text()  # the terminal line of a headless pipeline
    view("Finished training: best epoch 2 of 2")
    view("Epoch 3/30 - loss: 0.41 (an Edge Impulse log line)")
    out = capsys.readouterr().out
    assert "Finished training: best epoch 2 of 2" in out and "an Edge Impulse log line" in out and "Epoch 2/2" not in out
    assert "an Edge Impulse log line" in progress.read_text() and len(view.lines) == 4 and len(view.records) == 2


def test_job_settings_give_the_notebooks_train_params():
    from helpers.train.finetune import recommended_params
    from helpers.train.trainer import TrainParams

    job = {"arch": "fomo-box", "epochs": 12, "learningRate": 0.003, "batchSize": 8, "inputSize": 96, "color": "grayscale",
           "seed": 5, "valFraction": 0.25, "timeBudgetS": 30.0}
    assert train_params(job) == TrainParams(arch="fomo-box", input_size=96, color="grayscale", epochs=12, batch_size=8,
                                            lr=0.003, seed=5, val_fraction=0.25, time_budget_s=30.0)
    assert train_params({**job, "timeBudgetS": None}).time_budget_s is None
    ft = recommended_params(seed=2, val_fraction=0.3, time_budget_s=None)  # what notebook 04 builds for nanodet-ft
    got = train_params({"arch": "nanodet-ft", "epochs": ft.epochs, "learningRate": ft.lr, "batchSize": ft.batch_size,
                        "inputSize": ft.input_size, "color": ft.color, "seed": 2, "valFraction": 0.3, "timeBudgetS": None})
    assert got == ft and got.to_dict() == ft.to_dict()


def test_training_timeout_grows_with_the_work_and_a_budget_caps_it():
    from helpers.studio.edgeimpulse import training_timeout_s

    small, big = training_timeout_s(50, 10), training_timeout_s(100, 40)
    assert small < big == 300 + 0.5 * 100 * 40
    assert training_timeout_s(100, 40, "nanodet-ft") > big
    assert training_timeout_s(100, 40, time_budget_s=60) == 300 + 90
