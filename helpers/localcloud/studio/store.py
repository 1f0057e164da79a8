"""The studio's state: sample and model files by content, the rows that name them, snapshots, project settings.

Everything here works on a `Context` (or a `Store` and a files folder) and raises `ApiError`;
the routers (`ingestion`, `samples`, `registry`, `v1.*`) and the training job share it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import Context
from helpers.localcloud.common.db import Store, dumps, loads
from helpers.localcloud.common.errors import ApiError

CATEGORIES = ("training", "testing")


# ---------------------------------------------------------------- samples
def sample_path(files: Path, sha: str, ext: str) -> Path:
    """Where the sample with content hash `sha` lies under the studio's files folder."""
    return files / "samples" / sha[:2] / f"{sha}.{ext}"


def sample_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "filename": row["filename"], "category": row["category"], "sha256": row["sha256"],
        "width": row["width"], "height": row["height"], "boxes": loads(row["boxes"], []), "label": row["label"],
        "labeled": bool(row["labeled"]), "device": row["device"], "captured_at": row["captured_at"],
        "created_at": row["created_at"], "metadata": loads(row["metadata"], {}),
    }


def add_labels(conn: Any, labels: set[str]) -> None:
    ts = now_iso()
    for name in sorted(labels):
        conn.execute("INSERT OR IGNORE INTO labels(name, created_at) VALUES(?, ?)", (name, ts))


def get_sample(conn: Any, sample_id: int) -> Any:
    row = conn.execute("SELECT * FROM samples WHERE id=?", (sample_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"sample {sample_id} not found; list samples with Studio.samples()", "sampleId")
    return row


def image_media_type(ext: str) -> str:
    return {"jpg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "webp": "image/webp"}.get(ext, "application/octet-stream")


def sample_bytes(files: Path, row: Any) -> bytes:
    """The sample's file; 500 when it is missing (the workspace was modified by hand)."""
    path = sample_path(files, row["sha256"], row["ext"])
    if not path.is_file():
        raise ApiError(500, f"sample {row['id']}'s file is missing from {path.parent}; the workspace was modified by hand",
                       "sampleId")
    return path.read_bytes()


def split_of(sha: str, test_fraction: float) -> str:
    """training or testing for a content hash: deterministic, stable as the dataset grows."""
    return "testing" if int(sha[:12], 16) / float(16**12) < test_fraction else "training"


def rebalance(store: Store, test_fraction: float) -> dict[str, int]:
    """Re-split every sample by content hash: `{"training", "testing", "moved"}`."""
    moved = 0
    counts = {"training": 0, "testing": 0}
    with store.tx() as conn:
        for row in conn.execute("SELECT id, sha256, category FROM samples").fetchall():
            cat = split_of(row["sha256"], test_fraction)
            counts[cat] += 1
            if cat != row["category"]:
                moved += 1
                conn.execute("UPDATE samples SET category=? WHERE id=?", (cat, row["id"]))
    return {**counts, "moved": moved}


# ---------------------------------------------------------------- snapshots
def create_snapshot(store: Store) -> dict[str, Any]:
    """Freeze the labeled samples: `{"id", "created_at", "labels", "items"}`; the same content gives the same id."""
    with store.tx() as conn:
        rows = conn.execute("SELECT * FROM samples WHERE labeled=1 ORDER BY sha256").fetchall()
        items = [{"sample_id": r["id"], "filename": r["filename"], "sha256": r["sha256"],
                  "split": "train" if r["category"] == "training" else "test", "width": r["width"], "height": r["height"],
                  "boxes": loads(r["boxes"], [])} for r in rows]
        labels = sorted({b["label"] for it in items for b in it["boxes"]})
        body = {"labels": labels, "items": items}
        snap_id = hashlib.sha256(dumps(body).encode()).hexdigest()
        conn.execute("INSERT OR IGNORE INTO snapshots(id, created_at, body) VALUES(?,?,?)", (snap_id, now_iso(), dumps(body)))
        row = conn.execute("SELECT * FROM snapshots WHERE id=?", (snap_id,)).fetchone()
    return {"id": row["id"], "created_at": row["created_at"], **loads(row["body"])}


# ---------------------------------------------------------------- models
def model_dir(files: Path, version: int) -> Path:
    return files / "models" / str(version)


def model_json(row: Any) -> dict[str, Any]:
    return {"version": row["version"], "stage": row["stage"], "sha256": row["sha256"], "size": row["size"],
            "card": loads(row["card"], {}), "created_at": row["created_at"]}


def get_model(conn: Any, version: int) -> Any:
    row = conn.execute("SELECT * FROM models WHERE version=?", (version,)).fetchone()
    if row is None:
        raise ApiError(404, f"model version {version} not found; list versions with Studio.models()", "version")
    return row


# ---------------------------------------------------------------- project settings (meta)
def get_meta(ctx: Context, key: str, default: Any = None) -> Any:
    """A JSON setting of the studio project (`meta` table)."""
    with ctx.store.read() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return default if row is None else json.loads(row["value"])


def get_meta_text(ctx: Context, key: str) -> str | None:
    with ctx.store.read() as conn:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else row["value"]


def set_meta(ctx: Context, key: str, value: Any) -> None:
    with ctx.store.tx() as conn:
        conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                     (key, json.dumps(value)))


# ---------------------------------------------------------------- start-up sweep
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
