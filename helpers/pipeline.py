"""Run the six notebooks headless with papermill, in order, on one workspace, and summarise.

    python -m helpers.pipeline --profile smoke --workspace workspace/ci --out out/ci

Each notebook gets the profile's parameters (never a secret: papermill copies parameters into
the output notebook), runs with a per-cell timeout, and is written to `--out`. A
`summary.json` collects per-notebook status and duration and the key results the notebooks
recorded (`helpers.results`). Whatever happens, the local cloud and the simulated devices of
the workspace are stopped at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import REPO_ROOT, mask
from helpers.errors import ConfigError

NOTEBOOKS = ["01_setup_hub", "02_build_collector", "03_label_review", "04_train", "05_deploy", "06_retrain_banana"]

# Parameters per profile and notebook. `smoke` proves every stage quickly (CI); `workshop` is
# the tutorial's story (~120 apple and ~120 banana images, two devices).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "01_setup_hub": {"device_ids": ["pi-1", "pi-2"]},
        "02_build_collector": {"apple_images": 60, "capture_rate_hz": 10.0},
        "03_label_review": {"labeler": "oracle"},
        "04_train": {"epochs": 30, "batch_size": 8, "input_size": 160, "min_f1": 0.5},
        "05_deploy": {"rollout_timeout_s": 120},
        "06_retrain_banana": {"banana_images": 80, "capture_rate_hz": 10.0, "epochs": 35, "batch_size": 8,
                              "min_f1": 0.5},
    },
    "workshop": {
        "01_setup_hub": {"device_ids": ["pi-1", "pi-2"]},
        "02_build_collector": {"apple_images": 120, "capture_rate_hz": 10.0},
        "03_label_review": {"labeler": "oracle"},
        "04_train": {"epochs": 40, "batch_size": 16, "input_size": 160, "min_f1": 0.85},
        "05_deploy": {"rollout_timeout_s": 180},
        "06_retrain_banana": {"banana_images": 120, "capture_rate_hz": 10.0, "epochs": 40, "batch_size": 16,
                              "min_f1": 0.85},
    },
}


@dataclass
class NotebookRun:
    notebook: str
    status: str  # ok | failed | skipped
    duration_s: float = 0.0
    output: str | None = None
    error: dict[str, Any] | None = None


@dataclass
class Summary:
    profile: str
    backend: str
    workspace: str
    notebooks: list[NotebookRun] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.notebooks if r.status != "skipped")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def parameters_for(profile: str, notebook: str, seed: int = 0) -> dict[str, Any]:
    """The papermill parameters of one notebook in a profile."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {sorted(PROFILES)}")
    return {"seed": seed, **PROFILES[profile][notebook]}


def _select(only: str | None) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = []
    for w in wanted:
        match = [n for n in NOTEBOOKS if n.startswith(w)]
        if len(match) != 1:
            raise ConfigError(f"--only {w!r} matches {match or 'no notebook'}; use numbers like 01,02 from {NOTEBOOKS}")
        chosen.append(match[0])
    return [n for n in NOTEBOOKS if n in chosen]


def _failure(exc: BaseException) -> dict[str, Any]:
    """Where a papermill run failed: the cell, the error name and value (secrets masked)."""
    info: dict[str, Any] = {"type": type(exc).__name__}
    for attr in ("cell_index", "exec_count", "ename", "evalue"):
        if hasattr(exc, attr):
            info[attr] = getattr(exc, attr)
    info["message"] = mask(str(exc))[-2000:]
    if "evalue" in info:
        info["evalue"] = mask(str(info["evalue"]))
    return info


def stop_everything(workspace: Path) -> None:
    """Stop the simulated devices and the local cloud of `workspace` (idempotent)."""
    from helpers import localcloud
    from helpers.device import fleet

    fleet.stop_devices(workspace)
    localcloud.stop(workspace)


