"""The device-to-cloud messages the MQTT endpoint stores (`d2c_messages`), read as Event Hubs partitions.

IoT Hub spreads a hub's telemetry over the partitions of its built-in endpoint by device id
(all of a device's and its modules' messages in one partition, in order), and numbers the
events of each partition 0, 1, 2, ... (`x-opt-sequence-number`). The MQTT endpoint keeps one
table for all devices, so this module keeps a small index beside it, `eventhub_index`
(message id -> partition, sequence number), filled in message-id order by the endpoint's one
thread: the numbers never change once given, survive restarts, and stay contiguous per
partition. An event's offset (`x-opt-offset`, an opaque string on Azure) is its message id,
which grows within a partition as Azure's byte offsets do.
"""
from __future__ import annotations

import sqlite3
import zlib
from dataclasses import dataclass
from typing import Any

from helpers.localcloud.common.db import Store, loads

#: IoT Hub's default partition count for the built-in endpoint (2 on the free tier, up to 32)
PARTITION_COUNT = 4
#: the one consumer group a new IoT Hub has
DEFAULT_CONSUMER_GROUP = "$Default"

INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS eventhub_index (
    id INTEGER PRIMARY KEY,
    partition INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS eventhub_index_seq ON eventhub_index(partition, seq);
"""


def partition_of(device_id: str, partition_count: int = PARTITION_COUNT) -> int:
    """The partition a device's messages go to (stable: CRC-32 of the device id)."""
    return zlib.crc32(device_id.encode("utf-8")) % partition_count


@dataclass(frozen=True)
class Event:
    """One device-to-cloud message as an event of a partition."""

    partition: int
    seq: int
    offset: str
    enqueued_at: float  # epoch seconds
    device_id: str
    module_id: str | None
    system: dict[str, str]  # the MQTT property bag's `$.` keys without the prefix: mid, cid, uid, ct, ce, ...
    properties: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class PartitionInfo:
    """What `$management` answers for a partition (`com.microsoft:partition`)."""

    partition: int
    begin_seq: int
    last_seq: int
    last_offset: str
    last_enqueued_at: float  # epoch seconds; 0 when empty
    empty: bool


@dataclass(frozen=True)
class Position:
    """Where a receiver starts: events whose `field` compares with `value` by `op` (`>` or `>=`).

    `field` is `offset`, `seq` or `enqueued` (epoch milliseconds); `latest` means only events
    enqueued after the receiver attached; `offset` `-1` means from the start of the partition.
    """

    field: str
    op: str
    value: int
    latest: bool = False


class EventLog:
    """Partitions of events over the hub's stored device-to-cloud messages.

    Call from one thread (the endpoint's); the `Store` lock serialises it with the broker.
    """

    def __init__(self, store: Store, partition_count: int = PARTITION_COUNT):
        self.store = store
        self.partition_count = partition_count
        with self.store.tx() as conn:
            for stmt in INDEX_SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            self._next = {p: 0 for p in range(partition_count)}
            for r in conn.execute("SELECT partition, MAX(seq) AS s FROM eventhub_index GROUP BY partition"):
                if r["partition"] in self._next:
                    self._next[r["partition"]] = int(r["s"]) + 1
            last = conn.execute("SELECT MAX(id) FROM eventhub_index").fetchone()[0]
        self._last_id = int(last or 0)

    def index_new(self, batch: int = 5000) -> int:
        """Give the messages stored since the last call their partition and sequence number.

        Returns:
            How many messages were indexed.
        """
        with self.store.read() as conn:
            if not _has_messages_table(conn):
                return 0
            rows = conn.execute("SELECT id, device_id FROM d2c_messages WHERE id > ? ORDER BY id LIMIT ?",
                                (self._last_id, batch)).fetchall()
        if not rows:
            return 0
        entries = []
        for r in rows:
            p = partition_of(r["device_id"], self.partition_count)
            entries.append((int(r["id"]), p, self._next[p]))
            self._next[p] += 1
        with self.store.tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO eventhub_index(id, partition, seq) VALUES(?,?,?)", entries)
            # the broker drops the oldest messages past its cap; their index rows go with them
            conn.execute("DELETE FROM eventhub_index WHERE id < (SELECT MIN(id) FROM d2c_messages)")
        self._last_id = entries[-1][0]
        return len(entries)

    def start_cursor(self, partition: int, position: Position) -> int:
        """The sequence number after which a receiver at `position` starts (-1: from the first event)."""
        if position.latest:
            return self._next[partition] - 1
        if position.field == "offset" and position.value < 0:
            return -1
        column = {"offset": "m.id", "seq": "i.seq", "enqueued": "CAST(m.enqueued_at * 1000 AS INTEGER)"}[position.field]
        before = "<=" if position.op == ">" else "<"
        with self.store.read() as conn:
            if not _has_messages_table(conn):
                return -1
            row = conn.execute(f"SELECT MAX(i.seq) FROM eventhub_index i JOIN d2c_messages m ON m.id = i.id "  # noqa: S608 (fixed columns)
                               f"WHERE i.partition = ? AND {column} {before} ?", (partition, position.value)).fetchone()
        return -1 if row[0] is None else int(row[0])

    def read(self, partition: int, after_seq: int, limit: int) -> list[Event]:
        """Up to `limit` events of `partition` with a sequence number above `after_seq`, in order."""
        with self.store.read() as conn:
            if not _has_messages_table(conn):
                return []
            rows = conn.execute(
                "SELECT i.seq, m.* FROM eventhub_index i JOIN d2c_messages m ON m.id = i.id "
                "WHERE i.partition = ? AND i.seq > ? ORDER BY i.seq LIMIT ?", (partition, after_seq, limit)).fetchall()
        return [_event(partition, r) for r in rows]

    def partition_info(self, partition: int) -> PartitionInfo:
        """The partition's first and last sequence numbers, last offset and enqueued time."""
        first = last = None
        with self.store.read() as conn:
            if _has_messages_table(conn):
                # both ends by the (partition, seq) index: no scan of the partition
                sql = ("SELECT i.seq, i.id, m.enqueued_at FROM eventhub_index i JOIN d2c_messages m ON m.id = i.id "
                       "WHERE i.partition = ? ORDER BY i.seq {} LIMIT 1")
                first = conn.execute(sql.format("ASC"), (partition,)).fetchone()
                last = conn.execute(sql.format("DESC"), (partition,)).fetchone()
        if first is None or last is None:
            # as Azure answers for an empty partition: the next number to be given, offset -1
            nxt = self._next[partition]
            return PartitionInfo(partition, nxt, nxt - 1, "-1", 0.0, True)
        return PartitionInfo(partition, int(first["seq"]), int(last["seq"]), str(last["id"]), float(last["enqueued_at"]), False)


def _has_messages_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='d2c_messages'").fetchone() is not None


def _event(partition: int, r: Any) -> Event:
    return Event(partition=partition, seq=int(r["seq"]), offset=str(r["id"]), enqueued_at=float(r["enqueued_at"]),
                 device_id=r["device_id"], module_id=r["module_id"], system=loads(r["system_properties"], {}),
                 properties=loads(r["properties"], {}), body=bytes(r["body"]))


__all__ = ["DEFAULT_CONSUMER_GROUP", "Event", "EventLog", "PARTITION_COUNT", "PartitionInfo", "Position", "partition_of"]
