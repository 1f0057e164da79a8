"""The Edge Impulse Studio API (`/v1/api/...`) as the official clients call it, on the local studio.

`edgeimpulse-api` (the generated client: `ProjectsApi`, `RawDataApi`, `ImpulseApi`, `DSPApi`,
`JobsApi`, `LearnApi`, `DeploymentApi`) talks to this router exactly as it talks to
`https://studio.edgeimpulse.com/v1`; the answers carry the fields its models require, under the
same names. Failures follow Edge Impulse's convention: a JSON body `{"success": false, "error":
"..."}` (HTTP 200 where Edge Impulse answers 200, e.g. an unknown sample id or a job that cannot
start; 4xx for authentication and malformed requests), which the generated client raises as an
exception carrying the message.

The project is the workspace's studio: one project with a stable id (`meta.studio_project_id`),
object detection, images. The samples, boxes and files are the same rows and files the
ingestion endpoint writes (`studio_api`). A sample is in the object-detection label queue until
its boxes are saved (an empty list saves "no objects").

The impulse (image input size and resize mode, the image DSP block's colour depth, one
object-detection learn block and its Keras settings) is stored in `meta`. A training job
(`POST .../jobs/train/keras/{learnId}`) runs `python -m helpers.train` on the studio's labeled
snapshot in a background process; status and stdout are served from the `jobs` table and the
job's log file; the trained model is downloaded with `LearnApi.download_learn_model` (download
ids `onnx` and `card`) or, packaged as an `.eim` executable, with
`DeploymentApi.download_build(type="runner-linux-x86_64")`.

Extensions (no Edge Impulse equivalent, documented in the README): the `x-test-fraction` header
of `POST .../rebalance` (Edge Impulse's split is always 80/20), `customParameters` in the
Keras settings (`arch` for architectures Edge Impulse does not have, the training `seed`, a
`time_budget_s`: what the notebooks set and Edge Impulse has no field for), and the model registry and
snapshots under `/api/models` and `/api/snapshots` (`studio_api`).
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from helpers.localcloud.common import ApiError, Context, ctx_of, json_body, require_studio
from helpers.localcloud.db import dumps, loads
from helpers.localcloud.keys import device_access
from helpers.localcloud.service import now_iso

router = APIRouter(prefix="/v1/api", tags=["studio (Edge Impulse Studio API)"], dependencies=[Depends(require_studio)])

IMAGE_RESIZE_MODES = ("squash", "fit-short", "fit-long", "crop")
# Edge Impulse's object-detection models and the architecture helpers.train trains for each.
EI_MODEL_ARCH = {"fomo_mobilenet_v2_a35": "fomo-box", "fomo_mobilenet_v2_a01": "fomo-box",
                 "object_ssd_mobilenet_v2_fpnlite_320x320": "ssdlite320"}
ARCH_EI_MODEL = {"fomo-box": "fomo_mobilenet_v2_a35", "ssdlite320": "object_ssd_mobilenet_v2_fpnlite_320x320"}
COLOR_EI = {"RGB": "RGB", "grayscale": "Grayscale"}
EI_COLOR = {v: k for k, v in COLOR_EI.items()}
MODEL_DOWNLOADS = {"onnx": ("model.onnx", "application/octet-stream"), "card": ("model.json", "application/json")}
EIM_TYPES = ("runner-linux-x86_64", "runner-linux-aarch64", "runner-linux-armv7")
DEFAULT_KERAS = {"trainingCycles": 30, "learningRate": 0.005, "batchSize": 16, "arch": "fomo-box", "valFraction": 0.2,
                 "seed": 0, "timeBudgetS": None}
# customParameters of the learn block (Edge Impulse has no field for these): the helpers.train
# architecture, the training seed and a time budget in seconds ("" clears it).
CUSTOM_PARAMETERS = ("arch", "seed", "time_budget_s")
_job_lock = threading.Lock()
_watched: set[int] = set()  # jobs this service process started and waits for


def ok(**body: Any) -> dict[str, Any]:
    return {"success": True, **body}


def fail(message: str) -> dict[str, Any]:
    """Edge Impulse's failure answer (HTTP 200): the generated client raises `Exception(message)`."""
    return {"success": False, "error": message}


def iso(ts: str | None) -> str:
    return ts or now_iso()


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


def _meta(ctx: Context, key: str, default: Any = None) -> Any:
    with ctx.store.read() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return default if row is None else json.loads(row["value"])


def _set_meta(ctx: Context, key: str, value: Any) -> None:
    with ctx.store.tx() as conn:
        conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (key, json.dumps(value)))


