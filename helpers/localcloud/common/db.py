"""The local cloud's SQLite store: WAL journal, synchronous=FULL, one writer at a time.

`synchronous=FULL` with WAL makes every committed transaction durable before the HTTP answer
goes out, so an acknowledged write survives `kill -9` of the service (and a power cut).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    edge INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'enabled',
    primary_key TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    desired TEXT NOT NULL DEFAULT '{}',
    reported TEXT NOT NULL DEFAULT '{}',
    desired_version INTEGER NOT NULL DEFAULT 1,
    reported_version INTEGER NOT NULL DEFAULT 1,
    twin_version INTEGER NOT NULL DEFAULT 1,
    etag TEXT NOT NULL,
    device_etag TEXT NOT NULL,
    modules_content TEXT,
    modules_version INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    last_report_at REAL
);
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    target_condition TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    modules_content TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    etag TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- Hub: module identities and module twins (IoT Edge devices get $edgeAgent and $edgeHub).
CREATE TABLE IF NOT EXISTS modules (
    device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    module_id TEXT NOT NULL,
    managed_by TEXT,
    auth_type TEXT NOT NULL DEFAULT 'sas',
    primary_key TEXT,
    secondary_key TEXT,
    primary_thumbprint TEXT,
    secondary_thumbprint TEXT,
    etag TEXT NOT NULL,
    twin_etag TEXT NOT NULL,
    desired TEXT NOT NULL DEFAULT '{}',
    reported TEXT NOT NULL DEFAULT '{}',
    desired_version INTEGER NOT NULL DEFAULT 1,
    reported_version INTEGER NOT NULL DEFAULT 1,
    twin_version INTEGER NOT NULL DEFAULT 1,
    configurations TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    last_activity_at REAL,
    connected INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, module_id)
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    filename TEXT NOT NULL,
    category TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    ext TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    label TEXT,
    boxes TEXT NOT NULL DEFAULT '[]',
    labeled INTEGER NOT NULL DEFAULT 0,
    device TEXT,
    captured_at TEXT,
    created_at TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS samples_category ON samples(category);
CREATE INDEX IF NOT EXISTS samples_device ON samples(device);
CREATE TABLE IF NOT EXISTS labels (name TEXT PRIMARY KEY, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    pid INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    successful INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    card TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""


# Columns added after the first release: (table, column, declaration); added to older state.db files on open.
MIGRATIONS: list[tuple[str, str, str]] = [
    ("devices", "auth_type", "TEXT NOT NULL DEFAULT 'sas'"),
    ("devices", "primary_thumbprint", "TEXT"),
    ("devices", "secondary_thumbprint", "TEXT"),
    ("devices", "status_reason", "TEXT"),
    ("devices", "configurations", "TEXT NOT NULL DEFAULT '{}'"),
    ("devices", "applied_source", "TEXT"),   # 'device' (applyConfigurationContent) or a deployment name
    ("devices", "applied_seq", "INTEGER"),   # the deployment's seq (or modules_version) last written to the module twins
    ("devices", "connected", "INTEGER NOT NULL DEFAULT 0"),  # an MQTT connection is open (issue 14's broker sets it)
    ("deployments", "metrics", "TEXT NOT NULL DEFAULT '{}'"),  # custom metric queries: name -> query
    ("deployments", "updated_at", "TEXT"),
    ("deployments", "evaluate_after", "REAL"),  # epoch: first evaluation of a new or changed deployment
]


def _migrate(conn: sqlite3.Connection) -> None:
    for table, column, decl in MIGRATIONS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


class Store:
    """One SQLite connection shared by the service's worker threads behind a lock.

    The local cloud serves one workshop or CI job on loopback; serialising database access is
    simpler than a connection pool and still answers in milliseconds.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only from the first byte (it holds device keys); SQLite gives the -wal and -shm
        # files the database file's mode
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite refused WAL mode ({mode}); put the workspace on a local disk")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA)
        _migrate(self._conn)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR: a failed COMMIT
                # included); a transaction left open would refuse every later BEGIN
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (under the lock, so no writer interleaves)."""
        with self._lock:
            yield self._conn

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()


def dumps(value: Any) -> str:
    """Canonical JSON for storage and hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str | None, default: Any = None) -> Any:
    return default if text is None else json.loads(text)
