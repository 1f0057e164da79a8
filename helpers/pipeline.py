"""Run the six notebooks headless with papermill, in order, on one workspace, and summarise.

    python -m helpers.pipeline --profile smoke --workspace workspace/ci --out out/ci

Each notebook gets the profile's parameters (never a secret: papermill copies parameters into
the output notebook), runs with a per-cell timeout that scales with the work of its steps, and
is written to `--out`, signed (nbformat's notary, what `jupyter trust` does) so its widgets
render when opened. A `summary.json` collects per-notebook status and duration, every check the
notebooks made (`helpers.results.check`) and the key results they recorded. A notebook with a
false check is `failed`: the final table names the check and the run exits non-zero.

While it runs the terminal shows the notebook and step running, training and collection
progress and the elapsed time. Whatever happens, the local cloud and the simulated devices of
the workspace are stopped at the end.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import REPO_ROOT, mask
from helpers.errors import ConfigError

NOTEBOOKS = ["01_setup_hub", "02_build_collector", "03_label_review", "04_train", "05_deploy", "06_retrain_banana"]
REFERENCE_DIR = REPO_ROOT / "tests" / "notebooks" / "reference"
PROGRESS_ENV = "EDGELOOP_PROGRESS_FILE"

# Parameters per profile and notebook. `smoke` proves every stage quickly (CI); `workshop` is
# the tutorial's story (120 apple and 120 banana images, two devices). The thresholds of the
# checks sit just under what the reference runs measure (README, "Headless runs"), so a real
# regression turns a check line False and the run fails.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "01_setup_hub": {"device_ids": ["pi-1", "pi-2"]},
        "02_build_collector": {"apple_images": 60, "capture_rate_hz": 10.0},
        "03_label_review": {"labeler": "oracle"},
        "04_train": {"epochs": 30, "batch_size": 8, "input_size": 160, "min_f1": 0.9},
        "05_deploy": {"rollout_timeout_s": 120},
        "06_retrain_banana": {"banana_images": 80, "capture_rate_hz": 10.0, "epochs": 35, "batch_size": 8,
                              "min_f1": 0.85},
    },
    "workshop": {
        "01_setup_hub": {"device_ids": ["pi-1", "pi-2"]},
        "02_build_collector": {"apple_images": 120, "capture_rate_hz": 10.0},
        "03_label_review": {"labeler": "oracle"},
        "04_train": {"epochs": 40, "batch_size": 16, "input_size": 160, "min_f1": 0.9},
        "05_deploy": {"rollout_timeout_s": 180},
        "06_retrain_banana": {"banana_images": 120, "capture_rate_hz": 10.0, "epochs": 40, "batch_size": 16,
                              "min_f1": 0.85},  # seeds 0 and 1 measured banana F1 1.0 and 0.90
    },
}

# Cell time limits. A cell may run `--cell-timeout` seconds (default 900) plus, in the notebooks
# that train, SECONDS_PER_IMAGE_EPOCH for every image and epoch of the training it does: a
# generous multiple of what 2 busy cores take (about 0.09 s measured with another process
# beside it), so a slow machine is never failed for being slow, while a hung cell still ends.
SECONDS_PER_IMAGE_EPOCH = 0.5
TRAINING_WORK = {"04_train": ("02_build_collector", "apple_images"), "06_retrain_banana": (None, "banana_images")}


@dataclass
class NotebookRun:
    notebook: str
    status: str  # ok | failed | skipped
    duration_s: float = 0.0
    output: str | None = None
    error: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    cell_timeout_s: int | None = None

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c.get("ok")]


@dataclass
class Summary:
    profile: str
    backend: str
    workspace: str
    seed: int = 0
    studio_backend: str = ""
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    notebooks: list[NotebookRun] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    total_s: float = 0.0
    load_avg: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.notebooks if r.status != "skipped") and bool(self.notebooks)

    @property
    def checks(self) -> list[dict[str, Any]]:
        return [c for r in self.notebooks for c in r.checks]

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c.get("ok")]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["checks"] = self.checks
        d["failed_checks"] = self.failed_checks
        return d


def _parse_value(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word: a string


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """`["04.epochs=1", "06_retrain_banana.min_f1=0.9"]` -> {notebook: {name: value}}.

    Raises:
        ConfigError: an item without `NOTEBOOK.NAME=VALUE`, or a notebook that does not exist.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        nb, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--param {item!r}: write NOTEBOOK.NAME=VALUE, e.g. --param 04.epochs=1")
        match = [n for n in NOTEBOOKS if n.startswith(nb.strip())]
        if len(match) != 1:
            raise ConfigError(f"--param {item!r}: {nb!r} matches {match or 'no notebook'} of {NOTEBOOKS}")
        if any(w in name.lower() for w in ("key", "secret", "password", "token", "connection")):
            raise ConfigError(f"--param {item!r}: secrets are never parameters (papermill writes parameters "
                              "into the notebook); set them in the environment or .env")
        out.setdefault(match[0], {})[name.strip()] = _parse_value(raw.strip())
    return out


