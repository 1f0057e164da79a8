"""The impulse (ImpulseApi), its image block (DSPApi) and its object-detection learn block's settings (LearnApi)."""
from __future__ import annotations

import math
from typing import Any

from fastapi import Request

from helpers.localcloud.common.context import Context
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store
from helpers.localcloud.studio.auth import require_management
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import CreateImpulseRequest, DSPConfigRequest, SetKerasParameterRequest
from helpers.localcloud.studio.v1.base import check_project, fail, impulse_of, learn_block, ok, summary, trained_job
from helpers.protocol.ei_vocab import ARCH_EI_MODEL, CUSTOM_PARAMETERS, EI_COLOR, EI_MODEL_ARCH, IMAGE_RESIZE_MODES

router = studio_router(tags=["studio (Edge Impulse Studio API)"])
DEFAULT_KERAS = {"trainingCycles": 30, "learningRate": 0.005, "batchSize": 16, "arch": "fomo-box", "valFraction": 0.2,
                 "seed": 0, "timeBudgetS": None}


@router.get("/{pid}/impulse", summary="The impulse (ImpulseApi.get_impulse)")
def get_impulse(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    imp = impulse_of(ctx)
    return ok(impulse=imp) if imp else ok()


@router.post("/{pid}/impulse", summary="Create or replace the impulse (ImpulseApi.create_impulse)")
def create_impulse(pid: int, request: Request, req: CreateImpulseRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    body = req.given()
    inputs = body["inputBlocks"]
    if len(inputs) != 1 or inputs[0].get("type") != "image":
        return fail("This project takes images: the impulse needs exactly one input block of type 'image'")
    inp = inputs[0]
    w, h = inp.get("imageWidth"), inp.get("imageHeight")
    if not isinstance(w, int) or not isinstance(h, int) or w != h or w % 32 or not 64 <= w <= 640:
        return fail(f"imageWidth and imageHeight must be equal and a multiple of 32 from 64 to 640: 96, 160 or 320 for "
                    f"fomo-box, 224, 320 or 416 for nanodet-ft (got {w}x{h})")
    if inp.get("resizeMode", "squash") not in IMAGE_RESIZE_MODES:
        return fail(f"resizeMode must be one of {', '.join(IMAGE_RESIZE_MODES)}")
    if any(b.get("type") != "image" for b in body["dspBlocks"]) or len(body["dspBlocks"]) != 1:
        return fail("the impulse needs exactly one processing block of type 'image'")
    learn = body["learnBlocks"]
    if len(learn) != 1 or learn[0].get("type") != "keras-object-detection":
        return fail("the impulse needs exactly one learning block of type 'keras-object-detection'")
    impulse = {"id": 1, "name": body.get("name") or "Impulse #1", "type": "default",
               "inputBlocks": [{**inp, "resizeMode": inp.get("resizeMode", "squash")}],
               "dspBlocks": body["dspBlocks"], "learnBlocks": learn, "postProcessingBlocks": []}
    store.set_meta(ctx, "studio_impulse", impulse)
    dsp_id = int(body["dspBlocks"][0]["id"])
    cfg = store.get_meta(ctx, "studio_dsp_config", {})
    cfg.setdefault(str(dsp_id), {"channels": "RGB"})
    store.set_meta(ctx, "studio_dsp_config", cfg)
    return ok(id=impulse["id"])


def dsp_info(ctx: Context, dsp_id: int) -> dict[str, Any] | None:
    imp = impulse_of(ctx)
    block = next((b for b in (imp or {}).get("dspBlocks", []) if int(b["id"]) == dsp_id), None)
    if block is None:
        return None
    return {"id": dsp_id, "name": block.get("name", "Image"), "windowLength": 0, "type": "image", "classes": [],
            "features": {"generated": False}, "expectedWindowCount": 0, "inputAxes": ["image"],
            "canCalculateFeatureImportance": False, "calculateFeatureImportance": False, "canNormalizeData": False,
            "normalizeData": "none"}


@router.get("/{pid}/dsp/{dsp_id}", summary="The image block's parameters (DSPApi.get_dsp_config)")
def get_dsp_config(pid: int, dsp_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    info = dsp_info(ctx, dsp_id)
    if info is None:
        return fail(f"DSP block {dsp_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    channels = store.get_meta(ctx, "studio_dsp_config", {}).get(str(dsp_id), {}).get("channels", "RGB")
    item = {"name": "Color depth", "value": channels, "defaultValue": "RGB", "type": "select", "param": "channels",
            "selectOptions": [{"value": "RGB", "selected": channels == "RGB"}, {"value": "Grayscale", "selected": channels == "Grayscale"}],
            "readonly": False, "shouldShow": True, "required": True, "showClickToSet": False}
    return ok(dsp=info, config=[{"group": "Parameters", "items": [item]}])


@router.post("/{pid}/dsp/{dsp_id}", summary="Set the image block's colour depth (DSPApi.set_dsp_config)")
def set_dsp_config(pid: int, dsp_id: int, request: Request, body: DSPConfigRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    if dsp_info(ctx, dsp_id) is None:
        return fail(f"DSP block {dsp_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    channels = (body.config or {}).get("channels", "RGB")
    if channels not in EI_COLOR:
        return fail(f"channels must be RGB or Grayscale (got {channels!r})")
    cfg = store.get_meta(ctx, "studio_dsp_config", {})
    cfg[str(dsp_id)] = {"channels": channels}
    store.set_meta(ctx, "studio_dsp_config", cfg)
    return ok()


def keras_settings(ctx: Context, learn_id: int) -> dict[str, Any]:
    return {**DEFAULT_KERAS, **store.get_meta(ctx, "studio_keras", {}).get(str(learn_id), {})}


@router.get("/{pid}/training/keras/{learn_id}", summary="The learning block's settings (LearnApi.get_keras)")
def get_keras(pid: int, learn_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    imp = impulse_of(ctx)
    if learn_block(imp, learn_id) is None:
        return fail(f"learn block {learn_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    k = keras_settings(ctx, learn_id)
    with ctx.store.read() as conn:
        labels = summary(conn, "WHERE labeled=1")["labels"]
        count = conn.execute("SELECT COUNT(*) AS n FROM samples WHERE labeled=1").fetchone()["n"]
    size = imp["inputBlocks"][0]["imageWidth"]
    ei_model = ARCH_EI_MODEL.get(k["arch"])
    return ok(dependencies={"classes": labels, "blockNames": [b["name"] for b in imp["dspBlocks"]], "featureCount": size * size * 3,
                            "sampleCount": count, "outputClasses": labels},
              trained=trained_job(ctx) is not None, name="Object detection", script="", minimumConfidenceRating=0.5,
              selectedModelType="float32", mode="visual", visualLayers=[{"type": ei_model}] if ei_model else [],
              trainingCycles=k["trainingCycles"], learningRate=k["learningRate"], defaultBatchSize=int(k["batchSize"]),
              shape=f"({size}, {size}, 3)", augmentationPolicyImage="all", transferLearningModels=[], profileInt8=False,
              skipEmbeddingsAndMemory=True, showAdvancedTrainingSettings=False, showAugmentationTrainingSettings=False,
              thresholds=[], trainTestSplit=k["valFraction"], customParameters=custom_parameters(k))


def custom_parameters(k: dict[str, Any]) -> dict[str, str]:
    """The learn block's custom parameters as Edge Impulse serves them (strings; no key for no time budget)."""
    out = {"arch": k["arch"], "seed": str(k["seed"])}
    if k["timeBudgetS"] is not None:
        out["time_budget_s"] = repr(float(k["timeBudgetS"]))
    return out


def apply_keras(ctx: Context, learn_id: int, body: SetKerasParameterRequest) -> dict[str, Any]:
    """Store the learn block's settings from `body` (ranges are the request model's); 400 naming the field."""
    k = keras_settings(ctx, learn_id)
    if body.trainingCycles is not None:
        k["trainingCycles"] = body.trainingCycles
    if body.learningRate is not None:
        k["learningRate"] = float(body.learningRate)
    if body.batchSize is not None:
        k["batchSize"] = int(body.batchSize)
    if body.visualLayers:
        t = body.visualLayers[0].type
        if t not in EI_MODEL_ARCH:
            raise ApiError(400, f"visualLayers[0].type {t!r} is not trained here; use one of {sorted(EI_MODEL_ARCH)}", "visualLayers")
        k["arch"] = EI_MODEL_ARCH[t]
    if body.trainTestSplit is not None:
        k["valFraction"] = float(body.trainTestSplit)
    custom = body.customParameters or {}
    unknown = sorted(set(custom) - set(CUSTOM_PARAMETERS))
    if unknown:
        raise ApiError(400, f"customParameters {unknown} are not settings of this learn block; use {list(CUSTOM_PARAMETERS)}",
                       "customParameters")
    arch = custom.get("arch")
    if arch is not None:
        from helpers.train.model import ARCHS  # helpers.train.model loads torch: only a custom arch needs it

        if arch not in ARCHS:
            raise ApiError(400, f"customParameters.arch {arch!r} is not an architecture of helpers.train; use one of {list(ARCHS)}",
                           "customParameters.arch")
        k["arch"] = arch
    if "seed" in custom:
        try:
            k["seed"] = int(str(custom["seed"]))
        except ValueError:
            raise ApiError(400, f"customParameters.seed must be an integer such as '0', got {custom['seed']!r}",
                           "customParameters.seed") from None
    if "time_budget_s" in custom:
        raw = str(custom["time_budget_s"]).strip()
        try:
            budget = None if raw == "" else float(raw)
        except ValueError:
            budget = -1.0
        if budget is not None and not (budget > 0 and math.isfinite(budget)):
            raise ApiError(400, f"customParameters.time_budget_s must be a number of seconds > 0, or '' for none; got "
                           f"{custom['time_budget_s']!r}", "customParameters.time_budget_s")
        k["timeBudgetS"] = budget
    all_k = store.get_meta(ctx, "studio_keras", {})
    all_k[str(learn_id)] = k
    store.set_meta(ctx, "studio_keras", all_k)
    return k


@router.post("/{pid}/training/keras/{learn_id}", summary="Set the learning block's settings (LearnApi.set_keras)")
def set_keras(pid: int, learn_id: int, request: Request, body: SetKerasParameterRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    if learn_block(impulse_of(ctx), learn_id) is None:
        return fail(f"learn block {learn_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    apply_keras(ctx, learn_id, body)
    return ok()
