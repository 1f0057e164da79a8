"""The local cloud's store and error answer when the disk is full (drill 7's defects)."""
from __future__ import annotations

import errno
import sqlite3

import pytest

from helpers.localcloud.common.db import Store
from helpers.localcloud.common.errors import disk_full_error, is_disk_full


def test_a_write_sqlite_cannot_store_leaves_no_transaction_open(tmp_path):
    store = Store(tmp_path / "state.db")
    with store.read() as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages + 2}")  # SQLite's own "disk" is nearly full
    with pytest.raises(sqlite3.OperationalError) as err:
        with store.tx() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES('big', ?)", ("x" * 200_000,))
    assert is_disk_full(err.value), err.value
    with store.read() as conn:
        assert not conn.in_transaction
        assert conn.execute("SELECT COUNT(*) FROM meta WHERE key='big'").fetchone()[0] == 0
        conn.execute("PRAGMA max_page_count=1073741823")
    with store.tx() as conn:  # the store takes writes again once there is room
        conn.execute("INSERT INTO meta(key, value) VALUES('small', '1')")
    with store.read() as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='small'").fetchone()[0] == "1"
    store.close()


def test_disk_full_is_told_apart_and_answered_507(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(full) and is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied")) and not is_disk_full(ValueError("x"))
    answer = disk_full_error(full, tmp_path)
    assert answer.status == 507 and answer.code == "InsufficientStorage"
    assert "No space left on device" in answer.message and str(tmp_path) in answer.message
    assert "nothing of this request was stored" in answer.message
