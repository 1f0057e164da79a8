"""Run the six notebooks headless with papermill, in order, on one workspace, and summarise.

The command line of `python -m helpers.pipeline` (what `make demo` and `make notebooks` call).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from helpers.config import REPO_ROOT
from helpers.errors import ConfigError
from helpers.pipeline.profiles import PROFILES, parse_overrides
from helpers.pipeline.reference import REFERENCE_DIR, write_reference
from helpers.pipeline.rehearsal import REHEARSAL, edge_impulse_rehearsal_env
from helpers.pipeline.run import run_pipeline, stop_everything
from helpers.pipeline.summary import format_table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m helpers.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    p.add_argument("--workspace", default="workspace/pipeline")
    p.add_argument("--out", default="out/pipeline")
    p.add_argument("--only", help="comma-separated notebook numbers, e.g. 01,02")
    p.add_argument("--param", action="append", metavar="NB.NAME=VALUE",
                   help="override a notebook parameter, e.g. --param 04.epochs=1 (repeatable)")
    p.add_argument("--backend", default="local", help="hub and studio backend (default: local)")
    p.add_argument("--studio", default=None, metavar="BACKEND",
                   help="the studio's backend when it differs from --backend (e.g. --studio edgeimpulse with the local hub; "
                        f"--studio {REHEARSAL}: the Edge Impulse path against the workspace's own stand-in)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell-timeout", type=int, default=900,
                   help="seconds a cell may run (training cells get more, scaled with epochs x images)")
    p.add_argument("--fresh", action="store_true", help="start from an empty workspace")
    p.add_argument("--keep-running", action="store_true", help="leave the local cloud and devices running")
    p.add_argument("--reference", action="store_true",
                   help=f"write the executed notebooks to {REFERENCE_DIR.relative_to(REPO_ROOT)} (make notebooks)")
    p.add_argument("--stop", action="store_true", help="only stop what runs in --workspace")
    p.add_argument("--runtime", choices=("process", "container"), default=None,
                   help="module runtime of the simulated devices (default: EDGELOOP_RUNTIME, else process); "
                        "container runs the device image (make containers on Linux without Docker)")
    args = p.parse_args(argv)
    if args.stop:
        stop_everything(Path(args.workspace).resolve())
        print(f"stopped everything in {args.workspace}")
        return 0
    try:
        overrides = parse_overrides(args.param)
        if args.studio == REHEARSAL:  # the workspace's stand-in, reached as a real Edge Impulse project
            workspace = Path(args.workspace).resolve()
            if args.fresh and workspace.exists():
                stop_everything(workspace)
                shutil.rmtree(workspace)
            args.fresh, args.studio = False, "edgeimpulse"
            os.environ.update(edge_impulse_rehearsal_env(workspace))
        summary = run_pipeline(
            args.profile, args.workspace, args.out, only=args.only, backend=args.backend, seed=args.seed,
            cell_timeout=args.cell_timeout, fresh=args.fresh, stop_at_end=not args.keep_running, overrides=overrides,
            runtime=args.runtime, studio_backend=args.studio,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: local cloud and devices stopped", file=sys.stderr)
        return 130
    print()
    print(format_table(summary))
    out = Path(args.out).resolve()
    print(f"\nexecuted notebooks and summary.json: {out}")
    print(f"open them with:  .venv/bin/jupyter lab {out}   (signed: widgets render)")
    if args.keep_running:
        print("devices keep running; their runner pages are listed in 05_deploy.ipynb's output")
    if args.reference:
        if summary.ok:
            for path in write_reference(out, workspace=Path(args.workspace)):
                print(f"reference written: {path.relative_to(REPO_ROOT)}")
        else:
            print("reference notebooks NOT written: the run failed (see the table above)")
    return 0 if summary.ok else 1


