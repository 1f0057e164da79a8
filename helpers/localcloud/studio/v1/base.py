"""The Edge Impulse Studio API (`/v1/api/...`) on the local studio: what its areas share (project, answers, state).

`edgeimpulse-api` (the generated client: `ProjectsApi`, `RawDataApi`, `ImpulseApi`, `DSPApi`,
`JobsApi`, `LearnApi`, `DeploymentApi`) talks to this router exactly as it talks to
`https://studio.edgeimpulse.com/v1`; the answers carry the fields its models require, under the
same names. Failures follow Edge Impulse's convention: a JSON body `{"success": false, "error":
"..."}` (HTTP 200 where Edge Impulse answers 200, e.g. an unknown sample id or a job that cannot
start; 4xx for authentication and malformed requests), which the generated client raises as an
exception carrying the message.

The project is the workspace's studio: one project with a stable id (`meta.studio_project_id`),
object detection, images. The samples, boxes and files are the same rows and files the
ingestion endpoint writes (`..studio.ingestion`). A sample is in the object-detection label
queue until its boxes are saved (an empty list saves "no objects").

The impulse (image input size and resize mode, the image DSP block's colour depth, one
object-detection learn block and its Keras settings) is stored in `meta`. A training job
(`POST .../jobs/train/keras/{learnId}`) runs `helpers.train` on the studio's labeled snapshot in
a background process (`python -m helpers.localcloud.studio.train_job`); status and stdout are served from the `jobs` table and the
job's log file; the trained model is downloaded with `LearnApi.download_learn_model` (download
ids `onnx` and `card`) or, packaged as an `.eim` executable, with
`DeploymentApi.download_build(type="runner-linux-x86_64")`.

Extensions (no Edge Impulse equivalent, documented in the README): the `x-test-fraction` header
of `POST .../rebalance` (Edge Impulse's split is always 80/20), `customParameters` in the
Keras settings (`arch` for architectures Edge Impulse does not have, the training `seed`, a
`time_budget_s`: what the notebooks set and Edge Impulse has no field for), and the model
registry and snapshots under `/api/models` and `/api/snapshots` (`..studio.registry`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import Request

from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import Context, ctx_of
from helpers.localcloud.common.db import loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store


def ok(**body: Any) -> dict[str, Any]:
    return {"success": True, **body}


def fail(message: str) -> dict[str, Any]:
    """Edge Impulse's failure answer (HTTP 200): the generated client raises `Exception(message)`."""
    return {"success": False, "error": message}


# ---------------------------------------------------------------- project
def project_id(ctx: Context) -> int:
    """The workspace project's id: created once, stable across restarts."""
    with ctx.store.tx() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key='studio_project_id'").fetchone()
        if row is not None:
            return int(row["value"])
        pid = 100000 + int.from_bytes(os.urandom(3), "big") % 900000
        conn.execute("INSERT INTO meta(key, value) VALUES('studio_project_id', ?)", (str(pid),))
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('studio_project_created', ?)", (now_iso(),))
        return pid


def check_project(request: Request, pid: int) -> Context:
    ctx = ctx_of(request)
    if pid != project_id(ctx):
        raise ApiError(404, f"project {pid} not found: this API key belongs to project {project_id(ctx)} "
                            "(ProjectsApi.list_projects() lists it)", "projectId")
    return ctx


def project_json(ctx: Context) -> dict[str, Any]:
    created = store.get_meta_text(ctx, "studio_project_created") or now_iso()
    with ctx.store.read() as conn:
        labels = [r["name"] for r in conn.execute("SELECT name FROM labels ORDER BY name")]
    metadata = {**store.get_meta(ctx, "studio_project_metadata", {}), "labels": labels}
    return {"id": project_id(ctx), "name": f"edgeloop studio ({ctx.workspace.name})", "description": "the local studio of "
            "an edgeloop workspace", "created": created, "owner": "edgeloop", "ownerIsDeveloperProfile": False,
            "collaborators": [], "labelingMethod": "object_detection", "metadata": metadata, "isEnterpriseProject": False,
            "whitelabelId": 1, "tier": "free", "hasPublicVersion": False, "isPublic": False, "allowsLivePublicAccess": False,
            "indPauseProcessingSamples": False, "publicProjectListed": False}


def summary(conn: Any, where: str = "", args: tuple = ()) -> dict[str, Any]:
    rows = conn.execute(f"SELECT label, boxes FROM samples {where}", args).fetchall()
    labels = sorted({b["label"] for r in rows for b in loads(r["boxes"], [])} | {r["label"] for r in rows if r["label"]})
    return {"totalLengthMs": 0.0, "labels": labels, "totalLabels": len(labels), "dataCount": len(rows)}


def empty_summary() -> dict[str, Any]:
    return {"totalLengthMs": 0.0, "labels": [], "totalLabels": 0, "dataCount": 0}


def impulse_of(ctx: Context) -> dict[str, Any] | None:
    return store.get_meta(ctx, "studio_impulse")


def learn_block(impulse: dict[str, Any] | None, learn_id: int) -> dict[str, Any] | None:
    for b in (impulse or {}).get("learnBlocks", []):
        if int(b.get("id", -1)) == learn_id:
            return b
    return None


def job_dir(ctx: Context, job_id: int) -> Path:
    return ctx.files / "jobs" / str(job_id)


def trained_job(ctx: Context) -> Any:
    with ctx.store.read() as conn:
        return conn.execute("SELECT * FROM jobs WHERE kind='train' AND successful=1 ORDER BY id DESC LIMIT 1").fetchone()

