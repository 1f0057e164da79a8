"""Run the notebooks of a profile in order with papermill on one workspace; write them, signed, and summary.json."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import nbformat
import papermill as pm
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.sign import NotebookNotary

from helpers import localcloud, results
from helpers.config import REPO_ROOT
from helpers.containers.engine import docker_engine_available
from helpers.device import fleet
from helpers.errors import ConfigError
from helpers.pipeline.engine import register_engine
from helpers.pipeline.profiles import NOTEBOOKS, cell_timeout_for, parameters_for, select
from helpers.pipeline.progress import Progress
from helpers.pipeline.summary import NotebookRun, Summary, failure, timeout_failure
from helpers.ui import PROGRESS_ENV


def stop_everything(workspace: Path) -> None:
    """Stop the simulated devices and the local cloud of `workspace` (idempotent)."""
    fleet.stop_devices(workspace)
    localcloud.stop(workspace)


def sign_notebook(path: Path) -> None:
    """Sign a notebook as `jupyter trust` does, so its widgets and HTML render when opened."""
    nb = nbformat.read(path, as_version=4)
    NotebookNotary().sign(nb)


def _raise_keyboard_interrupt(signum, frame):  # SIGTERM -> the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


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
    overrides: dict[str, dict[str, Any]] | None = None,
    progress_every_s: float = 20.0,
    runtime: str | None = None,
    studio_backend: str | None = None,
) -> Summary:
    """Run the notebooks of `profile` in order and write executed notebooks and summary.json to `out`.

    Args:
        profile: `smoke` or `workshop`.
        workspace: the shared state folder (local cloud, devices, models).
        out: where executed notebooks and summary.json go.
        only: comma-separated notebook numbers to run (e.g. "01,02").
        backend: hub backend, and the studio's unless `studio_backend` is given (`local` by
            default; real services by configuration).
        studio_backend: the studio's backend when it differs from the hub's, e.g. the local hub
            with a real Edge Impulse project (`edgeimpulse`: EI_API_KEY, EI_PROJECT_ID).
        seed: the seed every notebook receives.
        cell_timeout: seconds a single cell may run (training cells get more, scaled with the work).
        fresh: delete the workspace first (stopping what runs in it).
        stop_at_end: stop the local cloud and simulated devices at the end.
        overrides: per-notebook parameter overrides (`parse_overrides`).
        progress_every_s: how often a long step prints a progress line.
        runtime: the simulated devices' module runtime, `process` or `container` (default: the
            `runtime` setting, `EDGELOOP_RUNTIME`); `container` needs a Docker-API engine
            (`make containers`) and builds the device image in notebook 02.
    """
    workspace, out = Path(workspace).resolve(), Path(out).resolve()
    chosen = select(only)
    params_by_nb = {nb: parameters_for(profile, nb, seed, overrides) for nb in NOTEBOOKS}
    if fresh and workspace.exists():
        stop_everything(workspace)
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    progress_file = out / ".progress.json"
    # The kernels inherit the environment: the workspace and backends travel this way, never
    # as parameters, so no path or secret lands in the notebook's metadata.
    os.environ["EDGELOOP_WORKSPACE"] = str(workspace)
    os.environ["EDGELOOP_HUB"] = backend
    os.environ["EDGELOOP_STUDIO"] = studio_backend or backend
    os.environ[PROGRESS_ENV] = str(progress_file)
    # Waiting OpenMP threads sleep instead of spinning. On a busy machine a spinning torch thread
    # burns the core its partner needs: 6 training steps took 166-197 s with the default and
    # 15 s with PASSIVE beside other work (load 13-16 on 2 cores). Results do not change: the
    # thread count (EDGELOOP_TORCH_THREADS) fixes the arithmetic, the wait policy only scheduling.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if runtime:
        os.environ["EDGELOOP_RUNTIME"] = runtime
    if (runtime or os.environ.get("EDGELOOP_RUNTIME")) in ("container", "docker"):
        ok, why = docker_engine_available()
        if not ok:
            raise ConfigError(f"runtime container: {why}")
    summary = Summary(profile=profile, backend=backend, workspace=str(workspace), seed=seed, studio_backend=studio_backend or backend,
                      parameters={nb: params_by_nb[nb] for nb in chosen})
    summary.load_avg["start"] = [round(v, 2) for v in os.getloadavg()]
    progress = Progress(progress_file, every_s=progress_every_s)
    engine = register_engine(progress)
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
            source = REPO_ROOT / "notebooks" / f"{nb}.ipynb"
            target = out / f"{nb}.ipynb"
            limit = cell_timeout_for(nb, params_by_nb, cell_timeout)
            os.environ[results.NOTEBOOK_ENV] = nb
            results.clear_checks(nb, workspace)
            t0 = time.monotonic()
            print(f"[pipeline] {nb} ...", flush=True)
            progress.start_notebook(nb, nbformat.read(source, as_version=4))
            run = NotebookRun(nb, "ok", output=str(target), cell_timeout_s=limit)
            try:
                pm.execute_notebook(
                    str(source), str(target),
                    parameters=params_by_nb[nb],
                    engine_name=engine,
                    kernel_name="python3",
                    cwd=str(REPO_ROOT / "notebooks"),
                    execution_timeout=limit,
                    progress_bar=False,
                    request_save_on_cell_execute=False,
                )
            except pm.PapermillExecutionError as exc:
                run.status, run.error, failed = "failed", failure(exc), True
            except (CellTimeoutError, DeadKernelError) as exc:
                run.status, failed = "failed", True
                run.error = timeout_failure(exc, nb, progress.cell_index, progress.step, limit)
            finally:
                progress.end_notebook()
                os.environ.pop(results.NOTEBOOK_ENV, None)
            run.duration_s = round(time.monotonic() - t0, 1)
            run.checks = results.load_checks(nb, workspace)
            if run.status == "ok" and run.failed_checks:
                run.status = "failed"  # the notebook ran, but its story did not hold: later ones still run
            if target.exists():
                sign_notebook(target)
            summary.notebooks.append(run)
            extra = "".join(f"\n[pipeline]   check failed: {c['label']}" for c in run.failed_checks)
            print(f"[pipeline] {nb}: {run.status} in {run.duration_s:.1f} s{extra}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        progress.close()
        os.environ.pop(PROGRESS_ENV, None)
        progress_file.unlink(missing_ok=True)
        summary.total_s = round(time.monotonic() - t_all, 1)
        summary.load_avg["end"] = [round(v, 2) for v in os.getloadavg()]
        summary.results = results.load_all(workspace)
        (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str))
        if stop_at_end:
            stop_everything(workspace)
    return summary

