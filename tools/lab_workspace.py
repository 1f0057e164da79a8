"""Which workspace `make lab` opens the notebooks on: print its absolute path.

In order:
1. `--workspace DIR` (`make lab WORKSPACE=DIR`);
2. `EDGELOOP_WORKSPACE` from the environment or `.env` (what the notebooks would read anyway);
3. the workspace last run: of `workspace/` and the folders under it (`workspace/demo` from
   `make demo`, `workspace/reference`, ...), the one whose local cloud changed most recently;
4. `workspace/` (the settings' default).

The kernels start in `notebooks/`, so the path is made absolute. A line on stderr says which
workspace it is, why, and how to choose another.

    python tools/lab_workspace.py [--workspace DIR] [--root REPO]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("localcloud/state.db", "localcloud/service.json")


def last_run(root: Path) -> Path | None:
    """The workspace under `root/workspace` whose local cloud state changed last, or None."""
    base = root / "workspace"
    candidates = [base] + sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []
    stamped = []
    for ws in candidates:
        times = [(ws / m).stat().st_mtime for m in MARKERS if (ws / m).is_file()]
        if times:
            stamped.append((max(times), str(ws), ws))
    return max(stamped)[2] if stamped else None


def choose(workspace: str | None, root: Path = ROOT) -> tuple[Path, str]:
    """The workspace to use and why (one line)."""
    if workspace:
        return Path(workspace).expanduser().resolve(), "chosen with WORKSPACE="
    settings = load_settings()
    src = settings.source.get("workspace", "default")
    if src != "default":
        return settings.workspace, f"from {src}"
    found = last_run(root)
    if found is not None:
        return found.resolve(), "the workspace last run"
    return (root / "workspace").resolve(), "the default (no workspace has run yet)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    path, why = choose(args.workspace, Path(args.root))
    print(f"JupyterLab uses workspace {path} ({why}); another: make lab WORKSPACE=DIR", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
