"""Write notebooks/0X_*.ipynb (without outputs) from their sources, notebooks/src/0X_*.py.

The notebooks are the product; their cells are edited in notebooks/src/, jupytext percent files,
so diffs stay readable: `# %%` starts a code cell, `# %% [markdown]` a markdown cell (its lines
commented), and `# %% tags=["parameters"]` the cell papermill fills (`nbval-ignore-output` tags
the cells whose output changes run to run). After editing: `make notebooks` (builds them, then
re-runs the smoke profile and stores the reference outputs nbval compares); this script alone
only builds: `python tools/build_notebooks.py [NAME ...]`.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
from jupytext.cell_metadata import _JUPYTEXT_CELL_METADATA
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def names() -> list[str]:
    """The notebooks that have a source, in order (`01_setup_hub`, ...)."""
    return sorted(p.stem for p in SOURCES.glob("0*.py"))


def cells(name: str) -> list:
    """The cells of notebook `name` as its source writes them: type, source and metadata (tags)."""
    source = jupytext.read(SOURCES / f"{name}.py", fmt="py:percent")
    out = []
    for cell in source.cells:
        new = new_markdown_cell(cell.source) if cell.cell_type == "markdown" else new_code_cell(cell.source)
        new.metadata.update({k: v for k, v in cell.metadata.items() if k not in _JUPYTEXT_CELL_METADATA})
        out.append(new)
    return out


def notebook(name: str) -> nbformat.NotebookNode:
    """Notebook `name` as notebooks/ holds it: its cells with stable ids, the Python 3 kernel."""
    nb = new_notebook(cells=cells(name))
    for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes only what was edited
        cell.id = f"{name[:2]}-{i:02d}"
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def render(name: str) -> str:
    """The text of notebooks/`name`.ipynb, as `build` writes it."""
    text = nbformat.writes(notebook(name))
    return text if text.endswith("\n") else text + "\n"


def build(only: list[str] | None = None) -> list[Path]:
    """Write notebooks/NAME.ipynb for every source (or the ones named in `only`)."""
    unknown = sorted(set(only or []) - set(names()))
    if unknown:
        raise SystemExit(f"no source for {unknown} in {SOURCES.relative_to(ROOT)}/ (have: {names()})")
    written = []
    for name in names():
        if only and name not in only:
            continue
        path = NOTEBOOKS / f"{name}.ipynb"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build(sys.argv[1:] or None):
        print("wrote", p.relative_to(ROOT))
