"""The model registry and dataset snapshots (extension endpoints under `/api/models` and `/api/snapshots`).

A model version is a file (ONNX, `.eim` or `.tflite`, by the card's `format`) and a JSON card,
numbered 1, 2, ... with a stage (candidate, production, retired); a snapshot freezes the labeled
samples under the hash of their content.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from helpers.localcloud.common import limits
from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import Context, ctx_of, fsync_dir, write_file_durable
from helpers.localcloud.common.db import dumps, loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store
from helpers.localcloud.studio.checks import MODEL_FILES, check_card_labels, check_model_bytes, model_file_of
from helpers.localcloud.studio.keys import device_access
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import StageBody

router = studio_router(tags=["studio"])


# ---------------------------------------------------------------- snapshots
@router.post("/api/snapshots", summary="Freeze the labeled samples into an immutable, content-hashed snapshot")
def create_snapshot(request: Request) -> dict[str, Any]:
    return {"success": True, **store.create_snapshot(ctx_of(request).store)}


@router.get("/api/snapshots", summary="List snapshots")
def list_snapshots(request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        rows = conn.execute("SELECT * FROM snapshots ORDER BY created_at").fetchall()
    out = []
    for r in rows:
        body = loads(r["body"])
        out.append({"id": r["id"], "created_at": r["created_at"], "labels": body["labels"], "count": len(body["items"])})
    return {"success": True, "snapshots": out}


@router.get("/api/snapshots/{snapshot_id}", summary="One snapshot with its items")
def get_snapshot(snapshot_id: str, request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        row = conn.execute("SELECT * FROM snapshots WHERE id=?", (snapshot_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"snapshot {snapshot_id[:16]!r} not found; create one with Studio.snapshot()", "snapshotId")
    return {"success": True, "id": row["id"], "created_at": row["created_at"], **loads(row["body"])}


# ---------------------------------------------------------------- model registry
_MODEL_DOC = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["model", "card"],
    "properties": {"model": {"type": "string", "format": "binary"}, "card": {"type": "string", "description": "JSON model card"}},
}}}}}


@router.post("/api/models", summary="Register a model version (multipart: model=ONNX, .eim or .tflite file, card=JSON "
                                   "with `format`)", openapi_extra=_MODEL_DOC)
async def register_model(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send multipart/form-data with fields 'model' (ONNX file) and 'card' (JSON)", "model")
    try:
        form = await request.form(max_files=4, max_fields=8, max_part_size=ctx.max_body_bytes)
    except (StarletteHTTPException, MultiPartException) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise ApiError(400, f"malformed multipart body: {detail}", "model") from None
    try:
        model = form.get("model")
        card_raw = form.get("card")
        if not isinstance(model, UploadFile):
            raise ApiError(400, "multipart field 'model' (the ONNX file) is missing", "model")
        data = await model.read()
        if isinstance(card_raw, UploadFile):
            card_raw = (await card_raw.read()).decode("utf-8", errors="replace")
    finally:
        await form.close()
    if card_raw is None:
        raise ApiError(400, "multipart field 'card' (the JSON model card) is missing", "card")
    try:
        card = limits.loads(card_raw, "card")
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"card is not valid JSON: {exc}", "card") from None
    if not isinstance(card, dict):
        raise ApiError(400, "card must be a JSON object (labels, input size, metrics...)", "card")
    check_card_labels(card)
    fmt = card.get("format") or "onnx"
    if fmt not in MODEL_FILES:
        raise ApiError(400, f"card.format {str(fmt)[:20]!r} is unknown; valid: {', '.join(MODEL_FILES)} (default onnx)",
                       "card.format")
    return await run_in_threadpool(_register_sync, ctx, data, card)


def _register_sync(ctx: Context, data: bytes, card: dict[str, Any]) -> dict[str, Any]:
    check_model_bytes(data, card.get("format") or "onnx")
    sha = hashlib.sha256(data).hexdigest()
    tmp_onnx, tmp_card = ctx.tmp_path(), ctx.tmp_path()
    placed: Path | None = None
    try:
        write_file_durable(tmp_onnx, data)  # in the try: a write the full disk stops half-way is removed too
        with ctx.store.tx() as conn:
            version = (conn.execute("SELECT MAX(version) AS v FROM models").fetchone()["v"] or 0) + 1
            full_card = {**card, "version": version, "sha256": sha}
            write_file_durable(tmp_card, json.dumps(full_card, indent=2).encode())
            d = store.model_dir(ctx.files, version)
            if d.exists():  # left by a crash before commit
                for f in d.iterdir():
                    f.unlink()
            d.mkdir(parents=True, exist_ok=True)
            placed = d
            os.replace(tmp_onnx, d / model_file_of(card))
            os.replace(tmp_card, d / "model.json")
            fsync_dir(d)
            conn.execute("INSERT INTO models(version, stage, sha256, size, card, created_at) VALUES(?,?,?,?,?,?)",
                         (version, "candidate", sha, len(data), dumps(full_card), now_iso()))
            row = store.get_model(conn, version)
    except BaseException:
        if placed is not None:
            for f in placed.glob("*"):
                f.unlink(missing_ok=True)
            placed.rmdir()
        raise
    finally:
        tmp_onnx.unlink(missing_ok=True)
        tmp_card.unlink(missing_ok=True)
    return {"success": True, "model": store.model_json(row)}


@router.get("/api/models", summary="List model versions")
def list_models(request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "models": [store.model_json(r) for r in conn.execute("SELECT * FROM models ORDER BY version")]}


@router.get("/api/models/{version}", summary="One model version")
@device_access("model")
def get_model(version: int, request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "model": store.model_json(store.get_model(conn, version))}


@router.get("/api/models/{version}/onnx", summary="Download the ONNX file (x-sha256 header)",
            responses={200: {"content": {"application/octet-stream": {}}}})
@device_access("model")
def download_model(version: int, request: Request) -> Response:
    ctx = ctx_of(request)
    with ctx.store.read() as conn:
        row = store.get_model(conn, version)
    fmt = loads(row["card"], {}).get("format") or "onnx"
    if fmt != "onnx":
        raise ApiError(409, f"model {version} is an .{fmt} model, not ONNX: download it from /api/models/{version}/file",
                       "version")
    return _model_file_response(ctx, row, version)


def _model_file_response(ctx: Context, row: Any, version: int) -> Response:
    card = loads(row["card"], {})
    name = model_file_of(card)
    path = store.model_dir(ctx.files, version) / name
    if not path.is_file():
        raise ApiError(500, f"model {version}'s file is missing from {path.parent}; the workspace was modified by hand", "version")
    return Response(path.read_bytes(), media_type="application/octet-stream",
                    headers={"x-sha256": row["sha256"], "x-model-format": card.get("format") or "onnx",
                             "content-disposition": f'attachment; filename="{name}"'})


@router.get("/api/models/{version}/file", summary="Download the model file in its format (.onnx, .eim or .tflite; "
                                                  "x-sha256 and x-model-format headers)",
            responses={200: {"content": {"application/octet-stream": {}}}})
@device_access("model")
def download_model_file(version: int, request: Request) -> Response:
    ctx = ctx_of(request)
    with ctx.store.read() as conn:
        row = store.get_model(conn, version)
    return _model_file_response(ctx, row, version)


@router.put("/api/models/{version}/stage", summary="Set the stage: candidate, production or retired")
def set_stage(version: int, request: Request, body: StageBody) -> dict[str, Any]:
    stage = body.stage
    with ctx_of(request).store.tx() as conn:
        store.get_model(conn, version)
        conn.execute("UPDATE models SET stage=? WHERE version=?", (stage, version))
        return {"success": True, "model": store.model_json(store.get_model(conn, version))}
