"""`python -m helpers.pipeline` runs the six notebooks headless (smoke profile) and cleans up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools import ROOT, leftovers, scan_for_secrets, workspace_secrets

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


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
    assert 0.0 <= results["04_train"]["map50"] <= 1.0
    six = results["06_retrain_banana"]
    assert six["banana_called_apple_before"] > six["banana_called_apple_after"]
    assert six["model_version"] > results["04_train"]["model_version"]


def test_pipeline_leaves_no_process_behind(smoke_run):
    _, ws, _ = smoke_run
    assert leftovers(ws) == []


def test_no_secret_in_executed_notebooks_or_summary(smoke_run):
    _, ws, out = smoke_run
    files = sorted(out.glob("*.ipynb")) + [out / "summary.json"]
    assert scan_for_secrets(files, workspace_secrets(ws)) == []
