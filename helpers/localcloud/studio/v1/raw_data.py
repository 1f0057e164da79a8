"""Raw data (RawDataApi): list, count, read, label, move, rename and delete samples; the label queue; rebalance."""
from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool

from helpers.localcloud.common import limits
from helpers.localcloud.common.context import Context
from helpers.localcloud.common.db import dumps, loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store
from helpers.localcloud.studio.auth import require_management
from helpers.localcloud.studio.checks import check_filename, normalise_label, parse_boxes
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import (
    EditSampleLabelRequest,
    MoveRawDataRequest,
    RenameSampleRequest,
    SampleBoundingBoxesRequest,
    SetSampleMetadataRequest,
)
from helpers.localcloud.studio.v1.base import check_project, fail, ok

router = studio_router(tags=["studio (Edge Impulse Studio API)"])


def _metadata_strings(meta: dict[str, Any]) -> dict[str, str]:
    """Edge Impulse's metadata values are strings: other JSON values are sent JSON-encoded."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (meta or {}).items()}


def ei_box(b: dict[str, Any]) -> dict[str, Any]:
    return {"label": b["label"], "x": int(round(b["x"])), "y": int(round(b["y"])),
            "width": max(1, int(round(b["width"]))), "height": max(1, int(round(b["height"])))}


def _coldstorage_name(row: Any) -> str:
    """Edge Impulse's stored-file name, `{category}/{file name}.{id}.{ingestion host}.json`: the SDK's
    download_samples_by_ids takes the sample's file name from it (everything before the last three parts)."""
    return f"{row['category']}/{row['filename']}.{row['sha256'][:8]}.ingestion-local.json"


def ei_sample(row: Any, pid: int) -> dict[str, Any]:
    """A `Sample` as the generated client's model has it (an image sample)."""
    boxes = loads(row["boxes"], [])
    meta = loads(row["metadata"], {})
    sensors = [{"index": 0, "name": "image", "units": "rgba"}]
    label = row["label"] or (boxes[0]["label"] if boxes else "")
    return {
        "id": row["id"], "filename": row["filename"], "signatureValidate": False, "created": row["created_at"],
        "lastModified": row["created_at"], "category": row["category"], "coldstorageFilename": _coldstorage_name(row),
        "label": label, "intervalMs": 0.0, "frequency": 0.0, "originalIntervalMs": 0.0, "originalFrequency": 0.0,
        "deviceName": row["device"], "deviceType": "CAMERA", "sensors": sensors, "valuesCount": 1, "totalLengthMs": 0.0,
        "added": row["created_at"], "boundingBoxes": [ei_box(b) for b in boxes], "boundingBoxesType": "object_detection",
        "chartType": "image", "isDisabled": False, "isProcessing": False, "processingError": False, "isCropped": False,
        "metadata": _metadata_strings(meta), "projectId": pid, "projectLabelingMethod": "object_detection",
        "sha256Hash": row["sha256"], "imageDimensions": {"width": row["width"], "height": row["height"]},
        "datastreams": [{"index": 0, "chartType": "image", "intervalMs": 0.0, "frequencyHz": 0.0, "sensors": sensors,
                         "valuesCount": 1, "totalLengthMs": 0.0}],
    }


LABELS_FORMAT = "labels must be a JSON list of label names, e.g. [\"apple\"] (null or [] for any label)"
# Edge Impulse's sample categories (`RawDataCategory`): samples here are only ever in training or testing,
# so validation and post-processing are valid and empty.
CATEGORIES = ("training", "testing", "validation", "post-processing")


def check_category(category: str, allow_all: bool = False) -> None:
    """Refuse a category Edge Impulse does not have, naming the valid ones."""
    valid = CATEGORIES + (("all",) if allow_all else ())
    if category not in valid:
        raise ApiError(400, f"category: {category!r} is not a category of this project; use {', '.join(valid)}", "category")


def _filters(category: str, labels: str | None, filename: str | None, search: str | None, metadata: str | None,
             min_id: int | None, max_id: int | None, ids: str | None = None) -> tuple[str, list[Any]]:
    """SQL WHERE for Edge Impulse's sample filters (category, labels, filename, search, metadata, ids)."""
    where, args = [], []
    check_category(category, allow_all=True)
    if category != "all":
        where.append("category=?")
        args.append(category)
    if labels:
        try:
            wanted = limits.loads(labels, "labels")
        except json.JSONDecodeError:
            raise ApiError(400, LABELS_FORMAT, "labels") from None
        if wanted is None:  # the SDK's get_sample_ids sends `null` for "any label"
            wanted = []
        if not isinstance(wanted, list) or not all(isinstance(x, str) for x in wanted):
            raise ApiError(400, LABELS_FORMAT, "labels")
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
            items = limits.loads(metadata, "metadata")
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
            id_list = [int(i) for i in limits.loads(ids, "ids")]
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


