"""Samples and labels (extension endpoints under `/api/samples`, `/api/labels`, `/api/rebalance`)."""
from __future__ import annotations

from typing import Any

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.db import dumps, loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store
from helpers.localcloud.studio.checks import normalise_label, parse_boxes
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import Box, BoxesBody, LabelBody, RebalanceBody, SamplePatch
from helpers.protocol.twinpatch import merge_patch

router = studio_router(tags=["studio"])


@router.get("/api/samples", summary="List samples, filtered")
def list_samples(request: Request, category: str | None = None, labeled: bool | None = None,
                 label: str | None = None, device: str | None = None,
                 limit: int = Query(100000, ge=1), offset: int = Query(0, ge=0)) -> dict[str, Any]:
    where, args = [], []
    if category is not None:
        if category not in store.CATEGORIES:
            raise ApiError(400, f"category must be one of {list(store.CATEGORIES)}", "category")
        where.append("category=?"); args.append(category)
    if labeled is not None:
        where.append("labeled=?"); args.append(int(labeled))
    if label is not None:
        where.append("(label=? OR EXISTS (SELECT 1 FROM json_each(samples.boxes) WHERE json_extract(value, '$.label')=?))")
        args += [label.lower(), label.lower()]
    if device is not None:
        where.append("device=?"); args.append(device)
    sql = "SELECT * FROM samples" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ? OFFSET ?"
    with ctx_of(request).store.read() as conn:
        rows = conn.execute(sql, (*args, limit, offset)).fetchall()
    return {"success": True, "samples": [store.sample_json(r) for r in rows]}


@router.get("/api/samples/{sample_id}", summary="One sample")
def get_sample(sample_id: int, request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "sample": store.sample_json(store.get_sample(conn, sample_id))}


@router.get("/api/samples/{sample_id}/image", summary="The sample's image bytes",
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
def get_image(sample_id: int, request: Request) -> Response:
    ctx = ctx_of(request)
    with ctx.store.read() as conn:
        row = store.get_sample(conn, sample_id)
    return Response(store.sample_bytes(ctx.files, row), media_type=store.image_media_type(row["ext"]),
                    headers={"x-sha256": row["sha256"]})


@router.put("/api/samples/{sample_id}/boxes", summary="Replace a sample's boxes (marks it labeled): "
            "{\"boxes\": [...]} or the list itself")
async def put_boxes(sample_id: int, request: Request, body: BoxesBody | list[Box]) -> dict[str, Any]:
    raw = [b.model_dump() for b in (body.boxes if isinstance(body, BoxesBody) else body)]
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            row = store.get_sample(conn, sample_id)
            boxes = parse_boxes(raw, "boxes", row["width"], row["height"])
            conn.execute("UPDATE samples SET boxes=?, labeled=1 WHERE id=?", (dumps(boxes), sample_id))
            store.add_labels(conn, {b["label"] for b in boxes})
            return {"success": True, "sample": store.sample_json(store.get_sample(conn, sample_id))}

    return await run_in_threadpool(work)


@router.patch("/api/samples/{sample_id}", summary="Update metadata (merge), category or label")
async def patch_sample(sample_id: int, request: Request, body: SamplePatch) -> dict[str, Any]:
    given = body.model_fields_set
    label = normalise_label(body.label, "label") if body.label is not None else None
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            row = store.get_sample(conn, sample_id)
            meta = merge_patch(loads(row["metadata"], {}), body.metadata or {})
            device = meta.get("device") if isinstance(meta.get("device"), str) else row["device"]
            captured = meta.get("captured_at", row["captured_at"])
            labeled = bool(row["labeled"]) if body.labeled is None else body.labeled
            conn.execute(
                "UPDATE samples SET metadata=?, device=?, captured_at=?, category=?, label=?, labeled=? WHERE id=?",
                (dumps(meta), device, None if captured is None else str(captured), body.category or row["category"],
                 label if "label" in given else row["label"], int(labeled), sample_id),
            )
            return {"success": True, "sample": store.sample_json(store.get_sample(conn, sample_id))}

    return await run_in_threadpool(work)


@router.delete("/api/samples/{sample_id}", summary="Delete a sample and its file")
def delete_sample(sample_id: int, request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    with ctx.store.tx() as conn:
        row = store.get_sample(conn, sample_id)
        conn.execute("DELETE FROM samples WHERE id=?", (sample_id,))
    store.sample_path(ctx.files, row["sha256"], row["ext"]).unlink(missing_ok=True)
    return {"success": True, "deleted": sample_id}


# ---------------------------------------------------------------- labels, rebalance
@router.get("/api/labels", summary="The label set")
def get_labels(request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "labels": [r["name"] for r in conn.execute("SELECT name FROM labels ORDER BY name")]}


@router.post("/api/labels", summary="Add a label")
def add_label(request: Request, body: LabelBody) -> dict[str, Any]:
    name = normalise_label(body.name, "name")
    with ctx_of(request).store.tx() as conn:
        store.add_labels(conn, {name})
    return get_labels(request)


@router.post("/api/rebalance", summary="Re-split all samples train/test deterministically by content hash")
async def rebalance(request: Request, body: RebalanceBody | None = None) -> dict[str, Any]:
    frac = 0.2 if body is None else body.testFraction
    if not 0.0 <= frac < 1.0:
        raise ApiError(400, "testFraction must be a number in [0, 1)", "testFraction")
    ctx = ctx_of(request)
    return {"success": True, **await run_in_threadpool(store.rebalance, ctx.store, float(frac))}
