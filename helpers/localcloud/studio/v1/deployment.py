"""Deployments: the trained model's downloads (LearnApi.download_learn_model: ONNX, card), the deployment targets,
the build job (JobsApi.build_on_device_model_job) and DeploymentApi.download_build (`.eim`).

The deployed model is the newer of the last trained model and a model the user brought
(`..v1.pretrained`, what `edgeimpulse.model.deploy` uploads), as Edge Impulse deploys the
project's current impulse. The targets are the `runner-linux-*` ones: an `.eim` built by
`helpers.inference.eim_build` (the model runs with onnxruntime; Edge Impulse's engine name for it
is the default, `tflite`), float32 only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response

from helpers.errors import ModelError
from helpers.inference.eim_build import build_eim
from helpers.localcloud.common.context import Context
from helpers.localcloud.common.db import loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio.auth import require_management
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import BuildOnDeviceModelRequest
from helpers.localcloud.studio.v1 import pretrained
from helpers.localcloud.studio.v1.base import check_project, fail, impulse_of, job_dir, ok, project_id, trained_job
from helpers.localcloud.studio.v1.jobs import record_job
from helpers.protocol.ei_vocab import EIM_TYPES

router = studio_router(tags=["studio (Edge Impulse Studio API)"])
ENGINES, MODEL_TYPES = ("tflite",), ("float32",)
MODEL_DOWNLOADS = {"onnx": ("model.onnx", "application/octet-stream"), "card": ("model.json", "application/json")}


def model_dir_for(ctx: Context, learn_id: int) -> Path | None:
    row = trained_job(ctx)
    if row is None or loads(row["params"], {}).get("learnId") != learn_id:
        return None
    d = job_dir(ctx, row["id"]) / "model"
    return d if (d / "model.onnx").is_file() else None


@router.get("/{pid}/learn-data/{learn_id}/model/{download_id}", summary="Download the trained model "
            "(LearnApi.download_learn_model): ids 'onnx' and 'card'")
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


def deploy_dir(ctx: Context) -> Path | None:
    """The model folder a deployment packages: the newer of the last trained model and the saved pretrained one."""
    imp = impulse_of(ctx)
    trained = model_dir_for(ctx, int(imp["learnBlocks"][0]["id"]) if imp else -1)
    brought = pretrained.deployable_dir(ctx)
    if trained is None or brought is None:
        return trained or brought
    row = trained_job(ctx)
    return brought if (pretrained.saved_at(ctx) or "") > (row["finished_at"] or "") else trained


def _target(fmt: str) -> dict[str, Any]:
    arch = fmt.removeprefix("runner-linux-")
    return {"name": f"Linux ({arch})", "description": f"An .eim executable for Linux {arch}, run by Edge Impulse's Linux "
            "runner and SDKs (edgeloop: the model runs with onnxruntime; python3 with numpy, OpenCV and onnxruntime where "
            "it runs)", "image": "/assets/deploy-linux.svg", "imageClasses": "", "format": fmt, "latencyDevice": None,
            "hasEonCompiler": False, "hasTensorRT": False, "hasTensaiFlow": False, "hasDRPAI": False, "hasTIDL": False,
            "hasAkida": False, "hasMemryx": False, "hasStAton": False, "hasCevaNpn": False, "hasNordicAxon": False,
            "hasQaic": False, "hideOptimizations": True, "uiSection": "library", "supportedEngines": list(ENGINES),
            "preferredEngine": ENGINES[0], "docsUrl": "https://docs.edgeimpulse.com/docs/run-inference/linux-eim-executable",
            "modelVariants": [{"variant": "float32", "supported": True},
                              {"variant": "int8", "supported": False, "hint": "int8 quantisation is not mirrored locally"}],
            "parameters": []}


@router.get("/{pid}/deployment/targets/data-sources", summary="Deployment targets (DeploymentApi."
            "list_deployment_targets_for_project_data_sources): runner-linux-*")
def list_targets(pid: int, request: Request) -> dict[str, Any]:
    check_project(request, pid)
    require_management(request)
    return ok(targets=[_target(t) for t in EIM_TYPES])


def _check_build(type: str, engine: str | None, model_type: str | None) -> str | None:
    """Why a build of this target, engine and model type cannot be made here (None when it can)."""
    if type not in EIM_TYPES:
        return f"deployment type {type!r} is not built by the local studio; use one of {', '.join(EIM_TYPES)}"
    if engine is not None and engine not in ENGINES:
        return f"engine {engine!r} is not mirrored for {type}; use {', '.join(ENGINES)} (the .eim runs the model with onnxruntime)"
    if model_type is not None and model_type not in MODEL_TYPES:
        return f"modelType {model_type!r} is not mirrored: the local studio builds float32 models only"
    return None


def _build(ctx: Context, type: str) -> Path:
    d = deploy_dir(ctx)
    if d is None:
        raise ApiError(404, "there is no model to deploy yet; run JobsApi.train_keras_job, or upload one "
                            "(edgeimpulse.model.deploy)", "type")
    out = ctx.files / "deployments"
    out.mkdir(parents=True, exist_ok=True)
    return build_eim(d, out / f"{project_id(ctx)}-{type}.eim")


@router.post("/{pid}/jobs/build-ondevice-model", summary="Build a deployment (JobsApi.build_on_device_model_job): "
             "runner-linux-* as an .eim")
def build_job(pid: int, request: Request, type: str, body: BuildOnDeviceModelRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    why = _check_build(type, body.engine, body.modelType)
    if why:
        return fail(why)
    params = {"type": type, "engine": body.engine, "modelType": body.modelType}
    try:
        path = _build(ctx, type)
    except (ApiError, ModelError) as e:
        return ok(id=record_job(ctx, "build", params, [f"Building {type}"], error=str(e)))
    return ok(id=record_job(ctx, "build", params, [f"Building {type}", f"Built {path.name} ({path.stat().st_size} bytes)"]))


@router.get("/{pid}/deployment/download", summary="Download a deployment (DeploymentApi.download_build): "
            "type runner-linux-x86_64 gives the deployed model as an .eim executable")
def download_build(pid: int, request: Request, type: str, engine: str | None = None, modelType: str | None = None) -> Any:
    ctx = check_project(request, pid)
    why = _check_build(type, engine, modelType)
    if why:
        raise ApiError(400, why, "type")
    path = _build(ctx, type)
    return Response(path.read_bytes(), media_type="application/octet-stream",
                    # RFC 6266's extended form only: the SDK's build() takes the file name from `filename*=utf-8''...`
                    headers={"content-disposition": f"attachment; filename*=utf-8''{quote(path.name)}"})
