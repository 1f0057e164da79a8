"""A bounded on-disk store-and-forward queue for a device that loses its uplink.

Each item is a blob named by its content hash (`<sha256>.bin`) and a small JSON sidecar
(`<sha256>.json`) with the metadata the uploader needs. Both are written to a temporary name
and renamed into place, the sidecar last: an item exists once its sidecar does, so a crash
mid-write leaves either nothing or a blob without a sidecar, which the next open removes.

Items leave only when acknowledged (`ack`), so a process killed between "sent" and "acked"
re-sends on its next start; the receiver deduplicates by content hash. When the queue is over
its bound the oldest items are dropped and counted (`dropped`), the usual store-and-forward
trade of a full disk for the newest data.

The spool is safe to use from several threads of one process (one lock); it is not meant to
be shared by two processes at once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_STATE = "state.json"


@dataclass(frozen=True)
class SpoolItem:
    """One queued blob: its content hash, size, when it was queued and its metadata."""

    key: str
    size: int
    enqueued_ns: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Spool:
    """A bounded, content-addressed, crash-safe FIFO on disk.

    Args:
        root: folder of the queue (created).
        max_items: the most items kept; the oldest are dropped beyond it.
        max_bytes: the most blob bytes kept (None: no byte bound).

    Raises:
        ValueError: on a non-positive bound.
    """

    def __init__(self, root: str | Path, max_items: int = 1000, max_bytes: int | None = None):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: dict[str, SpoolItem] = {}
        self._dropped = 0
        self._load()
        self._last_ns = max((i.enqueued_ns for i in self._items.values()), default=0)

    # ------------------------------------------------------------------ state
    def _load(self) -> None:
        """Read the queue from disk, removing leftovers of interrupted writes."""
        state_path = self.root / _STATE
        if state_path.is_file():
            try:
                self._dropped = int(json.loads(state_path.read_text()).get("dropped", 0))
            except (ValueError, json.JSONDecodeError) as exc:
                log.warning("spool state %s unreadable (%s); the dropped counter restarts at 0", state_path, exc)
        for tmp in self.root.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        for sidecar in self.root.glob("*.json"):
            if sidecar.name == _STATE:
                continue
            key = sidecar.stem
            blob = self.root / f"{key}.bin"
            try:
                record = json.loads(sidecar.read_text())
            except (ValueError, json.JSONDecodeError) as exc:
                log.warning("spool item %s has an unreadable sidecar (%s); removing it", key, exc)
                sidecar.unlink(missing_ok=True)
                blob.unlink(missing_ok=True)
                continue
            if not blob.is_file():
                log.warning("spool item %s lost its blob; removing the sidecar", key)
                sidecar.unlink(missing_ok=True)
                continue
            self._items[key] = SpoolItem(key, blob.stat().st_size, int(record["enqueued_ns"]), record.get("meta", {}))
        for blob in self.root.glob("*.bin"):
            if blob.stem not in self._items:
                blob.unlink(missing_ok=True)  # a put interrupted before its sidecar was written

    def _save_state(self) -> None:
        _atomic_write(self.root / _STATE, json.dumps({"dropped": self._dropped}).encode())

    # ------------------------------------------------------------------ API
    def put(self, data: bytes, meta: dict[str, Any] | None = None) -> SpoolItem:
        """Queue `data` with `meta`; a blob already queued (same hash) is not queued twice.

        Returns:
            The queued item (the existing one for a repeated blob).
        """
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            existing = self._items.get(key)
            if existing is not None:
                return existing
            # strictly increasing, so FIFO order holds even for puts within one clock tick
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            item = SpoolItem(key, len(data), self._last_ns, dict(meta or {}))
            _atomic_write(self.root / f"{key}.bin", data)
            record = {"key": key, "size": item.size, "enqueued_ns": item.enqueued_ns, "meta": item.meta}
            _atomic_write(self.root / f"{key}.json", json.dumps(record).encode())
            self._items[key] = item
            self._enforce_bound()
            return item

    def _enforce_bound(self) -> None:
        dropped = 0
        while len(self._items) > self.max_items or (
            self.max_bytes is not None and len(self._items) > 1 and self._bytes() > self.max_bytes
        ):
            oldest = min(self._items.values(), key=lambda i: i.enqueued_ns)
            self._remove(oldest.key)
            dropped += 1
        if dropped:
            self._dropped += dropped
            self._save_state()
            log.warning("spool over its bound: dropped %d oldest item(s) (%d in all)", dropped, self._dropped)

    def _bytes(self) -> int:
        return sum(i.size for i in self._items.values())

    def _remove(self, key: str) -> None:
        (self.root / f"{key}.json").unlink(missing_ok=True)  # sidecar first: the item is gone
        (self.root / f"{key}.bin").unlink(missing_ok=True)
        self._items.pop(key, None)

    def peek(self) -> SpoolItem | None:
        """The oldest queued item, or None when the queue is empty."""
        with self._lock:
            if not self._items:
                return None
            return min(self._items.values(), key=lambda i: i.enqueued_ns)

    def pending(self) -> list[SpoolItem]:
        """All queued items, oldest first."""
        with self._lock:
            return sorted(self._items.values(), key=lambda i: i.enqueued_ns)

    def read(self, item: SpoolItem | str) -> bytes:
        """The blob of a queued item.

        Raises:
            KeyError: the item is not (or no longer) queued.
        """
        key = item.key if isinstance(item, SpoolItem) else item
        with self._lock:
            if key not in self._items:
                raise KeyError(f"spool item {key[:12]} is not queued (acknowledged or dropped)")
            return (self.root / f"{key}.bin").read_bytes()

    def ack(self, item: SpoolItem | str) -> bool:
        """Remove an item after the receiver confirmed it; False when it was already gone."""
        key = item.key if isinstance(item, SpoolItem) else item
        with self._lock:
            if key not in self._items:
                return False
            self._remove(key)
            return True

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def dropped(self) -> int:
        """How many items were dropped over the bound, over the spool's whole life."""
        with self._lock:
            return self._dropped

    def stats(self) -> dict[str, int]:
        """`{"pending", "bytes", "dropped"}` for telemetry."""
        with self._lock:
            return {"pending": len(self._items), "bytes": self._bytes(), "dropped": self._dropped}
