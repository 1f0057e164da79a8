"""notebooks/*.ipynb are what their sources, notebooks/src/*.py, build (tools/build_notebooks.py)."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from helpers.pipeline.profiles import NOTEBOOKS

REPO = Path(__file__).resolve().parents[2]


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", REPO / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_notebooks = _builder()


def test_every_notebook_the_pipeline_runs_has_a_source_and_nothing_else_does():
    assert build_notebooks.names() == NOTEBOOKS
    assert sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_what_its_source_builds(name):
    committed = (REPO / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8")
    assert committed == build_notebooks.render(name), (
        f"notebooks/{name}.ipynb differs from notebooks/src/{name}.py: edit the source, then "
        "`.venv/bin/python tools/build_notebooks.py` (and `make notebooks` for the reference runs)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_has_one_parameters_cell_and_only_known_tags(name):
    cells = build_notebooks.cells(name)
    tags = [t for c in cells for t in c.metadata.get("tags", [])]
    assert tags.count("parameters") == 1
    assert set(tags) <= {"parameters", "nbval-ignore-output"}, tags
    assert all(set(c.metadata) <= {"tags"} for c in cells), [c.metadata for c in cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_helpers_import_of_the_notebook_resolves(name):
    """A module moved in helpers/ without its notebook import line updated fails here, not in a 7-minute run."""
    missing = []
    for cell in build_notebooks.cells(name):
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "helpers":
                try:
                    module = importlib.import_module(node.module)
                except ModuleNotFoundError:
                    missing.append(f"from {node.module} import ...")
                    continue
                missing += [f"from {node.module} import {a.name}" for a in node.names if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            elif isinstance(node, ast.Import):
                missing += [a.name for a in node.names
                            if a.name.split(".")[0] == "helpers" and importlib.util.find_spec(a.name) is None]
    assert missing == []
