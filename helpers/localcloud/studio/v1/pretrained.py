"""A model the user brings (LearnApi's pretrained-model calls, what `edgeimpulse.model.deploy` and `profile` send).

`POST .../pretrained-model/upload` takes the model file (multipart `modelFile`, `modelFileName`,
`modelFileType`), `GET .../pretrained-model` answers its input and output tensors and the model
types it can be deployed as, and `POST .../pretrained-model/save` takes what the model is (Edge
Impulse's `input` and `model` descriptions). The saved model becomes the project's deployable
model until a newer training job finishes; `DeploymentApi.download_build` then packages it as the
`.eim` helpers.inference.eim_build builds for our own models (`..v1.deployment`).

What is mirrored: ONNX files in the head shapes `helpers.inference.onnx.OnnxDetector` decodes
(outputs `heatmap`+`ltrb`: `lastLayer` "fomo"; `boxes`+`scores`: "mobilenet-ssd"), image input
with any of Edge Impulse's input scalings and the "squash" resize, object detection, float32.
Everything else is refused with Edge Impulse's `success: false` naming what is not mirrored:
other file types (TensorFlow Lite, SavedModel, ...), other inputs and model types, int8
quantisation, and profiling (`profile_pretrained_model`: Edge Impulse estimates RAM, ROM and
latency on its device farm and in its simulators, which this machine does not have).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from helpers.errors import ModelError
from helpers.inference.onnx import DEFAULT_PREPROCESSING, HEAD_OUTPUTS, OnnxDetector
from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import Context
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store
from helpers.localcloud.studio.auth import require_management
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import SavePretrainedModelRequest
from helpers.localcloud.studio.v1.base import check_project, fail, ok
from helpers.localcloud.studio.v1.jobs import record_job

router = studio_router(tags=["studio (Edge Impulse Studio API)"])
META = "studio_pretrained"
MODEL_TYPES = ["float32"]
# Edge Impulse's `lastLayer` names for the heads the .eim decodes, by the ONNX outputs that make each one
LAST_LAYERS = {"fomo": "centernet", "mobilenet-ssd": "ssd"}
# Edge Impulse's image input scalings as the card's preprocessing (value * scale - mean) / std
SCALINGS: dict[str, dict[str, Any]] = {
    "0..1": {"scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    "-1..1": {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    "-128..127": {"scale": 1.0, "mean": [128.0, 128.0, 128.0], "std": [1.0, 1.0, 1.0]},
    "0..255": {"scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    "torch": {k: DEFAULT_PREPROCESSING[k] for k in ("scale", "mean", "std")},
    "bgr-subtract-imagenet-mean": {"channel_order": "BGR", "scale": 1.0, "mean": [103.939, 116.779, 123.68],
                                   "std": [1.0, 1.0, 1.0]},
}
NOT_PROFILED = ("profiling is not mirrored by the local studio: Edge Impulse estimates RAM, ROM and latency per device "
                "class on its own device farm and simulators, which this machine does not have. Measure the model where it "
                "runs instead (helpers.evaluate, or the runner's timing in its telemetry)")


class NotMirrored(Exception):
    """A model description the local studio cannot deploy; the message names what is not mirrored."""


def pretrained_dir(ctx: Context) -> Path:
    return ctx.files / "pretrained"


def deployable_dir(ctx: Context) -> Path | None:
    """The saved pretrained model's folder (model.onnx + model.json), or None when none is saved."""
    meta = store.get_meta(ctx, META, {}) or {}
    d = pretrained_dir(ctx) / "model"
    return d if meta.get("savedAt") and (d / "model.json").is_file() else None


def saved_at(ctx: Context) -> str | None:
    return (store.get_meta(ctx, META, {}) or {}).get("savedAt")


def _tensors(items: Any) -> list[dict[str, Any]]:
    kinds = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int64)": "int64"}
    return [{"dataType": kinds.get(t.type, t.type.removeprefix("tensor(").rstrip(")")), "name": t.name,
             "shape": [d if isinstance(d, int) else (1 if i == 0 else -1) for i, d in enumerate(t.shape)]} for t in items]