def project_json(ctx: Context) -> dict[str, Any]:
    created = _meta_text(ctx, "studio_project_created") or now_iso()
    with ctx.store.read() as conn:
        labels = [r["name"] for r in conn.execute("SELECT name FROM labels ORDER BY name")]
    metadata = {**_meta(ctx, "studio_project_metadata", {}), "labels": labels}
    return {"id": project_id(ctx), "name": f"edgeloop studio ({ctx.workspace.name})", "description": "the local studio of "
            "an edgeloop workspace", "created": created, "owner": "edgeloop", "ownerIsDeveloperProfile": False,
            "collaborators": [], "labelingMethod": "object_detection", "metadata": metadata, "isEnterpriseProject": False,
            "whitelabelId": 1, "tier": "free", "hasPublicVersion": False, "isPublic": False, "allowsLivePublicAccess": False,
            "indPauseProcessingSamples": False, "publicProjectListed": False}


def _meta_text(ctx: Context, key: str) -> str | None:
    with ctx.store.read() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else row["value"]


def _summary(conn: Any, where: str = "", args: tuple = ()) -> dict[str, Any]:
    rows = conn.execute(f"SELECT label, boxes FROM samples {where}", args).fetchall()
    labels = sorted({b["label"] for r in rows for b in loads(r["boxes"], [])} | {r["label"] for r in rows if r["label"]})
    return {"totalLengthMs": 0.0, "labels": labels, "totalLabels": len(labels), "dataCount": len(rows)}


@router.get("/projects", summary="The projects this API key can access (ProjectsApi.list_projects)")
def list_projects(request: Request) -> dict[str, Any]:
    return ok(projects=[project_json(ctx_of(request))])


