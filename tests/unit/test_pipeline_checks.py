"""Checks count: `results.check` records every check, and the pipeline's verdict follows them."""
from __future__ import annotations

import io
import json
import time

import pytest

from helpers import pipeline, results
from helpers.errors import ConfigError


def test_check_prints_the_line_records_it_and_returns_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(results.NOTEBOOK_ENV, "04_train")
    assert results.check("apple F1 >= 0.9", 0.93 >= 0.9, measured=0.93, workspace=tmp_path) is None
    results.check("ONNX output matches torch", False, workspace=tmp_path)
    results.check("apple F1 >= 0.9", 0.5 >= 0.9, measured=0.5, workspace=tmp_path)  # the cell ran again
    assert capsys.readouterr().out.splitlines() == [
        "apple F1 >= 0.9: True", "ONNX output matches torch: False", "apple F1 >= 0.9: False"]
    checks = results.load_checks("04_train", tmp_path)
    assert checks == [
        {"label": "ONNX output matches torch", "ok": False, "notebook": "04_train"},
        {"label": "apple F1 >= 0.9", "ok": False, "notebook": "04_train", "measured": 0.5},
    ]
    assert "checks" not in results.load_all(tmp_path)  # the checks folder is not a notebook's results
    results.clear_checks("04_train", tmp_path)
    assert results.load_checks("04_train", tmp_path) == []


def test_check_outside_the_pipeline_goes_to_interactive(tmp_path, monkeypatch):
    monkeypatch.delenv(results.NOTEBOOK_ENV, raising=False)
    results.check("pi-1 online", True, workspace=tmp_path)
    assert results.load_checks("interactive", tmp_path)[0]["ok"] is True


def _summary(*runs):
    s = pipeline.Summary(profile="smoke", backend="local", workspace="/ws", notebooks=list(runs), total_s=12.0)
    s.load_avg = {"start": [1.5, 1, 1], "end": [2.5, 2, 2]}
    return s


def test_a_false_check_fails_the_summary_and_is_named_in_the_table():
    good = pipeline.NotebookRun("01_setup_hub", "ok", 2.0, checks=[{"label": "pi-1 online", "ok": True}])
    bad = pipeline.NotebookRun("04_train", "failed", 30.0, checks=[
        {"label": "apple F1 >= 0.9", "ok": False, "measured": 0.41}, {"label": "ONNX output matches torch", "ok": True}])
    summary = _summary(good, bad)
    assert not summary.ok
    assert [c["label"] for c in summary.failed_checks] == ["apple F1 >= 0.9"]
    table = pipeline.format_table(summary)
    assert "check failed: apple F1 >= 0.9 (measured 0.41)" in table
    assert "FAILED" in table and "checks: 2 of 3 true" in table and "1.5 at start" in table
    d = summary.to_dict()
    assert d["ok"] is False and len(d["checks"]) == 3 and d["failed_checks"][0]["measured"] == 0.41
    assert _summary(good).ok and not _summary().ok  # nothing run is not a success


def test_param_overrides_are_parsed_and_checked():
    assert pipeline.parse_overrides(["04.epochs=1", "06_retrain_banana.min_f1=0.95", "03.labeler=oracle",
                                     "01.device_ids=['a', 'b']"]) == {
        "04_train": {"epochs": 1}, "06_retrain_banana": {"min_f1": 0.95}, "03_label_review": {"labeler": "oracle"},
        "01_setup_hub": {"device_ids": ["a", "b"]}}
    assert pipeline.parameters_for("smoke", "04_train", 3, {"04_train": {"epochs": 1}})["epochs"] == 1
    with pytest.raises(ConfigError, match="NOTEBOOK.NAME=VALUE"):
        pipeline.parse_overrides(["epochs=1"])
    with pytest.raises(ConfigError, match="matches no notebook"):
        pipeline.parse_overrides(["09.epochs=1"])
    with pytest.raises(ConfigError, match="never parameters"):
        pipeline.parse_overrides(["01.api_key=abc"])