def _inspect(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several unrelated types for a bad file
        raise NotMirrored(f"modelFile is not an ONNX model onnxruntime can load: {e}") from None
    return _tensors(sess.get_inputs()), _tensors(sess.get_outputs())


@router.post("/{pid}/pretrained-model/upload", summary="Upload a model file (LearnApi.upload_pretrained_model): ONNX")
async def upload_pretrained_model(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send the model as multipart/form-data: modelFile, modelFileName, modelFileType", "modelFile")
    form = await request.form(max_part_size=ctx.max_body_bytes)
    upload = form.get("modelFile")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "modelFile is required: the model file as a multipart file part", "modelFile")
    file_type = str(form.get("modelFileType") or "")
    name = str(form.get("modelFileName") or upload.filename or "model")
    device = form.get("device")
    data = await upload.read()
    if file_type != "onnx":
        return fail(f"modelFileType {file_type!r} is not mirrored by the local studio: it deploys ONNX models "
                    "(pass the path of an .onnx file); TensorFlow Lite, SavedModel and other formats are converted only by "
                    "Edge Impulse")
    return await run_in_threadpool(_store_upload, ctx, name, data, str(device) if device else None)


def _store_upload(ctx: Context, name: str, data: bytes, device: str | None) -> dict[str, Any]:
    d = pretrained_dir(ctx)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "upload.onnx"
    path.write_bytes(data)
    try:
        inputs, outputs = _inspect(path)
    except NotMirrored as e:
        path.unlink()
        return fail(str(e))
    store.set_meta(ctx, META, {"fileName": name, "fileType": "onnx", "uploadedAt": now_iso(), "inputs": inputs,
                               "outputs": outputs, "device": device})
    shutil.rmtree(d / "model", ignore_errors=True)  # a new upload replaces the saved model
    job_id = record_job(ctx, "pretrained-upload", {"fileName": name},
                        [f"Uploaded {name} ({len(data)} bytes)", f"inputs: {json.dumps(inputs)}", f"outputs: {json.dumps(outputs)}"])
    return ok(id=job_id)


@router.get("/{pid}/pretrained-model", summary="The uploaded model's tensors and deployable types "
            "(LearnApi.get_pretrained_model_info)")
def get_pretrained_model_info(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    meta = store.get_meta(ctx, META, {}) or {}
    if not meta.get("uploadedAt"):
        return ok(specificDeviceSelected=False, availableModelTypes=[])
    model = {"fileName": meta["fileName"], "inputs": meta["inputs"], "outputs": meta["outputs"], "supportsTFLite": False,
             "profileJobFailed": None}
    info = {"input": meta.get("input"), "model": meta.get("model")} if meta.get("savedAt") else None
    return ok(specificDeviceSelected=bool(meta.get("device")), availableModelTypes=MODEL_TYPES, model=model,
              **({"modelInfo": info} if info else {}))


def _card(meta: dict[str, Any], inp: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """The model card of the uploaded model from Edge Impulse's `input` and `model` descriptions (NotMirrored names what is not)."""
    if inp.get("inputType") != "image":
        raise NotMirrored(f"input.inputType {inp.get('inputType')!r} is not mirrored by the local studio: it deploys "
                            "image models (edgeimpulse.model.input_type.ImageInput())")
    if out.get("modelType") != "object-detection":
        raise NotMirrored(f"model.modelType {out.get('modelType')!r} is not mirrored by the local studio: it deploys "
                            "object-detection models (edgeimpulse.model.output_type.ObjectDetection)")
    names = {t["name"] for t in meta["outputs"]}
    head = next((h for h, outs in HEAD_OUTPUTS.items() if h in LAST_LAYERS.values() and set(outs) <= names), None)
    layer = out.get("lastLayer")
    supported = ", ".join(f"{k} (outputs {' + '.join(HEAD_OUTPUTS[v])})" for k, v in LAST_LAYERS.items())
    if head is None or LAST_LAYERS.get(str(layer)) != head:
        raise NotMirrored(f"model.lastLayer {layer!r} with outputs {sorted(names)} is not mirrored by the local studio's "
                            f".eim; it decodes {supported}")
    resize = inp.get("resizeMode") or "squash"
    if resize != "squash":
        raise NotMirrored(f"input.resizeMode {resize!r} is not mirrored by the .eim; use squash")
    scaling = inp.get("inputScaling") or "0..1"
    if scaling not in SCALINGS:
        raise NotMirrored(f"input.inputScaling {scaling!r} is unknown; use one of {', '.join(SCALINGS)}")
    shape = meta["inputs"][0]["shape"] if meta["inputs"] else []
    pre = {**DEFAULT_PREPROCESSING, "resize": "squash", "channel_order": "RGB", **SCALINGS[scaling]}
    if len(shape) == 4 and shape[1] == 1:
        pre.update(channel_order="grayscale", mean=pre["mean"][:1], std=pre["std"][:1])
    return {"format": "onnx", "name": meta["fileName"], "labels": list(out.get("labels") or []),
            "input_size": shape[2] if len(shape) == 4 else None, "score_threshold": float(out.get("minimumConfidence", 0.5)),
            "head": {"type": head}, "preprocessing": pre, "source": "edgeimpulse.model.deploy"}


@router.post("/{pid}/pretrained-model/save", summary="Describe the uploaded model (LearnApi.save_pretrained_model_parameters)")
async def save_pretrained_model_parameters(pid: int, request: Request, body: SavePretrainedModelRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    return await run_in_threadpool(_save, ctx, body.input, body.model)


def _save(ctx: Context, inp: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    meta = store.get_meta(ctx, META, {}) or {}
    if not meta.get("uploadedAt"):
        return fail("there is no uploaded model to describe; upload one first (LearnApi.upload_pretrained_model)")
    try:
        card = _card(meta, inp, out)
    except NotMirrored as e:
        return fail(str(e))
    d = pretrained_dir(ctx) / "model"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    shutil.copyfile(pretrained_dir(ctx) / "upload.onnx", d / "model.onnx")
    (d / "model.json").write_text(json.dumps(card, indent=2))
    try:
        OnnxDetector(d)  # the checks the .eim makes when it starts: labels against classes, input size, outputs
    except ModelError as e:
        shutil.rmtree(d, ignore_errors=True)
        return fail(f"the model does not match its description: {e}")
    store.set_meta(ctx, META, {**meta, "input": inp, "model": out, "savedAt": now_iso()})
    return ok()


@router.post("/{pid}/pretrained-model/profile", summary="Profile the uploaded model (LearnApi.profile_pretrained_model): "
             "not mirrored, answered with Edge Impulse's success: false")
def profile_pretrained_model(pid: int, request: Request) -> dict[str, Any]:
    check_project(request, pid)
    require_management(request)
    return fail(NOT_PROFILED)
