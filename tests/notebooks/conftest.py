"""Fixtures of the notebook tests."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nbtools import ROOT


@pytest.fixture
def stop_workspace():
    """Call with a workspace path; everything started in it is stopped at teardown."""
    started: list[Path] = []
    yield started.append
    from helpers.pipeline import stop_everything

    for ws in started:
        stop_everything(ws)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`python -m helpers.pipeline`, smoke profile, with the studio reached as a real Edge Impulse project
    (`--studio edgeimpulse-rehearsal`: the workspace's stand-in behind EI_API_KEY, EI_STUDIO_URL...):
    the run test_pipeline.py checks and test_nbval.py compares with the reference notebooks (the same
    worker runs both files: tests/conftest.py's STORY_UNITS), so the six notebooks execute once."""
    if importlib.util.find_spec("edge_impulse_linux") is None:
        reason = ("the smoke run takes the Edge Impulse path, whose .eim runs through the [eim] extra: "
                  "apt-get install portaudio19-dev, then `make setup` (`make test` does both when run as root)")
        if os.environ.get("CI"):
            pytest.fail(reason)  # `make test` installs it on CI's machine: missing there is a failure
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("pipeline")
    ws, out = base / "ws", base / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--profile", "smoke", "--studio", "edgeimpulse-rehearsal",
         "--workspace", str(ws), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    yield proc, ws, out
    from helpers.pipeline import stop_everything

    stop_everything(ws)
