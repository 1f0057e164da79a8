"""Fixtures of the notebook tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def stop_workspace():
    """Call with a workspace path; everything started in it is stopped at teardown."""
    started: list[Path] = []
    yield started.append
    from helpers.pipeline import stop_everything

    for ws in started:
        stop_everything(ws)
