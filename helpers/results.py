"""Key results a notebook records for the pipeline's summary (WORKSPACE/results/<notebook>.json)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from helpers.config import load_settings


def _path(notebook: str, workspace: str | Path | None) -> Path:
    ws = Path(workspace) if workspace else load_settings().workspace
    return ws / "results" / f"{notebook}.json"


def record(notebook: str, workspace: str | Path | None = None, **values: Any) -> None:
    """Merge `values` into the notebook's result file (atomic replace)."""
    path = _path(notebook, workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(values)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def load_all(workspace: str | Path) -> dict[str, dict[str, Any]]:
    """Every notebook's recorded results, by notebook name."""
    folder = Path(workspace) / "results"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def check(label: str, ok: bool) -> bool:
    """Print a deterministic check line (`label: True`) that nbval compares, and return `ok`."""
    print(f"{label}: {bool(ok)}")
    return bool(ok)
