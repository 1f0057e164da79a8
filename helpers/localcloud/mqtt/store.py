"""What the MQTT endpoint reads and writes in the local hub's SQLite store.

Identities and their keys, device and module twins (desired and reported, with versions),
persistent MQTT sessions (so a client with `clean_session=False`, as `azure-iot-device` always
connects, keeps its subscriptions across a restart of the stand-in, as it does on IoT Hub),
and device-to-cloud messages. Every write commits (WAL, synchronous=FULL) before the broker
acknowledges it, so an acknowledged reported property or message survives `kill -9`.

Messages are readable from Python without the service running::

    from helpers.localcloud.mqtt.store import read_messages
    read_messages(workspace, device_id="pi-1", module_id="runner", since_id=0)
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.errors import Unauthorized
from helpers.localcloud.common.db import Store, dumps, loads
from helpers.localcloud.hub import store as hub_store
from helpers.protocol.sas import parse_sas_token, verify_sas_token

SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_sessions (
    client_id TEXT PRIMARY KEY,
    subscriptions TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS d2c_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    module_id TEXT,
    enqueued_at REAL NOT NULL,
    system_properties TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS d2c_messages_identity ON d2c_messages(device_id, module_id, id);
"""

#: messages kept per workspace (oldest dropped first; Azure keeps a day on its built-in endpoint)
MAX_MESSAGES = 200_000


@dataclass(frozen=True)
class Identity:
    """A device (`module_id` None) or one of its modules."""

    device_id: str
    module_id: str | None = None

    @property
    def client_id(self) -> str:
        return self.device_id if self.module_id is None else f"{self.device_id}/{self.module_id}"

    @property
    def resource(self) -> str:
        """The SAS token resource path after the host name."""
        base = f"devices/{self.device_id}"
        return base if self.module_id is None else f"{base}/modules/{self.module_id}"

    def __str__(self) -> str:
        return self.client_id


