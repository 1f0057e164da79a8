"""Jobs (JobsApi): the training job (`helpers.localcloud.studio.train_job`) in the background, its status, log, cancel."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import Context
from helpers.localcloud.common.db import dumps, loads
from helpers.localcloud.studio import store
from helpers.localcloud.studio.auth import require_management
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import SetKerasParameterRequest
from helpers.localcloud.studio.v1.base import check_project, fail, impulse_of, job_dir, learn_block, ok
from helpers.localcloud.studio.v1.impulse import apply_keras, keras_settings
from helpers.protocol.ei_vocab import EI_COLOR

router = studio_router(tags=["studio (Edge Impulse Studio API)"])
REPO = Path(__file__).resolve().parents[4]  # the job runs `python -m helpers...` from the checkout
_job_lock = threading.Lock()
_watched: set[int] = set()  # jobs this service process started and waits for


# a job's kind -> Edge Impulse's category and category key
JOB_KINDS = {"train": ("Training model", "train-keras"), "pretrained-upload": ("Uploading model", "upload-pretrained-model"),
             "build": ("Building deployment", "build-ondevice-model")}


def job_json(row: Any) -> dict[str, Any]:
    category, key = JOB_KINDS.get(row["kind"], (row["kind"], row["kind"]))
    return {"id": row["id"], "category": category, "categoryKey": key, "key": f"{key}-{row['id']}",
            "created": row["created_at"], "started": row["started_at"], "finished": row["finished_at"],
            "finishedSuccessful": None if row["finished_at"] is None else bool(row["successful"]),
            "jobNotificationUids": [], "additionalInfo": row["error"], "metadata": loads(row["params"], {})}



def record_job(ctx: Context, kind: str, params: dict[str, Any], lines: list[str], error: str | None = None) -> int:
    """A job this service did at once (an upload, a build): its row, finished, and its log; returns its id."""
    now = now_iso()
    with ctx.store.tx() as conn:
        job_id = conn.execute("INSERT INTO jobs(kind, params, created_at, started_at, finished_at, successful, error) "
                              "VALUES(?, ?, ?, ?, ?, ?, ?)", (kind, dumps(params), now, now, now, int(error is None),
                                                             error)).lastrowid
    d = job_dir(ctx, job_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stdout.log").write_text("".join(f"{ln}\n" for ln in lines + ([f"error: {error}"] if error else [])))
    return int(job_id)


@router.post("/{pid}/jobs/train/keras/{learn_id}", summary="Train the learning block on the labeled samples "
             "(JobsApi.train_keras_job): helpers.train in a background process")
async def train_keras_job(pid: int, learn_id: int, request: Request,
                          body: SetKerasParameterRequest | None = None) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    imp = impulse_of(ctx)
    if learn_block(imp, learn_id) is None:
        return fail(f"learn block {learn_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    k = apply_keras(ctx, learn_id, body) if body is not None and body.given() else keras_settings(ctx, learn_id)
    with ctx.store.read() as conn:
        unfinished = [r["id"] for r in conn.execute("SELECT id FROM jobs WHERE finished_at IS NULL")]
    running = next((r for r in (job_row(ctx, i) for i in unfinished) if r["finished_at"] is None), None)
    with ctx.store.read() as conn:
        n_labeled = conn.execute("SELECT COUNT(*) AS n FROM samples WHERE labeled=1").fetchone()["n"]
    if running is not None:
        return fail(f"job {running['id']} is still running; wait for it or cancel it (JobsApi.cancel_job)")
    if n_labeled == 0:
        return fail("there are no labeled samples to train on; label some in the labeling queue first")
    inp = imp["inputBlocks"][0]
    dsp_id = str(imp["dspBlocks"][0]["id"])
    color = EI_COLOR[store.get_meta(ctx, "studio_dsp_config", {}).get(dsp_id, {}).get("channels", "RGB")]
    params = {"learnId": learn_id, "arch": k["arch"], "epochs": k["trainingCycles"], "learningRate": k["learningRate"],
              "batchSize": k["batchSize"], "inputSize": inp["imageWidth"], "resizeMode": inp["resizeMode"], "color": color,
              "seed": k["seed"], "valFraction": k["valFraction"], "timeBudgetS": k["timeBudgetS"]}
    return await run_in_threadpool(_start_job, ctx, params)


def _start_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    with _job_lock:
        with ctx.store.tx() as conn:
            cur = conn.execute("INSERT INTO jobs(kind, params, created_at) VALUES('train', ?, ?)", (dumps(params), now_iso()))
            job_id = cur.lastrowid
        d = job_dir(ctx, job_id)
        d.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "helpers.localcloud.studio.train_job", "--workspace", str(ctx.workspace),
               "--out", str(d / "model"), "--params", json.dumps(params)]
        env = {**os.environ, "EDGELOOP_WORKSPACE": str(ctx.workspace), "EDGELOOP_STUDIO": "local", "PYTHONUNBUFFERED": "1"}
        # as the pipeline's kernels: waiting OpenMP threads sleep instead of spinning on a busy machine
        # (the torch thread count, EDGELOOP_TORCH_THREADS, comes from the same settings as the kernel's)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        log = open(d / "stdout.log", "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=str(REPO), start_new_session=True)
        finally:
            log.close()
        with ctx.store.tx() as conn:
            conn.execute("UPDATE jobs SET pid=?, started_at=? WHERE id=?", (proc.pid, now_iso(), job_id))
        _watched.add(job_id)
    threading.Thread(target=_watch_job, args=(ctx, job_id, proc), name=f"job-{job_id}", daemon=True).start()
    return ok(id=job_id)


def _watch_job(ctx: Context, job_id: int, proc: subprocess.Popen) -> None:
    rc = proc.wait()
    d = job_dir(ctx, job_id)
    good = rc == 0 and (d / "model" / "model.onnx").is_file()
    error = None if good else _last_error(d / "stdout.log", rc)
    with ctx.store.tx() as conn:
        row = conn.execute("SELECT finished_at FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is not None and row["finished_at"] is None:
            conn.execute("UPDATE jobs SET finished_at=?, successful=?, error=?, pid=NULL WHERE id=?",
                         (now_iso(), int(good), error, job_id))


def _last_error(log: Path, rc: int) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    errs = [ln for ln in lines if ln.startswith("error:")]
    return (errs[-1] if errs else (lines[-1] if lines else "")) or f"training exited with status {rc}"


def job_row(ctx: Context, job_id: int) -> Any:
    """The job's row; a job no process of this service waits for (the service restarted) is marked failed."""
    with ctx.store.tx() as conn:
        row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is not None and row["finished_at"] is None and job_id not in _watched:
            conn.execute("UPDATE jobs SET finished_at=?, successful=0, pid=NULL, error='the local cloud stopped while the job "
                         "ran; start the job again' WHERE id=?", (now_iso(), job_id))
            row = conn.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    return row


