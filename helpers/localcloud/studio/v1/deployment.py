"""The trained model's downloads: LearnApi.download_learn_model (ONNX, card) and DeploymentApi.download_build (`.eim`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request, Response

from helpers.inference.eim_build import build_eim
from helpers.localcloud.common.context import Context
from helpers.localcloud.common.db import loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio.keys import device_access
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.v1.base import check_project, impulse_of, job_dir, project_id, trained_job
from helpers.protocol.ei_vocab import EIM_TYPES

router = studio_router(tags=["studio (Edge Impulse Studio API)"])
MODEL_DOWNLOADS = {"onnx": ("model.onnx", "application/octet-stream"), "card": ("model.json", "application/json")}


def model_dir_for(ctx: Context, learn_id: int) -> Path | None:
    row = trained_job(ctx)
    if row is None or loads(row["params"], {}).get("learnId") != learn_id:
        return None
    d = job_dir(ctx, row["id"]) / "model"
    return d if (d / "model.onnx").is_file() else None


@router.get("/{pid}/learn-data/{learn_id}/model/{download_id}", summary="Download the trained model "
            "(LearnApi.download_learn_model): ids 'onnx' and 'card'")
@device_access("model")
def download_learn_model(pid: int, learn_id: int, download_id: str, request: Request) -> Any:
    ctx = check_project(request, pid)
    if download_id not in MODEL_DOWNLOADS:
        raise ApiError(404, f"no model download {download_id!r}; available: {', '.join(MODEL_DOWNLOADS)}", "modelDownloadId")
    d = model_dir_for(ctx, learn_id)
    if d is None:
        raise ApiError(404, f"learn block {learn_id} has no trained model yet; run JobsApi.train_keras_job first", "learnId")
    name, media = MODEL_DOWNLOADS[download_id]
    return Response((d / name).read_bytes(), media_type=media,
                    headers={"content-disposition": f'attachment; filename="{name}"'})


@router.get("/{pid}/deployment/download", summary="Download a deployment (DeploymentApi.download_build): "
            "type runner-linux-x86_64 gives the trained model as an .eim executable")
@device_access("model")
def download_build(pid: int, request: Request, type: str) -> Any:
    ctx = check_project(request, pid)
    if type not in EIM_TYPES:
        raise ApiError(400, f"deployment type {type!r} is not built here; use one of {', '.join(EIM_TYPES)}", "type")
    imp = impulse_of(ctx)
    learn_id = int(imp["learnBlocks"][0]["id"]) if imp else -1
    d = model_dir_for(ctx, learn_id)
    if d is None:
        raise ApiError(404, "there is no trained model to deploy yet; run JobsApi.train_keras_job first", "type")
    out = ctx.files / "deployments"
    out.mkdir(parents=True, exist_ok=True)
    path = build_eim(d, out / f"{project_id(ctx)}-{type}.eim")
    return Response(path.read_bytes(), media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{path.name}"'})
