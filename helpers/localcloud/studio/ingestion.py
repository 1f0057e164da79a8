"""The ingestion API: `POST /api/{training|testing|split}/files`, as Edge Impulse's ingestion service.

It takes what Edge Impulse's ingestion service takes: multipart field `data` (one or more images, and optionally a `bounding_boxes.labels`
file), headers `x-api-key`, `x-label`, `x-no-label`, `x-file-name`, `x-disallow-duplicates`,
`x-metadata` (JSON object), `x-bounding-boxes` (JSON list of boxes for the uploaded file).

Samples are content-addressed (sha256 of the bytes): uploading the same bytes again reports
the existing sample id (`duplicateOf`) and stores nothing. A sample is `labeled` once it has a
box annotation (an upload with boxes, or `PUT /api/samples/{id}/boxes`, where an empty list
means "labeled: no objects").

Durability: a file is written to `files/tmp`, fsynced, renamed to its content-addressed place,
then the database row is committed; a failed request removes what it wrote, and the service
removes unreferenced files when it starts (after a kill -9 between rename and commit).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from helpers.localcloud.common import limits
from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import Context, ctx_of, fsync_dir, write_file_durable
from helpers.localcloud.common.db import dumps
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio.checks import check_filename, decode_image, normalise_label, parse_boxes
from helpers.localcloud.studio.keys import device_access
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.store import CATEGORIES, add_labels, sample_path, split_of
from helpers.protocol.ei_vocab import BOXES_FILE, BOXES_FILE_TYPE

router = studio_router(tags=["studio"])

_UPLOAD_DOC = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "data": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "images (JPEG/PNG) and optionally a bounding_boxes.labels file"},
                    },
                    "required": ["data"],
                }
            }
        }
    },
    "parameters": [
        {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
        for h in ("x-label", "x-no-label", "x-file-name", "x-disallow-duplicates", "x-metadata", "x-bounding-boxes")
    ],
}



@router.post("/api/{category}/files", summary="Upload images (Edge Impulse ingestion API)", openapi_extra=_UPLOAD_DOC)
@device_access("ingest")
async def ingest(category: str, request: Request) -> dict[str, Any]:
    if category not in CATEGORIES + ("split",):
        raise ApiError(404, f"unknown category {category!r}; use /api/training/files, /api/testing/files or /api/split/files",
                       "category")
    ctx = ctx_of(request)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(400, "send the images as multipart/form-data in field 'data'", "data")
    try:
        form = await request.form(max_files=10000, max_fields=1000, max_part_size=ctx.max_body_bytes)
    except (StarletteHTTPException, MultiPartException) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise ApiError(400, f"malformed multipart body: {detail}", "data") from None
    try:
        uploads: list[tuple[str, bytes]] = []
        boxes_file: Any = None
        for key, value in form.multi_items():
            if key in ("data", BOXES_FILE) and isinstance(value, UploadFile):
                content = await value.read()
                if value.filename == BOXES_FILE or key == BOXES_FILE:
                    try:
                        boxes_file = await run_in_threadpool(limits.loads, content, BOXES_FILE)  # off the loop
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        raise ApiError(400, f"{BOXES_FILE} is not valid JSON: {exc}", BOXES_FILE) from None
                else:
                    uploads.append((value.filename or "", content))
            elif key == BOXES_FILE and isinstance(value, str):
                try:
                    boxes_file = limits.loads(value, BOXES_FILE)
                except json.JSONDecodeError as exc:
                    raise ApiError(400, f"{BOXES_FILE} is not valid JSON: {exc}", BOXES_FILE) from None
    finally:
        await form.close()
    if not uploads:
        raise ApiError(400, "no image in multipart field 'data'", "data")
    return await run_in_threadpool(_ingest_sync, ctx, category, request.headers, uploads, boxes_file)


def _ingest_sync(ctx: Context, category: str, headers: Any, uploads: list[tuple[str, bytes]], boxes_file: Any) -> dict[str, Any]:
    x_file_name = headers.get("x-file-name")
    if x_file_name is not None:
        check_filename(x_file_name, "x-file-name")
        if len(uploads) != 1:
            raise ApiError(400, "x-file-name names a single file; send one file per request or drop the header", "x-file-name")
    label = None if _truthy(headers.get("x-no-label")) else headers.get("x-label")
    if label is not None:
        label = normalise_label(label, "x-label")
    disallow = _truthy(headers.get("x-disallow-duplicates"))
    metadata = _json_header_value(headers, "x-metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ApiError(400, "x-metadata must be a JSON object, e.g. {\"device\": \"cam-1\"}", "x-metadata")
    header_boxes = _json_header_value(headers, "x-bounding-boxes")
    box_map: dict[str, Any] = {}
    if boxes_file is not None:
        if not isinstance(boxes_file, dict) or boxes_file.get("type") != BOXES_FILE_TYPE or not isinstance(boxes_file.get("boundingBoxes"), dict):
            raise ApiError(400, f"{BOXES_FILE} must be {{\"version\": 1, \"type\": \"bounding-box-labels\", \"boundingBoxes\": {{file: [boxes]}}}}", BOXES_FILE)
        box_map = boxes_file["boundingBoxes"]
    device = metadata.get("device")
    captured_at = metadata.get("captured_at")
    if device is not None and not isinstance(device, str):
        raise ApiError(400, "x-metadata.device must be a string", "x-metadata.device")

    # Validate everything first: a rejected request writes nothing.
    prepared = []
    for original, data in uploads:
        name = check_filename(x_file_name or original, "data")
        width, height, ext = decode_image(data, name)
        raw_boxes = box_map.get(original, box_map.get(name))
        if raw_boxes is None and header_boxes is not None:
            raw_boxes = header_boxes
        field = "x-bounding-boxes" if raw_boxes is header_boxes and header_boxes is not None else f"{BOXES_FILE}.{name}"
        boxes = None if raw_boxes is None else parse_boxes(raw_boxes, field, width, height)
        prepared.append({"name": name, "data": data, "sha": hashlib.sha256(data).hexdigest(), "width": width,
                         "height": height, "ext": ext, "boxes": boxes})

    tmp_files: list[Path] = []
    placed: list[Path] = []
    results: list[dict[str, Any]] = []
    try:
        for p in prepared:
            tmp = ctx.tmp_path()
            tmp_files.append(tmp)  # before writing: a write the full disk stops half-way is removed too
            write_file_durable(tmp, p["data"])
            p["tmp"] = tmp
        created = now_iso()
        with ctx.store.tx() as conn:
            seen: dict[str, int] = {}
            for p in prepared:
                # Edge Impulse's /api/split/files puts a file into training or testing (80/20) by its hash
                p["category"] = split_of(p["sha"], 0.2) if category == "split" else category
                existing = conn.execute("SELECT id FROM samples WHERE sha256=?", (p["sha"],)).fetchone()
                dup_id = existing["id"] if existing else seen.get(p["sha"])
                if dup_id is not None:
                    r = {"success": not disallow, "fileName": p["name"], "sampleId": dup_id, "duplicate": True,
                         "duplicateOf": dup_id, "sha256": p["sha"], "category": category}
                    if disallow:
                        r["error"] = f"An item with this hash already exists (ID {dup_id})"
                    results.append(r)
                    continue
                final = sample_path(ctx.files, p["sha"], p["ext"])
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(p["tmp"], final)
                placed.append(final)
                fsync_dir(final.parent)
                cur = conn.execute(
                    "INSERT INTO samples(filename, category, sha256, ext, width, height, label, boxes, labeled, device,"
                    " captured_at, created_at, metadata) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (p["name"], p["category"], p["sha"], p["ext"], p["width"], p["height"], label, dumps(p["boxes"] or []),
                     int(p["boxes"] is not None), device, None if captured_at is None else str(captured_at), created, dumps(metadata)),
                )
                seen[p["sha"]] = cur.lastrowid
                if p["boxes"]:
                    add_labels(conn, {b["label"] for b in p["boxes"]})
                results.append({"success": True, "fileName": p["name"], "sampleId": cur.lastrowid, "duplicate": False,
                                "sha256": p["sha"], "category": p["category"], "width": p["width"], "height": p["height"]})
    except BaseException:
        for f in placed:
            f.unlink(missing_ok=True)
        raise
    finally:
        for t in tmp_files:
            t.unlink(missing_ok=True)
    return {"success": all(r["success"] for r in results), "files": results}


def _json_header_value(headers: Any, name: str) -> Any:
    raw = headers.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return limits.loads(raw, name)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"{name} header is not valid JSON: {exc}", name) from None


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")
