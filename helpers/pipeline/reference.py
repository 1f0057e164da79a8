"""The reference runs nbval compares (tests/notebooks/reference/): executed notebooks without this machine's traces."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat.sign import NotebookNotary

from helpers.config import REPO_ROOT
from helpers.pipeline.profiles import NOTEBOOKS

REFERENCE_DIR = REPO_ROOT / "tests" / "notebooks" / "reference"


def _strip_machine_paths(text: str, paths: dict[str, str]) -> str:
    for path, placeholder in paths.items():
        text = text.replace(path, placeholder)
    return text


def scrub_outputs(cell: Any, paths: dict[str, str]) -> None:
    """Replace this machine's folders in a cell's text outputs (`/home/me/edgeloop/start.sh` -> `start.sh`)."""
    for output in cell.get("outputs", []):
        if "text" in output:
            output["text"] = _strip_machine_paths(output["text"], paths)
        for mime, value in output.get("data", {}).items():
            if isinstance(value, str) and (mime.startswith("text/") or mime.endswith("json")):
                output["data"][mime] = _strip_machine_paths(value, paths)
        if "traceback" in output:
            output["traceback"] = [_strip_machine_paths(t, paths) for t in output["traceback"]]


def write_reference(out: Path, dest: Path = REFERENCE_DIR, workspace: Path | None = None) -> list[Path]:
    """Copy executed notebooks from `out` to the reference folder nbval compares (`make notebooks`).

    Run-specific metadata (paths, times, durations) is dropped and this machine's folders are
    replaced in the outputs; the papermill-injected parameters cell stays, because nbval
    re-executes these copies with the same (headless) parameters. The copies are signed. The
    notebooks a person opens, in notebooks/, are never touched.
    """
    paths = {}
    if workspace is not None:
        paths[str(Path(workspace).resolve())] = "$EDGELOOP_WORKSPACE"
    paths[str(REPO_ROOT) + "/"] = ""
    paths[str(REPO_ROOT)] = "."
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for nb in NOTEBOOKS:
        src = out / f"{nb}.ipynb"
        if not src.exists():
            continue
        node = nbformat.read(src, as_version=4)
        pm_meta = node.metadata.get("papermill", {})
        for key in ("input_path", "output_path", "start_time", "end_time", "duration", "environment_variables"):
            pm_meta.pop(key, None)
        for cell in node.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            scrub_outputs(cell, paths)
        target = dest / f"{nb}.ipynb"
        NotebookNotary().sign(node)
        nbformat.write(node, target)
        written.append(target)
    return written

