"""A run that cannot make a usable model says so: `python -m helpers.pipeline` exits non-zero naming
the failed check, and the rest of the loop's record holds. (Its own file, so the parallel test run
can place it beside the long smoke run of test_pipeline.py.)"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from nbtools import ROOT

pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.timeout(1200)]


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
