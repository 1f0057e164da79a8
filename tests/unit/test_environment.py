"""environment.yml and pyproject.toml list the same pinned dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_deps() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["test"])


def _environment_deps() -> set[str]:
    text = (ROOT / "environment.yml").read_text()
    return {m.group(1).strip() for m in re.finditer(r"^\s{6}- (\S.*)$", text, re.M)}


def test_environment_matches_pyproject():
    py, env = _pyproject_deps(), _environment_deps()
    assert py == env, f"only in pyproject: {sorted(py - env)}; only in environment.yml: {sorted(env - py)}"


def test_every_dependency_is_pinned():
    unpinned = [d for d in _pyproject_deps() if "==" not in d]
    assert not unpinned, f"pin these with ==: {unpinned}"


def test_no_torchvision_in_default_install():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert not any(d.startswith("torchvision") for d in data["project"]["dependencies"])
    assert "torch==2.13.0" in data["project"]["dependencies"]
