"""Fault drill 7: the workspace's disk full.

A local cloud of its own runs with its whole state folder (`WORKSPACE/localcloud/`: the SQLite
store and its WAL, sample files, the log) on a small tmpfs. The disk is filled to the last byte,
then devices upload through Edge Impulse's ingestion API (`IngestionClient`, what the collector
uses): each upload is refused with 507 and a message naming the full disk, nothing is half written
(no partial file under `files/`, no sample row, SQLite's integrity check passes), the service keeps
answering, and once space is freed the same uploads succeed. The tmpfs is unmounted in a finally.

Needs root (or CAP_SYS_ADMIN) for `mount -t tmpfs`; without it the drill skips, naming it.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from helpers.errors import ServiceError
from helpers.localcloud import ensure_running, stop
from helpers.studio.ingestion import IngestionClient

pytestmark = pytest.mark.timeout(120)

TMPFS_SIZE = "24m"
PAGE = 4096  # tmpfs allocates by page


def _mount_tmpfs(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("drill 7 needs the mount command (util-linux) to mount a tmpfs")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"drill 7 needs to mount a tmpfs (root or CAP_SYS_ADMIN): `mount -t tmpfs` said: "
                    f"{proc.stderr.strip() or proc.returncode}")


def _umount(where: Path) -> None:
    proc = subprocess.run(["umount", str(where)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:  # something still holds it: lazily, so no mount outlives the test
        subprocess.run(["umount", "-l", str(where)], check=True, timeout=30)


def _fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file until the filesystem refuses another byte, then give back `leave` bytes."""
    filler = folder / "filler.bin"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, 1 << 12, 1):
            block = chunk[:size]
            while True:
                try:
                    fh.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    assert os.statvfs(folder).f_bavail == 0
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


def _jpeg(seed: int, size: int) -> bytes:
    import cv2
    import numpy as np

    img = np.random.default_rng(seed).integers(0, 255, size=(size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def _files(state: Path) -> set[str]:
    return {str(p.relative_to(state)) for p in (state / "files").rglob("*") if p.is_file()}


def _rows(state: Path) -> tuple[int, str]:
    db = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        count = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    return count, check


def test_disk_full_refuses_uploads_cleanly_and_recovers(tmp_path):
    ws = tmp_path / "ws"
    state = ws / "localcloud"
    _mount_tmpfs(state)
    counts: dict[str, int] = {}
    try:
        info = ensure_running(ws)
        try:
            key = json.loads((state / "credentials.json").read_text())["studio_api_key"]
            client = IngestionClient(info["url"], key, timeout=30)
            salt = uuid.uuid4().int % 10_000
            first = client.upload("training", [("before.jpg", _jpeg(salt, 64))], label="apple", disallow_duplicates=True)
            assert first[0].error is None
            rows_before, _ = _rows(state)
            files_before = _files(state)

            # small and large images on a full disk: a small one fails at once, a large one part-way
            # through its write; then one page free: the image file fits, SQLite's WAL does not
            sizes = (48, 320, 640, 16)  # the last one well under a page
            refused = []
            for i, size in enumerate(sizes):
                filler = _fill(state, leave=PAGE if i == len(sizes) - 1 else 0)
                with pytest.raises(ServiceError) as err:
                    client.upload("training", [(f"full-{i}.jpg", _jpeg(salt + 1 + i, size))], label="apple",
                                  disallow_duplicates=True)
                refused.append(err.value)
                filler.unlink()
            filler = _fill(state)
            counts["refused"] = len(refused)
            counts["refused_by_file_write"] = sum("No space left" in str(e) for e in refused)
            counts["refused_by_sqlite"] = sum("database or disk is full" in str(e) for e in refused)
            assert counts["refused_by_file_write"] == 3 and counts["refused_by_sqlite"] == 1, [str(e) for e in refused]
            log = (state / "service.log").read_text(errors="replace")
            assert "Traceback" not in log and "unhandled error" not in log
            for exc in refused:
                assert exc.status == 507, f"{exc.status}: {exc}"
                assert "disk" in str(exc).lower() and "full" in str(exc).lower(), str(exc)
            rows_full, check = _rows(state)
            assert rows_full == rows_before and check == "ok"
            assert _files(state) == files_before, "a refused upload left a file behind"
            # the service is up: it answers, and reads what it holds
            health = requests.get(f"{info['url']}/api/health", headers={"x-api-key": key}, timeout=10)
            listed = requests.get(f"{info['url']}/api/samples", headers={"x-api-key": key}, timeout=10)
            assert health.status_code == 200 and listed.status_code == 200, (health.text, listed.text)
            counts["health_while_full"] = health.status_code
            counts["samples_listed_while_full"] = len(listed.json()["samples"])
            assert counts["samples_listed_while_full"] == rows_before

            filler.unlink()
            ok = [client.upload("training", [(f"after-{i}.jpg", _jpeg(salt + 1 + i, size))], label="apple",
                                disallow_duplicates=True)[0] for i, size in enumerate(sizes)]
            assert all(r.error is None and not r.duplicate for r in ok), ok
            counts["accepted_after"] = len(ok)
            rows_after, check = _rows(state)
            assert rows_after == rows_before + len(sizes) and check == "ok"
            assert not list((state / "files").rglob("*.part"))
            counts["rows"] = rows_after
            print("drill 7:", counts)
        finally:
            stop(ws)
    finally:
        _umount(state)
    assert not os.path.ismount(state)