def test_cell_limits_grow_with_the_training_work():
    smoke = {nb: pipeline.parameters_for("smoke", nb) for nb in pipeline.NOTEBOOKS}
    workshop = {nb: pipeline.parameters_for("workshop", nb) for nb in pipeline.NOTEBOOKS}
    assert pipeline.cell_timeout_for("01_setup_hub", workshop, 900) == 900
    assert pipeline.cell_timeout_for("04_train", workshop, 900) == 900 + 0.5 * 120 * 30
    assert pipeline.cell_timeout_for("06_retrain_banana", workshop, 900) == 900 + 0.5 * 240 * 30
    assert pipeline.cell_timeout_for("04_train", smoke, 900) < pipeline.cell_timeout_for("04_train", workshop, 900)


def test_thresholds_are_not_far_below_what_runs_measure():
    """The README's reference runs score apple/banana F1 >= 0.95: a check at 0.5 could not fail."""
    for profile in pipeline.PROFILES:
        for nb in ("04_train", "06_retrain_banana"):
            assert pipeline.parameters_for(profile, nb)["min_f1"] >= 0.85, (profile, nb)


def test_progress_prints_the_step_and_the_kernels_report(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 4. Train"), nbformat.v4.new_code_cell("1"),
                                         nbformat.v4.new_markdown_cell("## Export to ONNX"), nbformat.v4.new_code_cell("2")])
    assert pipeline.step_titles(nb) == ["4. Train", "4. Train", "Export to ONNX", "Export to ONNX"]
    out = io.StringIO()
    progress = pipeline.Progress(tmp_path / "p.json", every_s=0.5, stream=out, announce_s=0.3)
    progress.start_notebook("04_train", nb)
    progress.cell_started(1)
    progress.tick()
    assert out.getvalue() == ""  # a quick step passes silently
    (tmp_path / "p.json").write_text(json.dumps({"line": "training apple: epoch 3/40"}))
    time.sleep(0.35)
    progress.tick()
    progress.tick()  # not due again yet
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[pipeline] 04_train 0:00  step: 4. Train (0:00)")
    assert lines[0].endswith("| training apple: epoch 3/40")
    progress.cell_started(3)
    time.sleep(0.35)
    progress.tick()
    assert "step: Export to ONNX" in out.getvalue().splitlines()[-1]
    progress.end_notebook()
    progress.tick()
    assert len(out.getvalue().splitlines()) == 2
    progress.close()


def test_the_final_table_tells_the_story_from_the_recorded_results():
    run = pipeline.NotebookRun("06_retrain_banana", "ok", 100.0, checks=[{"label": "gate passed", "ok": True}])
    summary = _summary(run)
    summary.results = {
        "03_label_review": {"labeled": 120, "label_grade": {"frames": 120, "share_right": 0.875}},
        "04_train": {"model_version": 1, "f1": {"apple": 0.9712}},
        "06_retrain_banana": {"model_version": 2, "f1": {"apple": 0.95, "banana": 0.9333}, "gate_passed": True,
                              "heldout_banana_called_apple_before": 0.85, "heldout_banana_called_apple_after": 0.02,
                              "heldout_banana_images": 40, "banana_called_apple_before": 0.6,
                              "banana_called_apple_after": 0.0},
    }
    table = pipeline.format_table(summary)
    assert "the story:" in table
    assert "labels (03):          120 images labeled, 88% of the boxes right against the cameras' truth" in table
    assert "apple model (04):     v1, apple F1 0.97" in table
    assert "apple + banana (06):  v2, apple F1 0.95, banana F1 0.93, gate passed" in table
    assert "bananas called apples: 85% before, 2% after (the 40 held-out banana images); on the fleet 60% -> 0%" in table
    # a run that stopped before training tells no story, and says nothing made up
    early = _summary(pipeline.NotebookRun("01_setup_hub", "failed", 1.0))
    early.results = {"04_train": {}}
    assert "the story" not in pipeline.format_table(early)
