"""Notebook 04's model-choice table reads the benchmark run that measured the models together."""
from __future__ import annotations

import json

import pytest

from helpers.errors import DatasetError
from helpers.train.choices import CHOICE_RESULT, measured_on, model_choices


def _test(f1, per, map50):
    return {"overall_f1": f1, "per_class": {k: {"f1": v} for k, v in per.items()}, "map50": map50}


def _result(**drop):
    data = {
        "created_at": "2026-12-01T23:00:00+00:00", "git_commit": "abcdef0123", "machine": {"cpus": 2},
        "runner": {"nanodet-ft": {"224": {"cpu_ms_median": 29.51, "peak_rss_mb": 385.2}},
                   "fomo-box_160": {"cpu_ms_median": 4.93, "peak_rss_mb": 370.0},
                   "coco_zero_shot_416": {"cpu_ms_median": 94.7, "peak_rss_mb": 411.6, "onnx_bytes": 15_241_888}},
        "baselines": {
            "from_scratch": {"input_size": 160, "test": _test(0.66, {"apple": 0.74, "banana": 0.5}, 0.6),
                             "train_cpu_s": 182.7, "onnx_bytes": 945_404},
            "synthetic_pretrained": {"input_size": 160, "test": _test(0.79, {"apple": 0.81, "banana": 0.82}, 0.77),
                                     "train_cpu_s": 486.8, "onnx_bytes": 945_404}},
        "zero_shot": {"overall_f1": 0.69, "per_class": {"apple": {"f1": 0.76}, "banana": {"f1": 0.55}}, "map50": 0.65},
        "finetune": {"params": {"input_size": 224}, "test": _test(0.9, {"apple": 0.89, "banana": 0.85}, 0.92),
                     "train_cpu_s": 923.4, "onnx_bytes": 15_082_380, "load_avg_start": [1.5, 1, 1],
                     "train_images": 163, "val_images": 29, "test_images": 48},
    }
    for k in drop:
        data.pop(k)
    return data


def test_rows_carry_each_models_figures(tmp_path):
    p = tmp_path / "choice.json"
    p.write_text(json.dumps(_result()))
    rows = model_choices(p)
    assert [r["model"] for r in rows] == ["fomo-box", "fomo-box", "COCO zero-shot (label assist)", "nanodet-ft"]
    scratch, synth, coco, ft = rows
    assert scratch["starts from"] == "random weights" and scratch["F1@0.5"] == 0.66
    assert synth["starts from"] == "synthetic renders" and synth["training (CPU s)"] == 487
    assert scratch["ms / frame (1 thread)"] == 4.9 and scratch["model (MB)"] == 0.9
    assert coco["training (CPU s)"] == "-" and coco["ms / frame (1 thread)"] == 94.7 and coco["model (MB)"] == 15.2
    assert ft["input"] == "224 px" and ft["F1@0.5"] == 0.9 and ft["per class"] == "apple 0.89, banana 0.85"
    assert ft["ms / frame (1 thread)"] == 29.5 and ft["runner RSS (MB)"] == 385 and ft["model (MB)"] == 15.1
    line = measured_on(p)
    assert "2026-12-01" in line and "163 train / 29 val / 48 test" in line and "load 1.5" in line


def test_missing_file_or_phase_names_the_command(tmp_path):
    with pytest.raises(DatasetError, match="make bench-nanodet"):
        model_choices(tmp_path / "absent.json")
    p = tmp_path / "partial.json"
    p.write_text(json.dumps(_result(baselines=True)))
    with pytest.raises(DatasetError, match="baselines"):
        model_choices(p)


@pytest.mark.skipif(not CHOICE_RESULT.is_file(), reason=f"{CHOICE_RESULT} not committed yet (make bench-nanodet)")
def test_the_committed_result_gives_every_choice():
    rows = model_choices()
    archs = [r["arch"] for r in rows]
    assert archs.count("fomo-box") == 2 and "nanodet-ft" in archs
    assert all(0 < r["F1@0.5"] <= 1 and r["ms / frame (1 thread)"] > 0 for r in rows)
