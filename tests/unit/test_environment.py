"""environment.yml, pyproject.toml and constraints.txt agree on pinned dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _constraints() -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    return {ln.split("==")[0]: ln for ln in lines if ln}


def _pyproject_deps() -> set[str]:
    """The default install as pip resolves it: pyproject's pins, with constraints.txt's on top."""
    project, pins = _project(), _constraints()
    deps = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    return {pins.get(re.split(r"[=<>]", d)[0], d) for d in deps}


def _environment_deps() -> set[str]:
    text = (ROOT / "environment.yml").read_text()
    return {m.group(1).strip() for m in re.finditer(r"^\s{6}- (\S.*)$", text, re.M)}


def test_environment_matches_pyproject():
    py, env = _pyproject_deps(), _environment_deps()
    assert py == env, f"only in pyproject: {sorted(py - env)}; only in environment.yml: {sorted(env - py)}"


def test_every_dependency_is_pinned():
    unpinned = [d for d in _pyproject_deps() if "==" not in d]
    assert not unpinned, f"pin these with == (in pyproject.toml or constraints.txt): {unpinned}"


def test_no_torchvision_in_default_install():
    assert not any(d.startswith("torchvision") for d in _project()["dependencies"])
    assert _constraints()["torch"] == "torch==2.13.0"


def test_ssd_extra_is_installable_beside_the_default_range():
    """`pip install .[ssd]` must resolve: the extra's torch lies inside the default range."""
    base = next(d for d in _project()["dependencies"] if d.startswith("torch"))
    ssd = dict(d.split("==") for d in _project()["optional-dependencies"]["ssd"])
    lo, hi = re.fullmatch(r"torch>=([\d.]+),<=([\d.]+)", base).groups()
    version = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert version(lo) <= version(ssd["torch"]) <= version(hi)
    assert version(lo) <= version(_constraints()["torch"].split("==")[1]) <= version(hi)


def test_make_and_ci_install_with_the_constraints():
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
