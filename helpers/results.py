"""Key results and checks a notebook records for the pipeline's summary.

`record(notebook, **values)` merges values into `WORKSPACE/results/<notebook>.json`;
`check(label, ok)` prints a deterministic check line (`label: True`) that nbval compares and
appends it to `WORKSPACE/results/checks/<notebook>.json`. The pipeline reads both: a notebook
with a false check is `failed` in `summary.json`, the final table names the check, and the run
exits non-zero, so a headless run cannot print `ok` while one of its own lines says `False`.

The notebook a check belongs to comes from `EDGELOOP_NOTEBOOK` (the pipeline sets it for each
kernel it starts); interactively the checks go to `interactive.json`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from helpers.config import load_settings

NOTEBOOK_ENV = "EDGELOOP_NOTEBOOK"
INTERACTIVE = "interactive"


def _workspace(workspace: str | Path | None) -> Path:
    return Path(workspace) if workspace else load_settings().workspace


def _path(notebook: str, workspace: str | Path | None) -> Path:
    return _workspace(workspace) / "results" / f"{notebook}.json"


def checks_path(notebook: str, workspace: str | Path | None = None) -> Path:
    """Where the checks of `notebook` are kept (`WORKSPACE/results/checks/<notebook>.json`)."""
    return _workspace(workspace) / "results" / "checks" / f"{notebook}.json"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def record(notebook: str, workspace: str | Path | None = None, **values: Any) -> None:
    """Merge `values` into the notebook's result file (atomic replace)."""
    path = _path(notebook, workspace)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(values)
    _write_json(path, data)


def load_all(workspace: str | Path) -> dict[str, dict[str, Any]]:
    """Every notebook's recorded results, by notebook name."""
    folder = Path(workspace) / "results"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def current_notebook() -> str:
    """The notebook the checks of this kernel belong to (`EDGELOOP_NOTEBOOK`, else `interactive`)."""
    return os.environ.get(NOTEBOOK_ENV, "").strip() or INTERACTIVE


def check(label: str, ok: Any, measured: Any = None, notebook: str | None = None,
          workspace: str | Path | None = None) -> None:
    """Print `label: True|False` (the line nbval compares) and record the check.

    Returns None on purpose: a check as a cell's last line leaves no stray `Out[n]: True`.

    Args:
        label: what is checked, with its threshold (`apple F1 >= 0.9`).
        ok: the outcome; anything truthy passes.
        measured: the value behind it (a float, a dict), kept in the record but not printed, so
            the printed line stays the same from run to run while the summary shows the figure.
        notebook: the notebook it belongs to (default: `current_notebook()`).
        workspace: default: the settings' workspace.
    """
    ok = bool(ok)
    print(f"{label}: {ok}")
    nb = notebook or current_notebook()
    entry: dict[str, Any] = {"label": label, "ok": ok, "notebook": nb}
    if measured is not None:
        entry["measured"] = measured
    path = checks_path(nb, workspace)
    entries = json.loads(path.read_text()) if path.exists() else []
    # The same label checked again (a rerun of the cell) replaces the earlier outcome.
    entries = [e for e in entries if e.get("label") != label] + [entry]
    _write_json(path, entries)


def load_checks(notebook: str, workspace: str | Path) -> list[dict[str, Any]]:
    """The checks recorded for `notebook` in `workspace`, in the order they ran."""
    path = checks_path(notebook, workspace)
    return json.loads(path.read_text()) if path.exists() else []


def clear_checks(notebook: str, workspace: str | Path) -> None:
    """Forget the checks of `notebook` (the pipeline does this before running it again)."""
    checks_path(notebook, workspace).unlink(missing_ok=True)