@router.get("/projects/api-key-info", summary="Role and project of the calling key (ProjectsApi.get_current_api_key_info)")
@device_access("info")
def api_key_info(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    return ok(apiKeyId=1, projectId=project_id(ctx), role=key_role(request))


def key_role(request: Request) -> str:
    """Edge Impulse's role name for the calling key: `admin`, or `ingestion_deployment` for a device key."""
    principal = require_studio(request)
    role = getattr(principal, "role", None) or "admin"
    return "ingestion_deployment" if role in ("device", "ingestion", "ingestion_deployment") else "admin"


def require_management(request: Request) -> None:
    """403 for a key that may only ingest and download its model (Edge Impulse's `ingestion_deployment`)."""
    if key_role(request) != "admin":
        raise ApiError(403, "this API key may only upload data and download the deployed model; "
                            "use the project's management API key for this call", "x-api-key")


@router.get("/{pid}", summary="Project information (ProjectsApi.get_project_info)")
def project_info(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    with ctx.store.read() as conn:
        total = _summary(conn)
        training = _summary(conn, "WHERE category='training'")
        testing = _summary(conn, "WHERE category='testing'")
    impulse = _meta(ctx, "studio_impulse")
    now = now_iso()
    return ok(
        project=project_json(ctx), developmentKeys={}, devices=[],
        impulse={"created": impulse is not None, "configured": impulse is not None, "complete": _trained_job(ctx) is not None},
        dataSummary=total, dataSummaryPerCategory={"training": training, "testing": testing, "validation": _empty_summary(),
                                                   "postProcessing": _empty_summary()},
        computeTime={"periodStartDate": now, "periodEndDate": now, "timeUsedMs": 0, "timeLeftMs": 0},
        acquisitionSettings={"intervalMs": 0.0, "lengthMs": 0, "segmentShift": False, "defaultPageSize": 50, "viewType": "grid",
                             "gridColumnCount": 6, "gridColumnCountDetailed": 3, "showExactSampleLength": False,
                             "inlineEditBoundingBoxes": True},
        collaborators=[], deploySettings={"eonCompiler": False, "sensor": "camera", "arduinoLibraryName": "",
                                          "tinkergenLibraryName": "", "particleLibraryName": ""},
        experiments=[], latencyDevices=[], urls={}, showCreateFirstImpulse=impulse is None,
        showGettingStartedWizard={"showWizard": False, "step": 0},
        performance={"gpu": False, "jobLimitM": 60, "dspFileSizeMb": 0, "enterprisePerformance": False, "trainJobRamMb": 0},
        trainJobNotificationUids=[], dspJobNotificationUids=[], modelTestingJobNotificationUids=[],
        exportJobNotificationUids=[], hasNewTrainingData=False, studioUrl=str(request.base_url).rstrip("/"),
        inPretrainedModelFlow=False, showSensorDataInAcquisitionGraph=False, notifications=[],
        defaultImpulseId=(impulse or {}).get("id"),
    )


@router.post("/{pid}", summary="Update the project's metadata (ProjectsApi.update_project); metadata.labels is the "
             "label set the labeling tools offer")
async def update_project(pid: int, request: Request) -> dict[str, Any]:
    from helpers.localcloud.studio_api import _add_labels, normalise_label

    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ())
    meta = body.get("metadata")
    if meta is None:
        return ok()
    if not isinstance(meta, dict):
        raise ApiError(400, "metadata must be a JSON object", "metadata")
    labels = meta.get("labels", [])
    if not isinstance(labels, list):
        raise ApiError(400, "metadata.labels must be a list of label names", "metadata.labels")
    names = {normalise_label(x, f"metadata.labels[{i}]") for i, x in enumerate(labels)}
    with ctx.store.tx() as conn:
        _add_labels(conn, names)
    _set_meta(ctx, "studio_project_metadata", {k: v for k, v in meta.items() if k != "labels"})
    return ok()


def _empty_summary() -> dict[str, Any]:
    return {"totalLengthMs": 0.0, "labels": [], "totalLabels": 0, "dataCount": 0}


# ---------------------------------------------------------------- samples
def _metadata_strings(meta: dict[str, Any]) -> dict[str, str]:
    """Edge Impulse's metadata values are strings: other JSON values are sent JSON-encoded."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}


def ei_box(b: dict[str, Any]) -> dict[str, Any]:
    return {"label": b["label"], "x": int(round(b["x"])), "y": int(round(b["y"])),
            "width": max(1, int(round(b["width"]))), "height": max(1, int(round(b["height"])))}


def ei_sample(row: Any, pid: int) -> dict[str, Any]:
    """A `Sample` as the generated client's model has it (an image sample)."""
    boxes = loads(row["boxes"], [])
    meta = loads(row["metadata"], {})
    sensors = [{"index": 0, "name": "image", "units": "rgba"}]
    label = row["label"] or (boxes[0]["label"] if boxes else "")
    return {
        "id": row["id"], "filename": row["filename"], "signatureValidate": False, "created": row["created_at"],
        "lastModified": row["created_at"], "category": row["category"], "coldstorageFilename": f"{row['sha256']}.{row['ext']}",
        "label": label, "intervalMs": 0.0, "frequency": 0.0, "originalIntervalMs": 0.0, "originalFrequency": 0.0,
        "deviceName": row["device"], "deviceType": "CAMERA", "sensors": sensors, "valuesCount": 1, "totalLengthMs": 0.0,
        "added": row["created_at"], "boundingBoxes": [ei_box(b) for b in boxes], "boundingBoxesType": "object_detection",
        "chartType": "image", "isDisabled": False, "isProcessing": False, "processingError": False, "isCropped": False,
        "metadata": _metadata_strings(meta), "projectId": pid, "projectLabelingMethod": "object_detection",
        "sha256Hash": row["sha256"], "imageDimensions": {"width": row["width"], "height": row["height"]},
        "datastreams": [{"index": 0, "chartType": "image", "intervalMs": 0.0, "frequencyHz": 0.0, "sensors": sensors,
                         "valuesCount": 1, "totalLengthMs": 0.0}],
    }


def _filters(category: str, labels: str | None, filename: str | None, search: str | None, metadata: str | None,
             min_id: int | None, max_id: int | None, ids: str | None = None) -> tuple[str, list[Any]]:
    """SQL WHERE for Edge Impulse's sample filters (category, labels, filename, search, metadata, ids)."""
    where, args = [], []
    if category not in ("training", "testing", "all"):
        raise ApiError(400, f"category: {category!r} is not a category of this project; use training, testing or all", "category")
    if category != "all":
        where.append("category=?")
        args.append(category)
    if labels:
        try:
            wanted = json.loads(labels)
        except json.JSONDecodeError:
            raise ApiError(400, "labels must be a JSON list of label names, e.g. [\"apple\"]", "labels") from None
        if not isinstance(wanted, list) or not all(isinstance(x, str) for x in wanted):
            raise ApiError(400, "labels must be a JSON list of label names, e.g. [\"apple\"]", "labels")
        if wanted:
            marks = ",".join("?" * len(wanted))
            where.append(f"(label IN ({marks}) OR EXISTS (SELECT 1 FROM json_each(samples.boxes) "
                         f"WHERE json_extract(json_each.value, '$.label') IN ({marks})))")
            args += wanted + wanted
    for text in (filename, search):
        if text:
            where.append("instr(lower(filename), lower(?)) > 0")
            args.append(text)
    if metadata:
        try:
            items = json.loads(metadata)
        except json.JSONDecodeError:
            raise ApiError(400, "metadata must be a JSON list of {key, op, values} filters", "metadata") from None
        if not isinstance(items, list):
            raise ApiError(400, "metadata must be a JSON list of {key, op, values} filters", "metadata")
        for f in items:
            if not isinstance(f, dict) or "key" not in f:
                continue  # option objects (no_metadata, filters_combinator) do not filter here
            key, values = str(f["key"]), [str(v) for v in (f.get("values") or [])]
            path = f"$.{json.dumps(key)}"
            neg = f.get("op", "eq") == "neq"
            if values:
                marks = ",".join("?" * len(values))
                clause = f"COALESCE(json_extract(metadata, ?), '') IN ({marks})"
                where.append(f"NOT ({clause})" if neg else clause)
                args += [path] + values
            else:
                where.append(f"json_extract(metadata, ?) IS {'' if neg else 'NOT '}NULL")
                args.append(path)
    if min_id is not None:
        where.append("id >= ?")
        args.append(min_id)
    if max_id is not None:
        where.append("id < ?")
        args.append(max_id)
    if ids:
        try:
            id_list = [int(i) for i in json.loads(ids)]
        except (json.JSONDecodeError, TypeError, ValueError):
            raise ApiError(400, "ids must be a JSON list of sample ids", "ids") from None
        where.append(f"id IN ({','.join('?' * len(id_list)) or 'NULL'})")
        args += id_list
    return ("WHERE " + " AND ".join(where)) if where else "", args


@router.get("/{pid}/raw-data", summary="List samples (RawDataApi.list_samples)")
def list_samples(pid: int, request: Request, category: str, limit: int | None = None, offset: int | None = None,
                 labels: str | None = None, filename: str | None = None, search: str | None = None,
                 metadata: str | None = None, minId: int | None = None, maxId: int | None = None,
                 sortBy: str | None = None) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    where, args = _filters(category, labels, filename, search, metadata, minId, maxId)
    order = {"id-asc": "id ASC", "id-desc": "id DESC", None: "id DESC"}.get(sortBy)
    if order is None:
        raise ApiError(400, f"sortBy {sortBy!r} is not supported here; use id-asc or id-desc", "sortBy")
    if limit is not None and limit < 0 or offset is not None and offset < 0:
        raise ApiError(400, "limit and offset must be >= 0", "limit")
    with ctx.store.read() as conn:
        total = conn.execute(f"SELECT COUNT(*) AS n FROM samples {where}", args).fetchone()["n"]
        rows = conn.execute(f"SELECT * FROM samples {where} ORDER BY {order} LIMIT ? OFFSET ?",
                            args + [-1 if limit is None else limit, offset or 0]).fetchall()
    return ok(samples=[ei_sample(r, pid) for r in rows], totalCount=total)


@router.get("/{pid}/raw-data/count", summary="Count samples (RawDataApi.count_samples)")
def count_samples(pid: int, request: Request, category: str, labels: str | None = None, filename: str | None = None,
                  search: str | None = None, metadata: str | None = None, minId: int | None = None,
                  maxId: int | None = None) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    where, args = _filters(category, labels, filename, search, metadata, minId, maxId)
    with ctx.store.read() as conn:
        return ok(count=conn.execute(f"SELECT COUNT(*) AS n FROM samples {where}", args).fetchone()["n"])


@router.get("/{pid}/raw-data/label-object-detection-queue", summary="Samples without saved boxes "
            "(RawDataApi.get_object_detection_label_queue)")
def label_queue(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    with ctx.store.read() as conn:
        rows = conn.execute("SELECT id FROM samples WHERE labeled=0 ORDER BY id").fetchall()
    return ok(samples=[{"id": r["id"]} for r in rows])


@router.get("/{pid}/raw-data/label-object-detection-queue/count", summary="Length of the label queue")
def label_queue_count(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    with ctx.store.read() as conn:
        return ok(samplesCount=conn.execute("SELECT COUNT(*) AS n FROM samples WHERE labeled=0").fetchone()["n"])


def _row(ctx: Context, sample_id: int) -> Any:
    with ctx.store.read() as conn:
        return conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()


def _missing(sample_id: int) -> dict[str, Any]:
    return fail(f"Sample with ID {sample_id} does not exist in this project; list them with RawDataApi.list_samples")


@router.get("/{pid}/raw-data/{sample_id}", summary="One sample with its bounding boxes (RawDataApi.get_sample)")
def get_sample(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    row = _row(ctx, sample_id)
    if row is None:
        return _missing(sample_id)
    payload = {"device_name": row["device"], "device_type": "CAMERA", "sensors": [{"index": 0, "name": "image", "units": "rgba"}],
               "values": [], "intervalMs": 0.0, "frequencyHz": 0.0}
    return ok(sample=ei_sample(row, pid), payload=payload, totalPayloadLength=0,
              datastreamPayloads=[{"index": 0, "payload": payload, "totalPayloadLength": 0}])


def _image_response(ctx: Context, row: Any) -> Response:
    from helpers.localcloud.studio_api import sample_path

    path = sample_path(ctx, row["sha256"], row["ext"])
    if not path.is_file():
        raise ApiError(500, f"sample {row['id']}'s file is missing from {path.parent}; the workspace was modified by hand")
    media = {"jpg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "webp": "image/webp"}.get(row["ext"], "application/octet-stream")
    return Response(path.read_bytes(), media_type=media, headers={"x-sha256": row["sha256"]})


@router.get("/{pid}/raw-data/{sample_id}/image", summary="The sample's image (RawDataApi.get_sample_as_image)")
def get_sample_image(pid: int, sample_id: int, request: Request) -> Any:
    ctx = check_project(request, pid)
    require_management(request)
    row = _row(ctx, sample_id)
    return _missing(sample_id) if row is None else _image_response(ctx, row)


@router.get("/{pid}/raw-data/{sample_id}/raw", summary="The file as uploaded (RawDataApi.get_sample_as_raw)")
def get_sample_raw(pid: int, sample_id: int, request: Request) -> Any:
    return get_sample_image(pid, sample_id, request)


async def _body(request: Request, required: tuple[str, ...]) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object with {', '.join(required)}", "body")
    for k in required:
        if k not in body:
            raise ApiError(400, f"body.{k} is required", k)
    return body


def _update(ctx: Context, sample_id: int, work: Any) -> dict[str, Any]:
    with ctx.store.tx() as conn:
        row = conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()
        if row is None:
            return _missing(sample_id)
        work(conn, row)
    return ok()


@router.post("/{pid}/raw-data/{sample_id}/bounding-boxes", summary="Replace the sample's boxes; it leaves the label queue "
             "(RawDataApi.set_sample_bounding_boxes)")
async def set_bounding_boxes(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    from helpers.localcloud.studio_api import _add_labels, parse_boxes

    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ("boundingBoxes",))

    def work(conn: Any, row: Any) -> None:
        boxes = parse_boxes(body["boundingBoxes"], "boundingBoxes", row["width"], row["height"])
        conn.execute("UPDATE samples SET boxes=?, labeled=1 WHERE id=?", (dumps(boxes), sample_id))
        _add_labels(conn, {b["label"] for b in boxes})

    return await run_in_threadpool(_update, ctx, sample_id, work)


@router.post("/{pid}/raw-data/{sample_id}/to-labeling-queue", summary="Put the sample back into the label queue "
             "(RawDataApi.move_to_labeling_queue)")
def to_labeling_queue(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    return _update(ctx, sample_id, lambda conn, row: conn.execute("UPDATE samples SET labeled=0 WHERE id=?", (sample_id,)))


@router.post("/{pid}/raw-data/{sample_id}/edit-label", summary="Set the sample's label (RawDataApi.edit_label)")
async def edit_label(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    from helpers.localcloud.studio_api import normalise_label

    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ("label",))
    label = normalise_label(body["label"], "label")
    return await run_in_threadpool(_update, ctx, sample_id,
                                   lambda conn, row: conn.execute("UPDATE samples SET label=? WHERE id=?", (label, sample_id)))


@router.post("/{pid}/raw-data/{sample_id}/move", summary="Move to training or testing (RawDataApi.move_sample)")
async def move_sample(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ("newCategory",))
    if body["newCategory"] not in ("training", "testing"):
        raise ApiError(400, "newCategory must be training or testing", "newCategory")
    return await run_in_threadpool(_update, ctx, sample_id, lambda conn, row: conn.execute(
        "UPDATE samples SET category=? WHERE id=?", (body["newCategory"], sample_id)))


@router.post("/{pid}/raw-data/{sample_id}/metadata", summary="Replace the sample's metadata (RawDataApi.set_sample_metadata)")
async def set_metadata(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ())
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ApiError(400, "metadata must be an object of string values (JSON-encode other values)", "metadata")
    decoded = {k: _json_or_text(v) for k, v in meta.items()}

    def work(conn: Any, row: Any) -> None:
        device = decoded.get("device") if isinstance(decoded.get("device"), str) else row["device"]
        captured = decoded.get("captured_at", row["captured_at"])
        conn.execute("UPDATE samples SET metadata=?, device=?, captured_at=? WHERE id=?",
                     (dumps(decoded), device, None if captured is None else str(captured), sample_id))

    return await run_in_threadpool(_update, ctx, sample_id, work)


def _json_or_text(v: str) -> Any:
    """A metadata string back to the JSON value it encodes (lists, objects, numbers), else the string."""
    if v[:1] in "[{" or v in ("true", "false", "null"):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


@router.post("/{pid}/raw-data/{sample_id}/rename", summary="Rename the sample's file name (RawDataApi.rename_sample)")
async def rename_sample(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    from helpers.localcloud.studio_api import check_filename

    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ("name",))
    name = check_filename(body["name"], "name")
    return await run_in_threadpool(_update, ctx, sample_id,
                                   lambda conn, row: conn.execute("UPDATE samples SET filename=? WHERE id=?", (name, sample_id)))


@router.delete("/{pid}/raw-data/{sample_id}", summary="Delete a sample and its file (RawDataApi.delete_sample)")
def delete_sample(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    from helpers.localcloud.studio_api import sample_path

    ctx = check_project(request, pid)
    require_management(request)
    with ctx.store.tx() as conn:
        row = conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()
        if row is None:
            return _missing(sample_id)
        conn.execute("DELETE FROM samples WHERE id=?", (sample_id,))
    sample_path(ctx, row["sha256"], row["ext"]).unlink(missing_ok=True)
    return ok()


@router.post("/{pid}/rebalance", summary="Re-split training/testing by content hash (RawDataApi.rebalance_dataset)")
def rebalance(pid: int, request: Request) -> dict[str, Any]:
    from helpers.localcloud.studio_api import split_of

    ctx = check_project(request, pid)
    require_management(request)
    raw = request.headers.get("x-test-fraction", "0.2")
    try:
        frac = float(raw)
    except ValueError:
        frac = -1.0
    if not 0.0 <= frac < 1.0:
        raise ApiError(400, "x-test-fraction must be a number in [0, 1)", "x-test-fraction")
    counts = {"training": 0, "testing": 0}
    moved = 0
    with ctx.store.tx() as conn:
        for row in conn.execute("SELECT id, sha256, category FROM samples").fetchall():
            cat = split_of(row["sha256"], frac)
            counts[cat] += 1
            if cat != row["category"]:
                moved += 1
                conn.execute("UPDATE samples SET category=? WHERE id=?", (cat, row["id"]))
    return ok(ratio={"training": counts["training"], "testing": counts["testing"], "validation": 0}, moved=moved)


# ---------------------------------------------------------------- impulse
def _impulse(ctx: Context) -> dict[str, Any] | None:
    return _meta(ctx, "studio_impulse")


def _learn_block(impulse: dict[str, Any] | None, learn_id: int) -> dict[str, Any] | None:
    for b in (impulse or {}).get("learnBlocks", []):
        if int(b.get("id", -1)) == learn_id:
            return b
    return None


@router.get("/{pid}/impulse", summary="The impulse (ImpulseApi.get_impulse)")
def get_impulse(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    imp = _impulse(ctx)
    return ok(impulse=imp) if imp else ok()


@router.post("/{pid}/impulse", summary="Create or replace the impulse (ImpulseApi.create_impulse)")
async def create_impulse(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ("inputBlocks", "dspBlocks", "learnBlocks"))
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
    _set_meta(ctx, "studio_impulse", impulse)
    dsp_id = int(body["dspBlocks"][0]["id"])
    cfg = _meta(ctx, "studio_dsp_config", {})
    cfg.setdefault(str(dsp_id), {"channels": "RGB"})
    _set_meta(ctx, "studio_dsp_config", cfg)
    return ok(id=impulse["id"])


def _dsp_info(ctx: Context, dsp_id: int) -> dict[str, Any] | None:
    imp = _impulse(ctx)
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
    info = _dsp_info(ctx, dsp_id)
    if info is None:
        return fail(f"DSP block {dsp_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    channels = _meta(ctx, "studio_dsp_config", {}).get(str(dsp_id), {}).get("channels", "RGB")
    item = {"name": "Color depth", "value": channels, "defaultValue": "RGB", "type": "select", "param": "channels",
            "selectOptions": [{"value": "RGB", "selected": channels == "RGB"}, {"value": "Grayscale", "selected": channels == "Grayscale"}],
            "readonly": False, "shouldShow": True, "required": True, "showClickToSet": False}
    return ok(dsp=info, config=[{"group": "Parameters", "items": [item]}])


@router.post("/{pid}/dsp/{dsp_id}", summary="Set the image block's colour depth (DSPApi.set_dsp_config)")
async def set_dsp_config(pid: int, dsp_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ("config",))
    if _dsp_info(ctx, dsp_id) is None:
        return fail(f"DSP block {dsp_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    channels = (body["config"] or {}).get("channels", "RGB")
    if channels not in EI_COLOR:
        return fail(f"channels must be RGB or Grayscale (got {channels!r})")
    cfg = _meta(ctx, "studio_dsp_config", {})
    cfg[str(dsp_id)] = {"channels": channels}
    _set_meta(ctx, "studio_dsp_config", cfg)
    return ok()


def _keras(ctx: Context, learn_id: int) -> dict[str, Any]:
    return {**DEFAULT_KERAS, **_meta(ctx, "studio_keras", {}).get(str(learn_id), {})}


@router.get("/{pid}/training/keras/{learn_id}", summary="The learning block's settings (LearnApi.get_keras)")
def get_keras(pid: int, learn_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    imp = _impulse(ctx)
    if _learn_block(imp, learn_id) is None:
        return fail(f"learn block {learn_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    k = _keras(ctx, learn_id)
    with ctx.store.read() as conn:
        labels = _summary(conn, "WHERE labeled=1")["labels"]
        count = conn.execute("SELECT COUNT(*) AS n FROM samples WHERE labeled=1").fetchone()["n"]
    size = imp["inputBlocks"][0]["imageWidth"]
    ei_model = ARCH_EI_MODEL.get(k["arch"])
    return ok(dependencies={"classes": labels, "blockNames": [b["name"] for b in imp["dspBlocks"]], "featureCount": size * size * 3,
                            "sampleCount": count, "outputClasses": labels},
              trained=_trained_job(ctx) is not None, name="Object detection", script="", minimumConfidenceRating=0.5,
              selectedModelType="float32", mode="visual", visualLayers=[{"type": ei_model}] if ei_model else [],
              trainingCycles=k["trainingCycles"], learningRate=k["learningRate"], defaultBatchSize=int(k["batchSize"]),
              shape=f"({size}, {size}, 3)", augmentationPolicyImage="all", transferLearningModels=[], profileInt8=False,
              skipEmbeddingsAndMemory=True, showAdvancedTrainingSettings=False, showAugmentationTrainingSettings=False,
              thresholds=[], trainTestSplit=k["valFraction"], customParameters=_custom_parameters(k))


def _custom_parameters(k: dict[str, Any]) -> dict[str, str]:
    """The learn block's custom parameters as Edge Impulse serves them (strings; no key for no time budget)."""
    out = {"arch": k["arch"], "seed": str(k["seed"])}
    if k["timeBudgetS"] is not None:
        out["time_budget_s"] = repr(float(k["timeBudgetS"]))
    return out


def _apply_keras(ctx: Context, learn_id: int, body: dict[str, Any]) -> dict[str, Any]:
    k = _keras(ctx, learn_id)
    if "trainingCycles" in body:
        if not isinstance(body["trainingCycles"], int) or not 1 <= body["trainingCycles"] <= 1000:
            raise ApiError(400, "trainingCycles must be an integer from 1 to 1000", "trainingCycles")
        k["trainingCycles"] = body["trainingCycles"]
    if "learningRate" in body:
        lr = body["learningRate"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 1:
            raise ApiError(400, "learningRate must be a number in (0, 1)", "learningRate")
        k["learningRate"] = float(lr)
    if "batchSize" in body:
        bs = body["batchSize"]
        if isinstance(bs, bool) or not isinstance(bs, (int, float)) or not 1 <= bs <= 512:
            raise ApiError(400, "batchSize must be a number from 1 to 512", "batchSize")
        k["batchSize"] = int(bs)
    layers = body.get("visualLayers") or []
    if layers:
        t = layers[0].get("type")
        if t not in EI_MODEL_ARCH:
            raise ApiError(400, f"visualLayers[0].type {t!r} is not trained here; use one of {sorted(EI_MODEL_ARCH)}", "visualLayers")
        k["arch"] = EI_MODEL_ARCH[t]
    if "trainTestSplit" in body:
        split = body["trainTestSplit"]
        if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 < split < 1:
            raise ApiError(400, "trainTestSplit (the validation set size) must be a number in (0, 1)", "trainTestSplit")
        k["valFraction"] = float(split)
    custom = body.get("customParameters") or {}
    unknown = sorted(set(custom) - set(CUSTOM_PARAMETERS))
    if unknown:
        raise ApiError(400, f"customParameters {unknown} are not settings of this learn block; use {list(CUSTOM_PARAMETERS)}",
                       "customParameters")
    arch = custom.get("arch")
    if arch is not None:
        from helpers.train.model import ARCHS

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
    all_k = _meta(ctx, "studio_keras", {})
    all_k[str(learn_id)] = k
    _set_meta(ctx, "studio_keras", all_k)
    return k


@router.post("/{pid}/training/keras/{learn_id}", summary="Set the learning block's settings (LearnApi.set_keras)")
async def set_keras(pid: int, learn_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    body = await _body(request, ())
    if _learn_block(_impulse(ctx), learn_id) is None:
        return fail(f"learn block {learn_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    _apply_keras(ctx, learn_id, body)
    return ok()


# ---------------------------------------------------------------- jobs
def job_dir(ctx: Context, job_id: int) -> Path:
    return ctx.files / "jobs" / str(job_id)


def job_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "category": "Training model", "categoryKey": "train-keras", "key": f"train-keras-{row['id']}",
            "created": row["created_at"], "started": row["started_at"], "finished": row["finished_at"],
            "finishedSuccessful": None if row["finished_at"] is None else bool(row["successful"]),
            "jobNotificationUids": [], "additionalInfo": row["error"], "metadata": loads(row["params"], {})}


def _trained_job(ctx: Context) -> Any:
    with ctx.store.read() as conn:
        return conn.execute("SELECT * FROM jobs WHERE kind='train' AND successful=1 ORDER BY id DESC LIMIT 1").fetchone()


@router.post("/{pid}/jobs/train/keras/{learn_id}", summary="Train the learning block on the labeled samples "
             "(JobsApi.train_keras_job): helpers.train in a background process")
async def train_keras_job(pid: int, learn_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    body = await json_body(request, required=False) or {}
    imp = _impulse(ctx)
    if _learn_block(imp, learn_id) is None:
        return fail(f"learn block {learn_id} is not in the impulse; create the impulse first (ImpulseApi.create_impulse)")
    k = _apply_keras(ctx, learn_id, body) if body else _keras(ctx, learn_id)
    with ctx.store.read() as conn:
        unfinished = [r["id"] for r in conn.execute("SELECT id FROM jobs WHERE finished_at IS NULL")]
    running = next((r for r in (_job_row(ctx, i) for i in unfinished) if r["finished_at"] is None), None)
    with ctx.store.read() as conn:
        n_labeled = conn.execute("SELECT COUNT(*) AS n FROM samples WHERE labeled=1").fetchone()["n"]
    if running is not None:
        return fail(f"job {running['id']} is still running; wait for it or cancel it (JobsApi.cancel_job)")
    if n_labeled == 0:
        return fail("there are no labeled samples to train on; label some in the labeling queue first")
    inp = imp["inputBlocks"][0]
    dsp_id = str(imp["dspBlocks"][0]["id"])
    color = EI_COLOR[_meta(ctx, "studio_dsp_config", {}).get(dsp_id, {}).get("channels", "RGB")]
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
        cmd = [sys.executable, "-m", "helpers.localcloud.train_job", "--workspace", str(ctx.workspace),
               "--out", str(d / "model"), "--params", json.dumps(params)]
        env = {**os.environ, "EDGELOOP_WORKSPACE": str(ctx.workspace), "EDGELOOP_STUDIO": "local", "PYTHONUNBUFFERED": "1"}
        # as the pipeline's kernels: waiting OpenMP threads sleep instead of spinning on a busy machine
        # (the torch thread count, EDGELOOP_TORCH_THREADS, comes from the same settings as the kernel's)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        log = open(d / "stdout.log", "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True)
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


def _job_row(ctx: Context, job_id: int) -> Any:
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
    row = _job_row(ctx, job_id)
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
    row = _job_row(ctx, job_id)
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
    row = _job_row(ctx, job_id)
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


# ---------------------------------------------------------------- trained model
def _model_dir_for(ctx: Context, learn_id: int) -> Path | None:
    row = _trained_job(ctx)
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
    d = _model_dir_for(ctx, learn_id)
    if d is None:
        raise ApiError(404, f"learn block {learn_id} has no trained model yet; run JobsApi.train_keras_job first", "learnId")
    name, media = MODEL_DOWNLOADS[download_id]
    return Response((d / name).read_bytes(), media_type=media,
                    headers={"content-disposition": f'attachment; filename="{name}"'})


@router.get("/{pid}/deployment/download", summary="Download a deployment (DeploymentApi.download_build): "
            "type runner-linux-x86_64 gives the trained model as an .eim executable")
@device_access("model")
def download_build(pid: int, request: Request, type: str) -> Any:
    from helpers.inference.eim import build_eim

    ctx = check_project(request, pid)
    if type not in EIM_TYPES:
        raise ApiError(400, f"deployment type {type!r} is not built here; use one of {', '.join(EIM_TYPES)}", "type")
    imp = _impulse(ctx)
    learn_id = int(imp["learnBlocks"][0]["id"]) if imp else -1
    d = _model_dir_for(ctx, learn_id)
    if d is None:
        raise ApiError(404, "there is no trained model to deploy yet; run JobsApi.train_keras_job first", "type")
    out = ctx.files / "deployments"
    out.mkdir(parents=True, exist_ok=True)
    path = build_eim(d, out / f"{project_id(ctx)}-{type}.eim")
    return Response(path.read_bytes(), media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{path.name}"'})
