"""`python -m helpers.pipeline` runs the six notebooks headless (smoke profile) and cleans up.

The run is conftest's `smoke_run`: the studio reached as a real Edge Impulse project pointed at the
workspace's stand-in (`--studio edgeimpulse-rehearsal`), so the notebooks train through the job API
and deploy the `.eim` build."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbtools import REFERENCE, leftovers, nbval_differences, scan_for_secrets, workspace_secrets

from helpers.pipeline import NOTEBOOKS

# The six notebooks take 7-8 min on 2 idle cores (more under load): above pyproject's 600 s default,
# and above the subprocess timeouts below, so a slow run fails with the notebook's own message.
pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_pipeline_runs_all_six_notebooks(smoke_run):
    proc, ws, out = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    assert [n["status"] for n in summary["notebooks"]] == ["ok"] * 6
    for n in summary["notebooks"]:
        assert Path(n["output"]).exists()
    assert "total" in proc.stdout and "summary.json" in proc.stdout
    assert summary["studio_backend"] == "edgeimpulse"


def test_the_edge_impulse_path_trains_deploys_and_runs_an_eim(smoke_run):
    """Notebook 04 trained through the job API and fetched the `.eim` build; 05 deployed it and
    the runners ran it; 06's retrained model came the same way."""
    _, ws, out = smoke_run
    train = json.loads((out / "04_train.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in train["cells"] for o in c.get("outputs", []))
    assert "-> model.eim" in printed
    logs = [(ws / "devices" / d / "modules" / "runner" / "module.log").read_text() for d in ("pi-1", "pi-2")]
    assert all("model v1 loaded" in log for log in logs)
    results = json.loads((out / "summary.json").read_text())["results"]
    assert all(results["05_deploy"]["apples_detected"].values())


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


def test_pipeline_leaves_no_process_behind(smoke_run):
    _, ws, _ = smoke_run
    assert leftovers(ws) == []


def test_no_secret_in_executed_notebooks_or_summary(smoke_run):
    _, ws, out = smoke_run
    files = sorted(out.glob("*.ipynb")) + [out / "summary.json"]
    assert scan_for_secrets(files, workspace_secrets(ws)) == []


def test_committed_notebooks_pass_nbval(smoke_run):
    """Each notebook of the smoke run has the outputs of its reference (tests/notebooks/reference/, `make
    notebooks`), as `pytest --nbval` compares them (test_nbval.py runs nbval itself on notebook 01)."""
    proc, _, out = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    differences = [d for nb in NOTEBOOKS for d in nbval_differences(out / f"{nb}.ipynb", REFERENCE / f"{nb}.ipynb")]
    assert differences == [], "\n\n".join(differences)[-6000:]