class AuthError(Exception):
    """A connection's credentials were refused; `code` is the CONNACK return code to send."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class HubState:
    """The broker's access to the hub's identities, twins, sessions and messages."""

    def __init__(self, store: Store, host: str):
        self.store = store
        self.host = host
        with self.store.tx() as conn:
            # statement by statement: executescript() would commit the open transaction
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            # nobody is connected to a broker that just started (a kill -9 left the flags set)
            conn.execute("UPDATE devices SET connected=0 WHERE connected=1")
            conn.execute("UPDATE modules SET connected=0 WHERE connected=1")
        self._inserted = 0

    # ------------------------------------------------------------ identities
    def _keys(self, conn: sqlite3.Connection, ident: Identity) -> tuple[list[str], str]:
        """(keys, status) of an identity; raises AuthError when it does not exist."""
        row = conn.execute("SELECT primary_key, secondary_key, status FROM devices WHERE device_id=?",
                           (ident.device_id,)).fetchone()
        if row is None:
            raise AuthError(f"device {ident.device_id!r} is not registered in this hub", 5)
        if ident.module_id is None:
            return [row["primary_key"], row["secondary_key"]], row["status"]
        if _module_row(conn, ident) is None:
            raise AuthError(f"module {ident.module_id!r} of device {ident.device_id!r} is not registered", 5)
        return hub_store.module_keys(conn, ident.device_id, ident.module_id), row["status"]

    def authenticate_sas(self, ident: Identity, password: bytes | None) -> None:
        """Check a SAS token password for `ident`.

        Raises:
            AuthError: no token, a token for another resource or host, expired or wrongly signed.
        """
        if not password:
            raise AuthError("no password: send a SAS token signed with the device's or module's key", 4)
        try:
            parsed = parse_sas_token(password.decode("utf-8", errors="replace"))
        except Unauthorized as exc:
            raise AuthError(str(exc), 4) from None
        if parsed.skn:
            raise AuthError("a device connection needs a token signed with the device's key, not a policy's", 5)
        expected = f"{self.host}/{ident.resource}"
        if parsed.sr.rstrip("/") != expected:
            raise AuthError(f"the token's resource {parsed.sr!r} is not {expected!r} (this hub's host and the "
                            f"connecting identity)", 5)
        with self.store.read() as conn:
            keys, status = self._keys(conn, ident)
        if status != "enabled":
            raise AuthError(f"device {ident.device_id!r} is disabled", 5)
        try:
            verify_sas_token(parsed, [k for k in keys if k])
        except Unauthorized as exc:
            raise AuthError(str(exc), 4) from None

    def authenticate_x509(self, ident: Identity, thumbprint: str, chained: bool, common_name: str | None) -> None:
        """Check an X.509 client certificate for `ident`: a registered thumbprint, or a CA chain.

        Raises:
            AuthError: the identity does not use X.509 or the certificate is not the registered one.
        """
        with self.store.read() as conn:
            row = _auth_row(conn, ident)
        if row is None:
            raise AuthError(f"{ident} is not registered in this hub", 5)
        auth_type, primary, secondary, status = row
        if status != "enabled":
            raise AuthError(f"device {ident.device_id!r} is disabled", 5)
        if auth_type == "selfSigned":
            if thumbprint.upper() not in {t.upper() for t in (primary, secondary) if t}:
                raise AuthError(f"the client certificate's thumbprint is not one registered for {ident}", 5)
            return
        if auth_type == "certificateAuthority":
            if not chained:
                raise AuthError(f"{ident} uses CA authentication but its certificate does not chain to a trusted CA", 5)
            if common_name != ident.device_id:
                raise AuthError(f"the certificate's CN {common_name!r} is not the device id {ident.device_id!r}", 5)
            return
        raise AuthError(f"{ident} uses SAS keys, not X.509: send a SAS token as the password", 5)

    # ------------------------------------------------------------ twins
    def get_twin(self, ident: Identity) -> dict[str, Any]:
        """`{"desired": {..., "$version"}, "reported": {..., "$version"}}` as the MQTT twin GET answers."""
        with self.store.read() as conn:
            desired, dv, reported, rv = _twin_parts(conn, ident)
        return {"desired": {**desired, "$version": dv}, "reported": {**reported, "$version": rv}}

    def desired(self, ident: Identity) -> tuple[dict[str, Any], int]:
        with self.store.read() as conn:
            desired, dv, _, _ = _twin_parts(conn, ident)
        return desired, dv

    def desired_versions(self, idents: list[Identity]) -> dict[Identity, int]:
        """The desired-properties version of each identity (missing ones left out), in two queries."""
        wanted = set(idents)
        out: dict[Identity, int] = {}
        with self.store.read() as conn:
            for r in conn.execute("SELECT device_id, desired_version FROM devices"):
                ident = Identity(r["device_id"])
                if ident in wanted:
                    out[ident] = int(r["desired_version"])
            for r in conn.execute("SELECT device_id, module_id, desired_version FROM modules"):
                ident = Identity(r["device_id"], r["module_id"])
                if ident in wanted:
                    out[ident] = int(r["desired_version"])
        return out

    def patch_reported(self, ident: Identity, patch: dict[str, Any]) -> int:
        """Merge-patch the identity's reported properties; returns the new reported version (committed)."""
        patch = {k: v for k, v in patch.items() if not k.startswith("$")}
        with self.store.tx() as conn:
            return _write_reported(conn, ident, patch)

    # ------------------------------------------------------------ sessions
    def load_session(self, client_id: str) -> dict[str, int] | None:
        with self.store.read() as conn:
            row = conn.execute("SELECT subscriptions FROM mqtt_sessions WHERE client_id=?", (client_id,)).fetchone()
        return None if row is None else loads(row["subscriptions"], {})

    def save_session(self, client_id: str, subscriptions: dict[str, int]) -> None:
        with self.store.tx() as conn:
            conn.execute("INSERT INTO mqtt_sessions(client_id, subscriptions, updated_at) VALUES(?,?,?) "
                         "ON CONFLICT(client_id) DO UPDATE SET subscriptions=excluded.subscriptions, "
                         "updated_at=excluded.updated_at", (client_id, dumps(subscriptions), time.time()))

    def drop_session(self, client_id: str) -> None:
        with self.store.tx() as conn:
            conn.execute("DELETE FROM mqtt_sessions WHERE client_id=?", (client_id,))

    # ------------------------------------------------------------ messages
    def save_message(self, ident: Identity, system: dict[str, str], props: dict[str, str], body: bytes) -> int:
        """Store a device-to-cloud message (committed before the PUBACK); returns its id."""
        with self.store.tx() as conn:
            cur = conn.execute(
                "INSERT INTO d2c_messages(device_id, module_id, enqueued_at, system_properties, properties, body)"
                " VALUES(?,?,?,?,?,?)", (ident.device_id, ident.module_id, time.time(), dumps(system), dumps(props), body))
            _touch(conn, ident)
            self._inserted += 1
            if self._inserted % 1000 == 0:
                conn.execute("DELETE FROM d2c_messages WHERE id <= (SELECT MAX(id) FROM d2c_messages) - ?",
                             (MAX_MESSAGES,))
            return int(cur.lastrowid)

    def touch(self, *idents: Identity) -> None:
        """Record activity of identities (the hub's last activity time), in one transaction."""
        with self.store.tx() as conn:
            for ident in idents:
                _touch(conn, ident)

    def set_connected(self, ident: Identity, connected: bool) -> None:
        """Record that an identity's MQTT connection opened or closed (the hub's connection state)."""
        with self.store.tx() as conn:
            hub_store.set_connected(conn, ident.device_id, ident.module_id, connected)


