"""`python -m helpers.pipeline` runs the six notebooks headless (smoke profile) and cleans up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools import ROOT, leftovers, scan_for_secrets, workspace_secrets

# The six notebooks take 7-8 min on 2 idle cores (more under load): above pyproject's 600 s default,
# and above the subprocess timeouts below, so a slow run fails with the notebook's own message.
pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    ws, out = base / "ws", base / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--profile", "smoke", "--workspace", str(ws), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    yield proc, ws, out
    from helpers.pipeline import stop_everything

    stop_everything(ws)


def test_pipeline_runs_all_six_notebooks(smoke_run):
    proc, ws, out = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    assert [n["status"] for n in summary["notebooks"]] == ["ok"] * 6
    for n in summary["notebooks"]:
        assert Path(n["output"]).exists()
    assert "total" in proc.stdout and "summary.json" in proc.stdout


def test_summary_carries_the_key_results(smoke_run):
    _, _, out = smoke_run
    results = json.loads((out / "summary.json").read_text())["results"]
    assert set(results["02_build_collector"]["samples"]) == {"pi-1", "pi-2"}
    assert results["04_train"]["labels"] == ["apple"]
    assert results["04_train"]["map50"] >= 0.9  # the smoke run measures ~1.0; a broken trainer falls far below
    six = results["06_retrain_banana"]
    assert six["heldout_banana_called_apple_before"] > six["heldout_banana_called_apple_after"]
    assert six["model_version"] > results["04_train"]["model_version"]


def test_every_check_is_recorded_and_true(smoke_run):
    _, _, out = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    labels = {c["label"]: c for c in summary["checks"]}
    assert {"pi-1 online", "apple F1 >= 0.9", "banana F1 >= 0.85", "gate passed",
            "the apple model calls held-out bananas apples (rate >= 0.1)",
            "the two-class model calls fewer held-out bananas apples"} <= set(labels)
    assert {c["notebook"] for c in summary["checks"]} == {n["notebook"] for n in summary["notebooks"]}
    assert summary["failed_checks"] == [] and all(c["ok"] for c in summary["checks"])


def test_a_weak_training_setting_fails_the_run_naming_the_check(tmp_path, stop_workspace):
    """One training epoch cannot make a usable apple model: the run must say so and exit non-zero."""
    ws, out = tmp_path / "ws", tmp_path / "out"
    stop_workspace(ws)
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--profile", "smoke", "--only", "01,02,03,04",
         "--param", "02.apple_images=30", "--param", "04.epochs=1", "--workspace", str(ws), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "check failed: apple F1 >= 0.9" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False
    assert [c["label"] for c in summary["failed_checks"]] == ["apple F1 >= 0.9"]  # the rest of the loop held
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "ok", "ok", "failed"]
    assert summary["failed_checks"][0]["measured"] < 0.9


def test_pipeline_leaves_no_process_behind(smoke_run):
    _, ws, _ = smoke_run
    assert leftovers(ws) == []


def test_no_secret_in_executed_notebooks_or_summary(smoke_run):
    _, ws, out = smoke_run
    files = sorted(out.glob("*.ipynb")) + [out / "summary.json"]
    assert scan_for_secrets(files, workspace_secrets(ws)) == []