def parameters_for(profile: str, notebook: str, seed: int = 0,
                   overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The papermill parameters of one notebook in a profile (with `--param` overrides)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {sorted(PROFILES)}")
    return {"seed": seed, **PROFILES[profile][notebook], **(overrides or {}).get(notebook, {})}


def cell_timeout_for(notebook: str, params_by_nb: dict[str, dict[str, Any]], base: int) -> int:
    """Seconds one cell of `notebook` may run: `base`, plus the training work where it trains."""
    if notebook not in TRAINING_WORK:
        return base
    source_nb, count_key = TRAINING_WORK[notebook]
    own = params_by_nb.get(notebook, {})
    images = int(params_by_nb.get(source_nb or notebook, {}).get(count_key, 120))
    if notebook == "06_retrain_banana":  # trains on the apples and the bananas
        images += int(params_by_nb.get("02_build_collector", {}).get("apple_images", 120))
    epochs = int(own.get("epochs", 40))
    return int(base + SECONDS_PER_IMAGE_EPOCH * images * epochs)


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


# ----------------------------------------------------------------------------- progress
def _fmt_elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def step_titles(nb: Any) -> list[str]:
    """For each cell of a notebook, the title of the step it belongs to (the last heading above it)."""
    title, titles = "", []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    title = line.lstrip("#").strip()
                    break
        titles.append(title)
    return titles


class Progress:
    """What the terminal shows while a notebook runs: the step, training/collection progress, time.

    Quick steps pass silently. A step still running after `announce_s` seconds is named, and
    then every `every_s` seconds a line shows how long it has run and what the kernel last
    reported (`helpers.ui` writes training epochs and collection counts to the file named by
    EDGELOOP_PROGRESS_FILE).
    """

    def __init__(self, progress_file: Path, every_s: float = 20.0, stream: Any = None, announce_s: float = 5.0):
        self.progress_file = progress_file
        self.every_s = every_s
        self.announce_s = announce_s
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.notebook: str | None = None
        self.titles: list[str] = []
        self.cell_index = 0
        self.step = ""
        self.t_notebook = self.t_step = time.monotonic()
        self._last_line: float | None = None  # when this step last printed (None: not yet)

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self._last_line = time.monotonic()

    def start_notebook(self, name: str, nb: Any) -> None:
        with self._lock:
            self.notebook, self.step, self.cell_index = name, "", 0
            self.titles = step_titles(nb)
            self.t_notebook = self.t_step = time.monotonic()
            self._last_line = None
            self.progress_file.unlink(missing_ok=True)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pipeline-progress", daemon=True)
            self._thread.start()

    def set_cells(self, nb: Any) -> None:
        """The notebook as executed (papermill inserts the parameters cell: indexes shift)."""
        with self._lock:
            self.titles = step_titles(nb)

    def end_notebook(self) -> None:
        with self._lock:
            self.notebook = None

    def cell_started(self, index: int) -> None:
        with self._lock:
            self.cell_index = index
            title = self.titles[index] if index < len(self.titles) else self.step
            if title != self.step:
                self.step, self.t_step, self._last_line = title, time.monotonic(), None

    def kernel_report(self) -> str:
        """The kernel's last progress report as one line ('' when there is none)."""
        try:
            doc = json.loads(self.progress_file.read_text())
        except (FileNotFoundError, ValueError):
            return ""
        return str(doc.get("line", ""))

    def tick(self) -> None:
        """Print a line if the running step is due one (called every second by the thread)."""
        with self._lock:
            if self.notebook is None:
                return
            now = time.monotonic()
            due = (now - self.t_step >= self.announce_s) if self._last_line is None else (now - self._last_line >= self.every_s)
            if not due:
                return
            report = self.kernel_report()
            self._print(f"[pipeline] {self.notebook} {_fmt_elapsed(now - self.t_notebook)}"
                        f"  step: {self.step or 'start'} ({_fmt_elapsed(now - self.t_step)})"
                        + (f"  | {report}" if report else ""))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)


# ----------------------------------------------------------------------------- papermill engine
_progress: Progress | None = None