# ---------------------------------------------------------------- SQL against the hub's tables (hub_store)
def _module_row(conn: sqlite3.Connection, ident: Identity) -> Any:
    return conn.execute("SELECT * FROM modules WHERE device_id=? AND module_id=?",
                        (ident.device_id, ident.module_id)).fetchone()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _auth_row(conn: sqlite3.Connection, ident: Identity) -> tuple[str, str, str, str] | None:
    dev = conn.execute("SELECT * FROM devices WHERE device_id=?", (ident.device_id,)).fetchone()
    if dev is None:
        return None
    row = dev if ident.module_id is None else _module_row(conn, ident)
    if row is None:
        return None
    return row["auth_type"], row["primary_thumbprint"], row["secondary_thumbprint"], dev["status"]


def _twin_parts(conn: sqlite3.Connection, ident: Identity) -> tuple[dict[str, Any], int, dict[str, Any], int]:
    if ident.module_id is None:
        row = conn.execute("SELECT desired, desired_version, reported, reported_version FROM devices WHERE device_id=?",
                           (ident.device_id,)).fetchone()
    else:
        row = _module_row(conn, ident)
    if row is None:
        raise KeyError(str(ident))
    return loads(row["desired"], {}), int(row["desired_version"]), loads(row["reported"], {}), int(row["reported_version"])


def _write_reported(conn: sqlite3.Connection, ident: Identity, patch: dict[str, Any]) -> int:
    if ident.module_id is None:
        return hub_store.patch_device_reported(conn, ident.device_id, patch)
    return hub_store.patch_module_reported(conn, ident.device_id, ident.module_id, patch)


def _touch(conn: sqlite3.Connection, ident: Identity) -> None:
    hub_store.touch(conn, ident.device_id, ident.module_id)


# ---------------------------------------------------------------- reading messages from Python
def read_messages(workspace: str | Path, device_id: str | None = None, module_id: str | None = None,
                  since_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Device-to-cloud messages kept by the local hub, oldest first.

    Args:
        workspace: the workspace folder of the local cloud.
        device_id / module_id: only this device's (module's) messages; None: all.
        since_id: only messages with a larger id (for following new ones).
        limit: at most this many.

    Returns:
        Dicts with `id`, `deviceId`, `moduleId`, `enqueuedTime` (epoch s), `systemProperties`,
        `properties` and `body` (bytes; `json` holds the parsed body when it is JSON).
    """
    path = Path(workspace) / "localcloud" / "state.db"
    if not path.is_file():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        if not _has_table(conn, "d2c_messages"):
            return []
        sql, args = "SELECT * FROM d2c_messages WHERE id > ?", [since_id]
        if device_id is not None:
            sql += " AND device_id = ?"
            args.append(device_id)
        if module_id is not None:
            sql += " AND module_id = ?"
            args.append(module_id)
        rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
    finally:
        conn.close()
    out = []
    for r in rows:
        body = bytes(r["body"])
        try:
            parsed: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        out.append({"id": r["id"], "deviceId": r["device_id"], "moduleId": r["module_id"],
                    "enqueuedTime": r["enqueued_at"], "systemProperties": loads(r["system_properties"], {}),
                    "properties": loads(r["properties"], {}), "body": body, "json": parsed})
    return out
