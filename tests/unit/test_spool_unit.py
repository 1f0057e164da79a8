"""The on-disk spool: content-addressed, FIFO, bounded, crash-safe, items leave only on ack."""
from __future__ import annotations

import json

import pytest

from helpers.device.spool import Spool


def test_fifo_dedup_and_ack(tmp_path):
    s = Spool(tmp_path / "q", max_items=10)
    a = s.put(b"a" * 10, {"filename": "a.jpg"})
    b = s.put(b"b" * 10, {"filename": "b.jpg"})
    assert s.put(b"a" * 10, {"filename": "again.jpg"}) == a  # same content: queued once
    assert [i.key for i in s.pending()] == [a.key, b.key] and len(s) == 2
    assert s.peek() == a and s.read(a) == b"a" * 10 and s.peek().meta["filename"] == "a.jpg"
    assert s.ack(a) is True and s.ack(a) is False
    assert s.peek() == b and a.key not in s
    with pytest.raises(KeyError, match="not queued"):
        s.read(a)


def test_survives_reopen_and_cleans_interrupted_writes(tmp_path):
    root = tmp_path / "q"
    s = Spool(root)
    items = [s.put(bytes([i]) * 100, {"i": i}) for i in range(3)]
    # what a kill -9 mid-put leaves: a temp file, and a blob whose sidecar was never written
    (root / ".x.bin.123.tmp").write_bytes(b"partial")
    (root / ("f" * 64 + ".bin")).write_bytes(b"orphan")
    (root / ("e" * 64 + ".json")).write_text("{not json")
    again = Spool(root)
    assert [i.key for i in again.pending()] == [i.key for i in items]
    assert [i.meta["i"] for i in again.pending()] == [0, 1, 2]
    assert sorted(p.name for p in root.iterdir()) == sorted([f"{i.key}.bin" for i in items] + [f"{i.key}.json" for i in items])
    # order continues after a reopen
    last = again.put(b"new", {})
    assert again.pending()[-1] == last


def test_bound_drops_oldest_and_counts(tmp_path):
    s = Spool(tmp_path / "q", max_items=3)
    keys = [s.put(f"item{i}".encode(), {"i": i}).key for i in range(5)]
    assert [i.key for i in s.pending()] == keys[2:]
    assert s.dropped == 2 and s.stats() == {"pending": 3, "bytes": 15, "dropped": 2}
    assert Spool(tmp_path / "q", max_items=3).dropped == 2  # the counter is persisted
    by_bytes = Spool(tmp_path / "b", max_items=100, max_bytes=25)
    for i in range(4):
        by_bytes.put(bytes([i]) * 10, {})
    assert len(by_bytes) == 2 and by_bytes.dropped == 2


def test_rejects_bad_bounds(tmp_path):
    with pytest.raises(ValueError, match="max_items"):
        Spool(tmp_path, max_items=0)
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path, max_bytes=0)


def test_sidecar_is_plain_json(tmp_path):
    s = Spool(tmp_path)
    item = s.put(b"xyz", {"filename": "f.jpg", "metadata": {"device": "d"}})
    doc = json.loads((tmp_path / f"{item.key}.json").read_text())
    assert doc["key"] == item.key and doc["size"] == 3 and doc["meta"]["metadata"]["device"] == "d"