@router.get("/{pid}/jobs/{job_id}/status", summary="Job status (JobsApi.get_job_status)")
def job_status(pid: int, job_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    row = job_row(ctx, job_id)
    return fail(f"Unknown job ID {job_id}") if row is None else ok(job=job_json(row))


@router.get("/{pid}/jobs", summary="Jobs that are still running (JobsApi.list_active_jobs)")
def list_active_jobs(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    with ctx.store.read() as conn:
        rows = conn.execute("SELECT * FROM jobs WHERE finished_at IS NULL ORDER BY id").fetchall()
    return ok(jobs=[job_json(r) for r in rows], totalJobCount=len(rows))


@router.get("/{pid}/jobs/{job_id}/stdout", summary="Job log lines, newest first (JobsApi.get_jobs_logs)")
def job_logs(pid: int, job_id: int, request: Request, limit: int | None = None) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    row = job_row(ctx, job_id)
    if row is None:
        return fail(f"Unknown job ID {job_id}")
    log = job_dir(ctx, job_id) / "stdout.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    created = row["started_at"] or row["created_at"]
    items = [{"created": created, "data": ln + "\n", "logLevel": "error" if ln.startswith("error:") else "info"}
             for ln in reversed(lines)]
    if row["finished_at"] is not None:
        items.insert(0, {"created": row["finished_at"], "data": "Job completed\n" if row["successful"] else
                         f"Job failed: {row['error']}\n", "logLevel": "info" if row["successful"] else "error"})
    total = len(items)
    return ok(stdout=items[:limit] if limit else items, totalCount=total)


@router.post("/{pid}/jobs/{job_id}/cancel", summary="Cancel a running job (JobsApi.cancel_job)")
def cancel_job(pid: int, job_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    row = job_row(ctx, job_id)
    if row is None or row["finished_at"] is not None:
        return fail(f"Unknown job ID {job_id}" if row is None else f"job {job_id} has already finished")
    with ctx.store.tx() as conn:
        conn.execute("UPDATE jobs SET finished_at=?, successful=0, error='cancelled' WHERE id=?", (now_iso(), job_id))
    if row["pid"]:
        try:
            os.killpg(int(row["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return ok()