def run_pipeline(
    profile: str,
    workspace: str | Path,
    out: str | Path,
    only: str | None = None,
    backend: str = "local",
    seed: int = 0,
    cell_timeout: int = 900,
    fresh: bool = False,
    stop_at_end: bool = True,
) -> Summary:
    """Run the notebooks of `profile` in order and write executed notebooks and summary.json to `out`.

    Args:
        profile: `smoke` or `workshop`.
        workspace: the shared state folder (local cloud, devices, models).
        out: where executed notebooks and summary.json go.
        only: comma-separated notebook numbers to run (e.g. "01,02").
        backend: hub/studio backend (`local` by default; real services by configuration).
        seed: the seed every notebook receives.
        cell_timeout: seconds a single cell may run.
        fresh: delete the workspace first (stopping what runs in it).
        stop_at_end: stop the local cloud and simulated devices at the end.
    """
    import papermill as pm
    from helpers import results

    workspace, out = Path(workspace).resolve(), Path(out).resolve()
    chosen = _select(only)
    parameters_for(profile, chosen[0])  # validates the profile before anything starts
    if fresh and workspace.exists():
        stop_everything(workspace)
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    # The kernels inherit the environment: the workspace and backends travel this way, never
    # as parameters, so no path or secret lands in the notebook's metadata.
    os.environ["EDGELOOP_WORKSPACE"] = str(workspace)
    os.environ["EDGELOOP_HUB"] = backend
    os.environ["EDGELOOP_STUDIO"] = backend
    summary = Summary(profile=profile, backend=backend, workspace=str(workspace))
    t_all = time.monotonic()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        failed = False
        for nb in NOTEBOOKS:
            if nb not in chosen:
                continue
            if failed:
                summary.notebooks.append(NotebookRun(nb, "skipped"))
                continue
            target = out / f"{nb}.ipynb"
            t0 = time.monotonic()
            print(f"[pipeline] {nb} ...", flush=True)
            try:
                pm.execute_notebook(
                    str(REPO_ROOT / "notebooks" / f"{nb}.ipynb"),
                    str(target),
                    parameters=parameters_for(profile, nb, seed),
                    kernel_name="python3",
                    cwd=str(REPO_ROOT / "notebooks"),
                    execution_timeout=cell_timeout,
                    progress_bar=False,
                    request_save_on_cell_execute=False,
                )
                run = NotebookRun(nb, "ok", output=str(target))
            except pm.PapermillExecutionError as exc:
                run = NotebookRun(nb, "failed", output=str(target), error=_failure(exc))
                failed = True
            run.duration_s = round(time.monotonic() - t0, 1)
            summary.notebooks.append(run)
            print(f"[pipeline] {nb}: {run.status} in {run.duration_s:.1f} s", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        summary.total_s = round(time.monotonic() - t_all, 1)
        summary.results = results.load_all(workspace)
        (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str))
        if stop_at_end:
            stop_everything(workspace)
    return summary


def _raise_keyboard_interrupt(signum, frame):  # SIGTERM -> the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


def refresh_committed(out: Path) -> list[Path]:
    """Copy executed notebooks from `out` over the committed ones, without run-specific metadata."""
    import nbformat

    written = []
    for nb in NOTEBOOKS:
        src = out / f"{nb}.ipynb"
        if not src.exists():
            continue
        node = nbformat.read(src, as_version=4)
        pm_meta = node.metadata.get("papermill", {})
        for key in ("input_path", "output_path", "start_time", "end_time", "duration"):
            pm_meta.pop(key, None)
        for cell in node.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        dest = REPO_ROOT / "notebooks" / f"{nb}.ipynb"
        nbformat.write(node, dest)
        written.append(dest)
    return written


def format_table(summary: Summary) -> str:
    rows = [f"{'notebook':22} {'status':8} {'seconds':>8}"]
    for r in summary.notebooks:
        where = f"  (cell {r.error.get('cell_index')}: {r.error.get('ename')})" if r.error else ""
        rows.append(f"{r.notebook:22} {r.status:8} {r.duration_s:8.1f}{where}")
    rows.append(f"{'total':22} {'ok' if summary.ok else 'FAILED':8} {summary.total_s:8.1f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m helpers.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    p.add_argument("--workspace", default="workspace/pipeline")
    p.add_argument("--out", default="out/pipeline")
    p.add_argument("--only", help="comma-separated notebook numbers, e.g. 01,02")
    p.add_argument("--backend", default="local", help="hub and studio backend (default: local)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell-timeout", type=int, default=900)
    p.add_argument("--fresh", action="store_true", help="start from an empty workspace")
    p.add_argument("--keep-running", action="store_true", help="leave the local cloud and devices running")
    p.add_argument("--refresh-committed", action="store_true", help="copy outputs over notebooks/ (make notebooks)")
    p.add_argument("--stop", action="store_true", help="only stop what runs in --workspace")
    args = p.parse_args(argv)
    if args.stop:
        stop_everything(Path(args.workspace).resolve())
        print(f"stopped everything in {args.workspace}")
        return 0
    try:
        summary = run_pipeline(
            args.profile, args.workspace, args.out, only=args.only, backend=args.backend, seed=args.seed,
            cell_timeout=args.cell_timeout, fresh=args.fresh, stop_at_end=not args.keep_running,
        )
    except KeyboardInterrupt:
        print("\ninterrupted: local cloud and devices stopped", file=sys.stderr)
        return 130
    print()
    print(format_table(summary))
    out = Path(args.out).resolve()
    print(f"\nexecuted notebooks and summary.json: {out}")
    print(f"open them with:  .venv/bin/jupyter lab {out}")
    if args.keep_running:
        print("devices keep running; their runner pages are listed in 05_deploy.ipynb's output")
    if args.refresh_committed and summary.ok:
        for path in refresh_committed(out):
            print(f"refreshed {path.relative_to(REPO_ROOT)}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
