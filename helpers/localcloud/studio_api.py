"""Studio endpoints: Edge Impulse-compatible ingestion, samples, labels, snapshots, models.

Ingestion (`POST /api/{training|testing}/files`) takes what Edge Impulse's ingestion service
takes: multipart field `data` (one or more images, and optionally a `bounding_boxes.labels`
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
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from helpers.localcloud.common import ApiError, Context, ctx_of, fsync_dir, json_body, require_studio, write_file_durable
from helpers.localcloud.db import dumps, loads
from helpers.localcloud.keys import device_access
from helpers.localcloud.service import now_iso

CATEGORIES = ("training", "testing")
STAGES = ("candidate", "production", "retired")
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9 _\-]{0,63}$")
BOXES_FILE = "bounding_boxes.labels"

router = APIRouter(tags=["studio"], dependencies=[Depends(require_studio)])

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


# ---------------------------------------------------------------- validation helpers
def check_filename(name: str | None, field: str) -> str:
    """A plain file name: no path separators, no `..`, no control characters (400 otherwise)."""
    if not name or not name.strip():
        raise ApiError(400, f"{field}: a file name is required", field)
    if "/" in name or "\\" in name or ".." in name or any(ord(c) < 32 for c in name) or len(name) > 255:
        raise ApiError(400, f"{field}: file name {name[:60]!r} must be a plain name (no '/', '\\', '..' or control characters)", field)
    return name


def normalise_label(name: Any, field: str) -> str:
    if not isinstance(name, str) or not LABEL_RE.match(name.strip().lower()):
        raise ApiError(400, f"{field}: label {str(name)[:40]!r} must be a short lowercase name such as 'apple'", field)
    return name.strip().lower()


def parse_boxes(raw: Any, field: str, width: int | None = None, height: int | None = None) -> list[dict[str, Any]]:
    """Validate a list of `{label, x, y, width, height}` boxes in pixels; clip to the image."""
    if not isinstance(raw, list):
        raise ApiError(400, f"{field} must be a list of {{label, x, y, width, height}} boxes", field)
    out = []
    for i, b in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(b, dict):
            raise ApiError(400, f"{where} must be an object {{label, x, y, width, height}}", where)
        label = normalise_label(b.get("label"), f"{where}.label")
        nums = {}
        for k in ("x", "y", "width", "height"):
            v = b.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ApiError(400, f"{where}.{k} must be a number (pixels)", f"{where}.{k}")
            nums[k] = float(v)
        if nums["width"] <= 0 or nums["height"] <= 0:
            raise ApiError(400, f"{where}: width and height must be positive", where)
        if width is not None and height is not None:
            x0, y0 = max(nums["x"], 0.0), max(nums["y"], 0.0)
            x1, y1 = min(nums["x"] + nums["width"], float(width)), min(nums["y"] + nums["height"], float(height))
            if x1 <= x0 or y1 <= y0:
                raise ApiError(400, f"{where} lies outside the {width}x{height} image", where)
            nums = {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}
        out.append({"label": label, **{k: round(v, 3) for k, v in nums.items()}})
    return out


def decode_image(data: bytes, name: str) -> tuple[int, int, str]:
    """(width, height, ext) of an image; 400 naming the file when it does not decode."""
    import cv2

    if not data:
        raise ApiError(400, f"data: file {name!r} is empty", "data")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ApiError(400, f"data: file {name!r} is not a readable image (JPEG or PNG expected)", "data")
    if data[:3] == b"\xff\xd8\xff":
        ext = "jpg"
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ApiError(400, f"data: file {name!r} is a truncated JPEG", "data")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        ext = "png"
    elif data[:2] == b"BM":
        ext = "bmp"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        ext = "webp"
    else:
        ext = "img"
    return int(img.shape[1]), int(img.shape[0]), ext


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def sample_path(ctx: Context, sha: str, ext: str) -> Path:
    return ctx.files / "samples" / sha[:2] / f"{sha}.{ext}"


def sample_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "filename": row["filename"], "category": row["category"], "sha256": row["sha256"],
        "width": row["width"], "height": row["height"], "boxes": loads(row["boxes"], []), "label": row["label"],
        "labeled": bool(row["labeled"]), "device": row["device"], "captured_at": row["captured_at"],
        "created_at": row["created_at"], "metadata": loads(row["metadata"], {}),
    }


def _add_labels(conn: Any, labels: set[str]) -> None:
    ts = now_iso()
    for name in sorted(labels):
        conn.execute("INSERT OR IGNORE INTO labels(name, created_at) VALUES(?, ?)", (name, ts))


def _get_sample(conn: Any, sample_id: int) -> Any:
    row = conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"sample {sample_id} not found; list samples with Studio.samples()", "sampleId")
    return row


# ---------------------------------------------------------------- ingestion
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
                        boxes_file = json.loads(content)
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        raise ApiError(400, f"{BOXES_FILE} is not valid JSON: {exc}", BOXES_FILE) from None
                else:
                    uploads.append((value.filename or "", content))
            elif key == BOXES_FILE and isinstance(value, str):
                try:
                    boxes_file = json.loads(value)
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
        if not isinstance(boxes_file, dict) or boxes_file.get("type") != "bounding-box-labels" or not isinstance(boxes_file.get("boundingBoxes"), dict):
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
            write_file_durable(tmp, p["data"])
            tmp_files.append(tmp)
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
                final = sample_path(ctx, p["sha"], p["ext"])
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
                    _add_labels(conn, {b["label"] for b in p["boxes"]})
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
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"{name} header is not valid JSON: {exc}", name) from None


# ---------------------------------------------------------------- samples
@router.get("/api/samples", summary="List samples, filtered")
def list_samples(request: Request, category: str | None = None, labeled: bool | None = None,
                 label: str | None = None, device: str | None = None,
                 limit: int = Query(100000, ge=1), offset: int = Query(0, ge=0)) -> dict[str, Any]:
    where, args = [], []
    if category is not None:
        if category not in CATEGORIES:
            raise ApiError(400, f"category must be one of {list(CATEGORIES)}", "category")
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
    return {"success": True, "samples": [sample_json(r) for r in rows]}


@router.get("/api/samples/{sample_id}", summary="One sample")
def get_sample(sample_id: int, request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "sample": sample_json(_get_sample(conn, sample_id))}


@router.get("/api/samples/{sample_id}/image", summary="The sample's image bytes",
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
def get_image(sample_id: int, request: Request) -> Response:
    ctx = ctx_of(request)
    with ctx.store.read() as conn:
        row = _get_sample(conn, sample_id)
    path = sample_path(ctx, row["sha256"], row["ext"])
    if not path.is_file():
        raise ApiError(500, f"sample {sample_id}'s file is missing from {path.parent}; the workspace was modified by hand", "sampleId")
    media = {"jpg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "webp": "image/webp"}.get(row["ext"], "application/octet-stream")
    return Response(path.read_bytes(), media_type=media, headers={"x-sha256": row["sha256"]})


@router.put("/api/samples/{sample_id}/boxes", summary="Replace a sample's boxes (marks it labeled)")
async def put_boxes(sample_id: int, request: Request) -> dict[str, Any]:
    body = await json_body(request)
    raw = body.get("boxes") if isinstance(body, dict) else body
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        with ctx.store.tx() as conn:
            row = _get_sample(conn, sample_id)
            boxes = parse_boxes(raw, "boxes", row["width"], row["height"])
            conn.execute("UPDATE samples SET boxes=?, labeled=1 WHERE id=?", (dumps(boxes), sample_id))
            _add_labels(conn, {b["label"] for b in boxes})
            return {"success": True, "sample": sample_json(_get_sample(conn, sample_id))}

    return await run_in_threadpool(work)


@router.patch("/api/samples/{sample_id}", summary="Update metadata (merge), category or label")
async def patch_sample(sample_id: int, request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object with metadata, category and/or label", "body")
    unknown = set(body) - {"metadata", "category", "label", "labeled"}
    if unknown:
        raise ApiError(400, f"unknown field(s) {sorted(unknown)}; allowed: metadata, category, label, labeled", sorted(unknown)[0])
    if "metadata" in body and not isinstance(body["metadata"], dict):
        raise ApiError(400, "metadata must be a JSON object", "metadata")
    if "category" in body and body["category"] not in CATEGORIES:
        raise ApiError(400, f"category must be one of {list(CATEGORIES)}", "category")
    if "labeled" in body and not isinstance(body["labeled"], bool):
        raise ApiError(400, "labeled must be true or false", "labeled")
    label = normalise_label(body["label"], "label") if body.get("label") is not None else None
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        from helpers.localcloud.hub_api import merge_patch

        with ctx.store.tx() as conn:
            row = _get_sample(conn, sample_id)
            meta = merge_patch(loads(row["metadata"], {}), body.get("metadata") or {})
            device = meta.get("device") if isinstance(meta.get("device"), str) else row["device"]
            captured = meta.get("captured_at", row["captured_at"])
            conn.execute(
                "UPDATE samples SET metadata=?, device=?, captured_at=?, category=?, label=?, labeled=? WHERE id=?",
                (dumps(meta), device, None if captured is None else str(captured), body.get("category", row["category"]),
                 label if "label" in body else row["label"], int(body.get("labeled", bool(row["labeled"]))), sample_id),
            )
            return {"success": True, "sample": sample_json(_get_sample(conn, sample_id))}

    return await run_in_threadpool(work)


@router.delete("/api/samples/{sample_id}", summary="Delete a sample and its file")
def delete_sample(sample_id: int, request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    with ctx.store.tx() as conn:
        row = _get_sample(conn, sample_id)
        conn.execute("DELETE FROM samples WHERE id=?", (sample_id,))
    sample_path(ctx, row["sha256"], row["ext"]).unlink(missing_ok=True)
    return {"success": True, "deleted": sample_id}


# ---------------------------------------------------------------- labels, rebalance
@router.get("/api/labels", summary="The label set")
def get_labels(request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "labels": [r["name"] for r in conn.execute("SELECT name FROM labels ORDER BY name")]}


@router.post("/api/labels", summary="Add a label")
async def add_label(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict) or "name" not in body:
        raise ApiError(400, "body must be {\"name\": \"apple\"}", "name")
    name = normalise_label(body["name"], "name")
    with ctx_of(request).store.tx() as conn:
        _add_labels(conn, {name})
    return get_labels(request)


def split_of(sha: str, test_fraction: float) -> str:
    """training or testing for a content hash: deterministic, stable as the dataset grows."""
    return "testing" if int(sha[:12], 16) / float(16**12) < test_fraction else "training"


@router.post("/api/rebalance", summary="Re-split all samples train/test deterministically by content hash")
async def rebalance(request: Request) -> dict[str, Any]:
    body = await json_body(request, required=False) or {}
    frac = body.get("testFraction", 0.2) if isinstance(body, dict) else None
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 <= frac < 1.0:
        raise ApiError(400, "testFraction must be a number in [0, 1)", "testFraction")
    ctx = ctx_of(request)

    def work() -> dict[str, Any]:
        moved = 0
        counts = {"training": 0, "testing": 0}
        with ctx.store.tx() as conn:
            for row in conn.execute("SELECT id, sha256, category FROM samples").fetchall():
                cat = split_of(row["sha256"], float(frac))
                counts[cat] += 1
                if cat != row["category"]:
                    moved += 1
                    conn.execute("UPDATE samples SET category=? WHERE id=?", (cat, row["id"]))
        return {"success": True, **counts, "moved": moved}

    return await run_in_threadpool(work)


# ---------------------------------------------------------------- snapshots
@router.post("/api/snapshots", summary="Freeze the labeled samples into an immutable, content-hashed snapshot")
def create_snapshot(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    with ctx.store.tx() as conn:
        rows = conn.execute("SELECT * FROM samples WHERE labeled=1 ORDER BY sha256").fetchall()
        items = [{"sample_id": r["id"], "filename": r["filename"], "sha256": r["sha256"],
                  "split": "train" if r["category"] == "training" else "test", "width": r["width"], "height": r["height"],
                  "boxes": loads(r["boxes"], [])} for r in rows]
        labels = sorted({b["label"] for it in items for b in it["boxes"]})
        body = {"labels": labels, "items": items}
        snap_id = hashlib.sha256(dumps(body).encode()).hexdigest()
        conn.execute("INSERT OR IGNORE INTO snapshots(id, created_at, body) VALUES(?,?,?)", (snap_id, now_iso(), dumps(body)))
        row = conn.execute("SELECT * FROM snapshots WHERE id=?", (snap_id,)).fetchone()
    return {"success": True, "id": row["id"], "created_at": row["created_at"], **loads(row["body"])}


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
def model_dir(ctx: Context, version: int) -> Path:
    return ctx.files / "models" / str(version)


def model_json(row: Any) -> dict[str, Any]:
    return {"version": row["version"], "stage": row["stage"], "sha256": row["sha256"], "size": row["size"],
            "card": loads(row["card"], {}), "created_at": row["created_at"]}


def _get_model(conn: Any, version: int) -> Any:
    row = conn.execute("SELECT * FROM models WHERE version=?", (version,)).fetchone()
    if row is None:
        raise ApiError(404, f"model version {version} not found; list versions with Studio.models()", "version")
    return row


def check_model_bytes(data: bytes, fmt: str) -> None:
    """400 unless `data` is a model file of format `fmt` ("onnx", "eim" or "tflite")."""
    if fmt == "onnx":
        check_onnx(data)
        return
    if not data:
        raise ApiError(400, f"model: the .{fmt} file is empty", "model")
    if fmt == "tflite" and data[4:8] != b"TFL3":
        raise ApiError(400, "model: not a TFLite flatbuffer (no 'TFL3' identifier); upload the .tflite Edge Impulse exports",
                       "model")
    if fmt == "eim" and not (data[:4] == b"\x7fELF" or data[:2] == b"#!"):
        raise ApiError(400, "model: not an .eim executable (neither ELF nor a script); upload the Linux build "
                            "Edge Impulse deploys (runner-linux-*)", "model")


def check_onnx(data: bytes) -> None:
    """400 when the bytes are not an ONNX model (checked with the onnx package when installed)."""
    if not data:
        raise ApiError(400, "model: the ONNX file is empty", "model")
    try:
        import onnx
    except ImportError:
        return
    from google.protobuf.message import DecodeError

    try:
        onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ApiError(400, f"model: not a valid ONNX model ({type(exc).__name__}); export it with torch.onnx.export", "model") from None


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
        card = json.loads(card_raw)
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


def check_card_labels(card: dict[str, Any]) -> None:
    """400 unless the card's `labels` are plain label strings, the rule sample labels follow.

    A device shows its model's labels on its web page and in its telemetry; a label that is
    markup (`<img src=x onerror=...>`) would be a script in whoever opens that page.
    """
    if "labels" not in card:
        return
    labels = card["labels"]
    if not isinstance(labels, list) or not labels:
        raise ApiError(400, "card.labels must be a non-empty list of label names, e.g. [\"apple\", \"banana\"]", "card.labels")
    for i, name in enumerate(labels):
        if not isinstance(name, str) or not LABEL_RE.match(name):
            raise ApiError(400, f"card.labels[{i}]: label {str(name)[:40]!r} must be a short lowercase name such as 'apple' "
                                "(letters, digits, space, '_' or '-'), as sample labels are", f"card.labels[{i}]")


# The file a model version keeps, by the card's `format` (helpers.inference.backends.FORMAT_FILES).
MODEL_FILES = {"onnx": "model.onnx", "eim": "model.eim", "tflite": "model.tflite"}


def model_file_of(card: dict[str, Any]) -> str:
    return MODEL_FILES.get(card.get("format") or "onnx", "model.onnx")


def _register_sync(ctx: Context, data: bytes, card: dict[str, Any]) -> dict[str, Any]:
    check_model_bytes(data, card.get("format") or "onnx")
    sha = hashlib.sha256(data).hexdigest()
    tmp_onnx, tmp_card = ctx.tmp_path(), ctx.tmp_path()
    write_file_durable(tmp_onnx, data)
    placed: Path | None = None
    try:
        with ctx.store.tx() as conn:
            version = (conn.execute("SELECT MAX(version) AS v FROM models").fetchone()["v"] or 0) + 1
            full_card = {**card, "version": version, "sha256": sha}
            write_file_durable(tmp_card, json.dumps(full_card, indent=2).encode())
            d = model_dir(ctx, version)
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
            row = _get_model(conn, version)
    except BaseException:
        if placed is not None:
            for f in placed.glob("*"):
                f.unlink(missing_ok=True)
            placed.rmdir()
        raise
    finally:
        tmp_onnx.unlink(missing_ok=True)
        tmp_card.unlink(missing_ok=True)
    return {"success": True, "model": model_json(row)}


@router.get("/api/models", summary="List model versions")
def list_models(request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "models": [model_json(r) for r in conn.execute("SELECT * FROM models ORDER BY version")]}


@router.get("/api/models/{version}", summary="One model version")
@device_access("model")
def get_model(version: int, request: Request) -> dict[str, Any]:
    with ctx_of(request).store.read() as conn:
        return {"success": True, "model": model_json(_get_model(conn, version))}


@router.get("/api/models/{version}/onnx", summary="Download the ONNX file (x-sha256 header)",
            responses={200: {"content": {"application/octet-stream": {}}}})
@device_access("model")
def download_model(version: int, request: Request) -> Response:
    ctx = ctx_of(request)
    with ctx.store.read() as conn:
        row = _get_model(conn, version)
    fmt = loads(row["card"], {}).get("format") or "onnx"
    if fmt != "onnx":
        raise ApiError(409, f"model {version} is an .{fmt} model, not ONNX: download it from /api/models/{version}/file",
                       "version")
    return _model_file_response(ctx, row, version)


def _model_file_response(ctx: Context, row: Any, version: int) -> Response:
    card = loads(row["card"], {})
    name = model_file_of(card)
    path = model_dir(ctx, version) / name
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
        row = _get_model(conn, version)
    return _model_file_response(ctx, row, version)


@router.put("/api/models/{version}/stage", summary="Set the stage: candidate, production or retired")
async def set_stage(version: int, request: Request) -> dict[str, Any]:
    body = await json_body(request)
    stage = body.get("stage") if isinstance(body, dict) else None
    if stage not in STAGES:
        raise ApiError(400, f"stage must be one of {list(STAGES)}", "stage")
    with ctx_of(request).store.tx() as conn:
        _get_model(conn, version)
        conn.execute("UPDATE models SET stage=? WHERE version=?", (stage, version))
        return {"success": True, "model": model_json(_get_model(conn, version))}


def sweep_files(ctx: Context) -> dict[str, int]:
    """Remove temp files and files no row references (left by a crash between rename and commit)."""
    removed = {"tmp": 0, "samples": 0, "models": 0}
    tmp = ctx.files / "tmp"
    if tmp.is_dir():
        for f in tmp.iterdir():
            f.unlink(missing_ok=True)
            removed["tmp"] += 1
    with ctx.store.read() as conn:
        shas = {(r["sha256"], r["ext"]) for r in conn.execute("SELECT sha256, ext FROM samples")}
        versions = {r["version"] for r in conn.execute("SELECT version FROM models")}
    samples = ctx.files / "samples"
    if samples.is_dir():
        for f in samples.glob("*/*"):
            sha, _, ext = f.name.partition(".")
            if (sha, ext) not in shas:
                f.unlink(missing_ok=True)
                removed["samples"] += 1
    models = ctx.files / "models"
    if models.is_dir():
        for d in models.iterdir():
            if d.is_dir() and (not d.name.isdigit() or int(d.name) not in versions):
                for f in d.iterdir():
                    f.unlink(missing_ok=True)
                d.rmdir()
                removed["models"] += 1
    return removed


# The Edge Impulse Studio API (/v1/api/...) the official clients call: helpers.localcloud.studio_v1
from helpers.localcloud import studio_v1  # noqa: E402

router.include_router(studio_v1.router)