def _delete_where(ctx: Context, where: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """Delete the samples matching `where` and their image files."""
    with ctx.store.tx() as conn:
        rows = conn.execute(f"SELECT id, sha256, ext FROM samples {where}", args).fetchall()
        conn.execute(f"DELETE FROM samples {where}", args)
    for row in rows:
        store.sample_path(ctx.files, row["sha256"], row["ext"]).unlink(missing_ok=True)
    return ok()


# declared before the `/raw-data/{sample_id}/...` routes, which would otherwise match these paths first
@router.post("/{pid}/raw-data/delete-all", summary="Delete every sample of the project (RawDataApi.delete_all_samples)")
def delete_all_samples(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    return _delete_where(ctx, "", ())


@router.post("/{pid}/raw-data/delete-all/{category}", summary="Delete every sample of one category "
             "(RawDataApi.delete_all_samples_by_category)")
def delete_all_samples_by_category(pid: int, category: str, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    check_category(category)
    return _delete_where(ctx, "WHERE category=?", (category,))


def _row(ctx: Context, sample_id: int) -> Any:
    with ctx.store.read() as conn:
        return conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()


def _missing(sample_id: int) -> dict[str, Any]:
    # Edge Impulse's own message: the SDK (delete_sample_by_id, get_filename_by_id) answers None on it
    return fail(f"No sample found with ID {sample_id} in this project; list them with RawDataApi.list_samples")


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
    return Response(store.sample_bytes(ctx.files, row), media_type=store.image_media_type(row["ext"]),
                    headers={"x-sha256": row["sha256"]})


@router.get("/{pid}/raw-data/{sample_id}/image", summary="The sample's image (RawDataApi.get_sample_as_image)")
def get_sample_image(pid: int, sample_id: int, request: Request) -> Any:
    ctx = check_project(request, pid)
    require_management(request)
    row = _row(ctx, sample_id)
    return _missing(sample_id) if row is None else _image_response(ctx, row)


@router.get("/{pid}/raw-data/{sample_id}/raw", summary="The file as uploaded (RawDataApi.get_sample_as_raw)")
def get_sample_raw(pid: int, sample_id: int, request: Request) -> Any:
    return get_sample_image(pid, sample_id, request)


def _update(ctx: Context, sample_id: int, work: Any) -> dict[str, Any]:
    with ctx.store.tx() as conn:
        row = conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()
        if row is None:
            return _missing(sample_id)
        work(conn, row)
    return ok()


@router.post("/{pid}/raw-data/{sample_id}/bounding-boxes", summary="Replace the sample's boxes; it leaves the label queue "
             "(RawDataApi.set_sample_bounding_boxes)")
async def set_bounding_boxes(pid: int, sample_id: int, request: Request, body: SampleBoundingBoxesRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    raw = [b.model_dump() for b in body.boundingBoxes]

    def work(conn: Any, row: Any) -> None:
        boxes = parse_boxes(raw, "boundingBoxes", row["width"], row["height"])
        conn.execute("UPDATE samples SET boxes=?, labeled=1 WHERE id=?", (dumps(boxes), sample_id))
        store.add_labels(conn, {b["label"] for b in boxes})

    return await run_in_threadpool(_update, ctx, sample_id, work)


@router.post("/{pid}/raw-data/{sample_id}/to-labeling-queue", summary="Put the sample back into the label queue "
             "(RawDataApi.move_to_labeling_queue)")
def to_labeling_queue(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    return _update(ctx, sample_id, lambda conn, row: conn.execute("UPDATE samples SET labeled=0 WHERE id=?", (sample_id,)))


@router.post("/{pid}/raw-data/{sample_id}/edit-label", summary="Set the sample's label (RawDataApi.edit_label)")
async def edit_label(pid: int, sample_id: int, request: Request, body: EditSampleLabelRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    label = normalise_label(body.label, "label")
    return await run_in_threadpool(_update, ctx, sample_id,
                                   lambda conn, row: conn.execute("UPDATE samples SET label=? WHERE id=?", (label, sample_id)))


@router.post("/{pid}/raw-data/{sample_id}/move", summary="Move to training or testing (RawDataApi.move_sample)")
async def move_sample(pid: int, sample_id: int, request: Request, body: MoveRawDataRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    return await run_in_threadpool(_update, ctx, sample_id, lambda conn, row: conn.execute(
        "UPDATE samples SET category=? WHERE id=?", (body.newCategory, sample_id)))


@router.post("/{pid}/raw-data/{sample_id}/metadata", summary="Replace the sample's metadata (RawDataApi.set_sample_metadata)")
async def set_metadata(pid: int, sample_id: int, request: Request, body: SetSampleMetadataRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    meta = body.metadata or {}
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
async def rename_sample(pid: int, sample_id: int, request: Request, body: RenameSampleRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    name = check_filename(body.name, "name")
    return await run_in_threadpool(_update, ctx, sample_id,
                                   lambda conn, row: conn.execute("UPDATE samples SET filename=? WHERE id=?", (name, sample_id)))


@router.delete("/{pid}/raw-data/{sample_id}", summary="Delete a sample and its file (RawDataApi.delete_sample)")
def delete_sample(pid: int, sample_id: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    with ctx.store.tx() as conn:
        row = conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()
        if row is None:
            return _missing(sample_id)
        conn.execute("DELETE FROM samples WHERE id=?", (sample_id,))
    store.sample_path(ctx.files, row["sha256"], row["ext"]).unlink(missing_ok=True)
    return ok()


@router.post("/{pid}/rebalance", summary="Re-split training/testing by content hash (RawDataApi.rebalance_dataset)")
def rebalance(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    raw = request.headers.get("x-test-fraction", "0.2")
    try:
        frac = float(raw)
    except ValueError:
        frac = -1.0
    if not 0.0 <= frac < 1.0:
        raise ApiError(400, "x-test-fraction must be a number in [0, 1)", "x-test-fraction")
    counts = store.rebalance(ctx.store, frac)
    return ok(ratio={"training": counts["training"], "testing": counts["testing"], "validation": 0}, moved=counts["moved"])