def _kernel_manager_class():
    """A kernel manager over IPC (no 'running over TCP without encryption' warning) that shuts
    an idle kernel down without interrupting it first (jupyter_client's default interrupt made
    every successful run print the kernel's 'KeyboardInterrupt caught in kernel')."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kw: Any):
            import tempfile

            kw.setdefault("transport", "ipc")
            # jupyter_client's default IPC name is `kernel-ipc-<n>` in the working directory, with
            # n counted from 1: two pipelines (or a pipeline and a test) starting kernels at the
            # same time took each other's sockets ("Invalid Signature"). A private folder per kernel.
            self._ipc_dir = tempfile.mkdtemp(prefix="edgeloop-kernel-")
            kw.setdefault("ip", os.path.join(self._ipc_dir, "k"))
            super().__init__(**kw)

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)

        async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            if now or not self.has_kernel:
                return await super()._async_shutdown_kernel(now=now, restart=restart)
            self.shutting_down = True
            self.stop_restarter()
            await self._async_request_shutdown(restart=restart)
            await self._async_finish_shutdown(restart=restart)  # kills it if it does not stop
            await self._async_cleanup_resources(restart=restart)

        # jupyter_client binds `shutdown_kernel` (what nbclient calls) to the base class's coroutine
        # function, so overriding `_async_shutdown_kernel` alone never ran: rebind it here.
        shutdown_kernel = _async_shutdown_kernel

    return QuietKernelManager


def _register_engine() -> str:
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            start = nb_man.cell_start

            def cell_start(cell, cell_index=None, **kw):
                if _progress is not None and cell_index is not None:
                    _progress.cell_started(cell_index)
                return start(cell, cell_index, **kw)

            nb_man.cell_start = cell_start
            if _progress is not None:
                _progress.set_cells(nb_man.nb)
            kwargs.setdefault("kernel_manager_class", _kernel_manager_class())
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("edgeloop", ProgressEngine)
    return "edgeloop"


def sign_notebook(path: Path) -> None:
    """Sign a notebook as `jupyter trust` does, so its widgets and HTML render when opened."""
    import nbformat
    from nbformat.sign import NotebookNotary

    nb = nbformat.read(path, as_version=4)
    NotebookNotary().sign(nb)


def _timeout_failure(exc: BaseException, nb_name: str, cell_index: int, step: str, limit: int) -> dict[str, Any]:
    info = _failure(exc)
    info.update(cell_index=cell_index, ename=type(exc).__name__, evalue=(
        f"{nb_name}, step '{step or 'start'}' (cell {cell_index}) ran longer than its {limit} s limit. If the "
        f"machine is just slow, give it more time: --cell-timeout {limit * 2} (the limit of training cells "
        f"also grows with epochs x images); if it hangs, its output in the executed notebook shows where."))
    return info


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
    global _progress
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from helpers import results

    workspace, out = Path(workspace).resolve(), Path(out).resolve()
    chosen = _select(only)
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
        from helpers.device.runtime import docker_engine_available

        ok, why = docker_engine_available()
        if not ok:
            raise ConfigError(f"runtime container: {why}")
    summary = Summary(profile=profile, backend=backend, workspace=str(workspace), seed=seed, studio_backend=studio_backend or backend,
                      parameters={nb: params_by_nb[nb] for nb in chosen})
    summary.load_avg["start"] = [round(v, 2) for v in os.getloadavg()]
    engine = _register_engine()
    _progress = Progress(progress_file, every_s=progress_every_s)
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
            _progress.start_notebook(nb, nbformat.read(source, as_version=4))
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
                run.status, run.error, failed = "failed", _failure(exc), True
            except (CellTimeoutError, DeadKernelError) as exc:
                run.status, failed = "failed", True
                run.error = _timeout_failure(exc, nb, _progress.cell_index, _progress.step, limit)
            finally:
                _progress.end_notebook()
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
        _progress.close()
        _progress = None
        os.environ.pop(PROGRESS_ENV, None)
        progress_file.unlink(missing_ok=True)
        summary.total_s = round(time.monotonic() - t_all, 1)
        summary.load_avg["end"] = [round(v, 2) for v in os.getloadavg()]
        summary.results = results.load_all(workspace)
        (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str))
        if stop_at_end:
            stop_everything(workspace)
    return summary


def _raise_keyboard_interrupt(signum, frame):  # SIGTERM -> the same clean-up path as Ctrl-C
    raise KeyboardInterrupt


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
    import nbformat
    from nbformat.sign import NotebookNotary

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


def format_table(summary: Summary) -> str:
    rows = [f"{'notebook':22} {'status':8} {'seconds':>8}"]
    for r in summary.notebooks:
        where = ""
        if r.error:
            where = f"  (cell {r.error.get('cell_index')}: {r.error.get('ename')})"
        rows.append(f"{r.notebook:22} {r.status:8} {r.duration_s:8.1f}{where}")
        for c in r.failed_checks:
            rows.append(f"{'':22}   check failed: {c['label']}"
                        + (f" (measured {c['measured']})" if c.get("measured") is not None else ""))
        if r.error and r.error.get("type") in ("CellTimeoutError", "DeadKernelError"):
            rows.append(f"{'':22}   {r.error.get('evalue')}")
    rows.append(f"{'total':22} {'ok' if summary.ok else 'FAILED':8} {summary.total_s:8.1f}")
    checks = summary.checks
    rows.append(f"checks: {len(checks) - len(summary.failed_checks)} of {len(checks)} true"
                f"   load average (1 min) {summary.load_avg.get('start', ['?'])[0]} at start,"
                f" {summary.load_avg.get('end', ['?'])[0]} at the end")
    return "\n".join(rows)


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
                   help="the studio's backend when it differs from --backend (e.g. --studio edgeimpulse with the local hub)")
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


if __name__ == "__main__":
    sys.exit(main())
