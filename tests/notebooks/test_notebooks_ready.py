"""The notebooks a person opens are ready to use; the reference runs nbval compares live apart."""
from __future__ import annotations

import importlib.util
import re

import nbformat
import pytest
from nbtools import NOTEBOOKS, REFERENCE, ROOT


def _built_cells(name: str) -> list:
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cells(name)


def _parameters(nb) -> dict:
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    env: dict = {}
    exec(cell.source, {}, env)  # the cell only assigns literals
    return env


@pytest.mark.parametrize("name", ["01_setup_hub", "02_build_collector", "03_label_review", "04_train", "05_deploy",
                                  "06_retrain_banana"])
def test_notebook_is_the_built_workshop_notebook(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    assert "injected-parameters" not in tags, f"{name}: a papermill run was copied over notebooks/"
    assert "papermill" not in nb.metadata
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs == [], f"{name}: notebooks/ hold no outputs (reference runs are in tests/notebooks/reference)"
    built = [c.source for c in _built_cells(name)]
    assert [c.source for c in nb.cells] == built, (
        f"{name} differs from notebooks/src/{name}.py: run `.venv/bin/python tools/build_notebooks.py`")


def test_notebooks_carry_the_interactive_workshop_parameters():
    label = _parameters(nbformat.read(NOTEBOOKS / "03_label_review.ipynb", as_version=4))
    assert label["labeler"] == "human"  # the labeling panel waits for a person
    assert _parameters(nbformat.read(NOTEBOOKS / "06_retrain_banana.ipynb", as_version=4))["labeler"] == "human"
    collect = _parameters(nbformat.read(NOTEBOOKS / "02_build_collector.ipynb", as_version=4))
    train = _parameters(nbformat.read(NOTEBOOKS / "04_train.ipynb", as_version=4))
    retrain = _parameters(nbformat.read(NOTEBOOKS / "06_retrain_banana.ipynb", as_version=4))
    from helpers.pipeline import PROFILES

    workshop = PROFILES["workshop"]
    assert collect["apple_images"] == workshop["02_build_collector"]["apple_images"]
    assert (train["epochs"], train["min_f1"]) == (workshop["04_train"]["epochs"], workshop["04_train"]["min_f1"])
    assert retrain["banana_images"] == workshop["06_retrain_banana"]["banana_images"]
    assert (retrain["epochs"], retrain["min_f1"]) == (workshop["06_retrain_banana"]["epochs"],
                                                      workshop["06_retrain_banana"]["min_f1"])


MACHINE_PATHS = [re.escape(str(ROOT)), r"/tmp/", r"/root/", r"/home/[^/\s]+/", r"/work/"]


def test_reference_outputs_hold_no_path_of_the_machine_that_made_them():
    hits = []
    for f in sorted(REFERENCE.glob("0*.ipynb")):
        nb = nbformat.read(f, as_version=4)
        for k, cell in enumerate(nb.cells):
            text = nbformat.writes(nbformat.v4.new_notebook(cells=[cell])) if cell.cell_type == "code" else ""
            for pat in MACHINE_PATHS:
                for m in re.finditer(pat, text):
                    hits.append(f"{f.name} cell {k}: {text[max(0, m.start() - 40):m.end() + 40]!r}")
        meta = nb.metadata.get("papermill", {})
        assert not {"input_path", "output_path"} & set(meta), f"{f.name}: run metadata kept"
    assert hits == []


def test_check_cells_leave_no_stray_out_values():
    for f in sorted(REFERENCE.glob("0*.ipynb")):
        nb = nbformat.read(f, as_version=4)
        for k, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or "results.check" not in cell.source:
                continue
            stray = [o for o in cell.get("outputs", []) if o.get("output_type") == "execute_result"
                     and o.get("data", {}).get("text/plain") in ("True", "False", "None")]
            assert not stray, f"{f.name} cell {k} shows Out[]: {stray[0]['data']['text/plain']}"
