"""The hub's state in SQLite: device and module identities, device and module twins.

Shared by the IoT Hub REST API (the routes in `hub/`) and the MQTT device endpoint, both in the local
cloud process. Every function takes an open connection from `Store.tx()` (writes) or
`Store.read()` (reads) and raises `ApiError` with IoT Hub's status and error code, so a caller
in either protocol turns it into that protocol's answer.

    with store.tx() as conn:
        create_module(conn, "pi-1", "collector", managed_by="IotEdge")
        twin, push = set_module_desired(conn, "pi-1", "$edgeAgent", {"schemaVersion": "1.1"}, replace=False)
    notify_desired("pi-1", "$edgeAgent", push)   # after the commit: connected clients get the patch

    with store.tx() as conn:
        version = patch_module_reported(conn, "pi-1", "$edgeAgent", {"lastDesiredVersion": 3})

Module identities: every IoT Edge device has `$edgeAgent` and `$edgeHub` (created with the
device, `managedBy` null, SAS keys of their own); other modules are created by the service API
or by the edge agent (`managedBy: "IotEdge"`). Module twins carry desired and reported
properties with `$version`s, a twin `version` and `etag`, and `configurations`
(`{deployment: {"status": "Applied" | "Targeted"}}`) as IoT Hub writes them.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.db import dumps, loads
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import check_twin_section
from helpers.localcloud.hub.shapes import module_twin_json
from helpers.protocol.sas import new_key
from helpers.protocol.twinpatch import merge_patch

EDGE_SYSTEM_MODULES = ("$edgeAgent", "$edgeHub")


def new_etag() -> str:
    """A fresh opaque etag."""
    return secrets.token_urlsafe(9)


def _strip_meta(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k not in ("$version", "$metadata")}


def checked_merge(current: dict[str, Any], patch: dict[str, Any], section: str, field: str,
                  replace: bool = False) -> dict[str, Any]:
    """`patch` merged into (or replacing) a twin section, within IoT Hub's limits for it.

    The patch is checked before it is merged (depth, finite numbers: nothing recursive touches a
    patch nested past the limit), the result after (its size).

    Raises:
        LimitError: 400 (depth, NaN/Infinity) or 413 (size), naming the limit; nothing is written.
    """
    check_twin_section(patch, section, field)
    if replace:
        return patch
    new = merge_patch(current, patch)
    check_twin_section(new, section, field)
    return new


# ------------------------------------------------------------------ rows
def device_row(conn: Any, device_id: str) -> Any:
    """The device's row, or 404 DeviceNotFound."""
    row = conn.execute("SELECT * FROM devices WHERE device_id=?", (device_id,)).fetchone()
    if row is None:
        raise ApiError(404, f"device {device_id!r} not found; create it with Hub.create_edge_device", "deviceId", "DeviceNotFound")
    return row


def module_row(conn: Any, device_id: str, module_id: str) -> Any:
    """The module's row, or 404 (DeviceNotFound / ModuleNotFound)."""
    row = conn.execute("SELECT * FROM modules WHERE device_id=? AND module_id=?", (device_id, module_id)).fetchone()
    if row is None:
        device_row(conn, device_id)
        raise ApiError(404, f"module {module_id!r} of device {device_id!r} not found", "moduleId", "ModuleNotFound")
    return row


def list_modules(conn: Any, device_id: str) -> list[Any]:
    """The device's module rows, ordered by module id (404 when the device does not exist)."""
    device_row(conn, device_id)
    return conn.execute("SELECT * FROM modules WHERE device_id=? ORDER BY module_id", (device_id,)).fetchall()


def create_module(conn: Any, device_id: str, module_id: str, *, managed_by: str | None = None, auth_type: str = "sas",
                  primary_key: str | None = None, secondary_key: str | None = None,
                  primary_thumbprint: str | None = None, secondary_thumbprint: str | None = None) -> Any:
    """Create a module identity (409 ModuleAlreadyExistsOnDevice when it exists); returns its row.

    `auth_type` is `sas` (keys generated when not given), `selfSigned` (thumbprints) or
    `certificateAuthority`.
    """
    device_row(conn, device_id)
    if conn.execute("SELECT 1 FROM modules WHERE device_id=? AND module_id=?", (device_id, module_id)).fetchone():
        raise ApiError(409, f"module {module_id!r} already exists on device {device_id!r}", "moduleId", "ModuleAlreadyExistsOnDevice")
    if auth_type == "sas":
        primary_key, secondary_key = primary_key or new_key(), secondary_key or new_key()
    conn.execute(
        "INSERT INTO modules(device_id, module_id, managed_by, auth_type, primary_key, secondary_key, primary_thumbprint,"
        " secondary_thumbprint, etag, twin_etag, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
        (device_id, module_id, managed_by, auth_type, primary_key, secondary_key, primary_thumbprint, secondary_thumbprint,
         new_etag(), new_etag(), now_iso()),
    )
    return module_row(conn, device_id, module_id)


def update_module_identity(conn: Any, device_id: str, module_id: str, *, if_match: str | None, managed_by: str | None = None,
                           auth_type: str | None = None, primary_key: str | None = None, secondary_key: str | None = None,
                           primary_thumbprint: str | None = None, secondary_thumbprint: str | None = None) -> Any:
    """Update a module identity (If-Match: `*` or its etag; 412 PreconditionFailed otherwise)."""
    row = module_row(conn, device_id, module_id)
    if if_match not in (None, "*") and if_match != row["etag"]:
        raise ApiError(412, "If-Match does not match the module's etag; read it again", "If-Match", "PreconditionFailed")
    auth_type = auth_type or row["auth_type"]
    if auth_type == "sas":
        primary_key = primary_key or row["primary_key"] or new_key()
        secondary_key = secondary_key or row["secondary_key"] or new_key()
    conn.execute(
        "UPDATE modules SET managed_by=?, auth_type=?, primary_key=?, secondary_key=?, primary_thumbprint=?,"
        " secondary_thumbprint=?, etag=? WHERE device_id=? AND module_id=?",
        (managed_by if managed_by is not None else row["managed_by"], auth_type, primary_key, secondary_key,
         primary_thumbprint, secondary_thumbprint, new_etag(), device_id, module_id),
    )
    return module_row(conn, device_id, module_id)


def ensure_edge_modules(conn: Any, device_id: str) -> None:
    """Create `$edgeAgent` and `$edgeHub` for an IoT Edge device when missing (idempotent)."""
    for module_id in EDGE_SYSTEM_MODULES:
        if not conn.execute("SELECT 1 FROM modules WHERE device_id=? AND module_id=?", (device_id, module_id)).fetchone():
            create_module(conn, device_id, module_id)


def delete_module(conn: Any, device_id: str, module_id: str, if_match: str | None = None) -> None:
    """Delete a module identity and its twin (412 on a stale etag)."""
    row = module_row(conn, device_id, module_id)
    if if_match not in (None, "*") and if_match != row["etag"]:
        raise ApiError(412, "If-Match does not match the module's etag; read it again", "If-Match", "PreconditionFailed")
    conn.execute("DELETE FROM modules WHERE device_id=? AND module_id=?", (device_id, module_id))


def module_keys(conn: Any, device_id: str, module_id: str) -> list[str]:
    """The module's SAS keys (primary, secondary); empty for X.509 modules or unknown ones."""
    row = conn.execute("SELECT primary_key, secondary_key FROM modules WHERE device_id=? AND module_id=?",
                       (device_id, module_id)).fetchone()
    return [k for k in (row["primary_key"], row["secondary_key"]) if k] if row else []


# ------------------------------------------------------------------ twins
def set_module_desired(conn: Any, device_id: str, module_id: str, desired: dict[str, Any], *, replace: bool,
                       if_match: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Patch (merge) or replace a module twin's desired properties.

    Returns:
        (the twin JSON, the patch to push to a connected client with its `$version`, or None
        when nothing changed). Call `notify_desired` with it after the transaction commits.

    Raises:
        ApiError: 404 for an unknown module, 412 when `if_match` is not `*` or the twin's etag.
    """
    row = module_row(conn, device_id, module_id)
    if if_match not in (None, "*") and if_match != row["twin_etag"]:
        raise ApiError(412, f"If-Match {if_match!r} does not match the module twin's etag; read the twin again", "If-Match",
                       "PreconditionFailed")
    current = loads(row["desired"], {})
    new = checked_merge(current, _strip_meta(desired), "desired", "properties.desired", replace=replace)
    push: dict[str, Any] | None = None
    if new != current:
        version = row["desired_version"] + 1
        conn.execute("UPDATE modules SET desired=?, desired_version=?, twin_version=twin_version+1, twin_etag=?"
                     " WHERE device_id=? AND module_id=?", (dumps(new), version, new_etag(), device_id, module_id))
        push = {**(new if replace else _strip_meta(desired)), "$version": version}
    return module_twin_json(module_row(conn, device_id, module_id), device_row(conn, device_id)), push


def set_module_configurations(conn: Any, device_id: str, module_id: str, configurations: dict[str, Any]) -> None:
    """Replace the `configurations` marker of a module twin (the deployment evaluation writes it)."""
    conn.execute("UPDATE modules SET configurations=? WHERE device_id=? AND module_id=?",
                 (dumps(configurations), device_id, module_id))


def patch_module_reported(conn: Any, device_id: str, module_id: str, patch: dict[str, Any]) -> int:
    """Merge-patch a module twin's reported properties (the module itself writes them); new `$version`."""
    row = module_row(conn, device_id, module_id)
    reported = checked_merge(loads(row["reported"], {}), _strip_meta(patch), "reported", "properties.reported")
    now = time.time()
    conn.execute("UPDATE modules SET reported=?, reported_version=reported_version+1, twin_version=twin_version+1,"
                 " twin_etag=?, last_activity_at=? WHERE device_id=? AND module_id=?",
                 (dumps(reported), new_etag(), now, device_id, module_id))
    conn.execute("UPDATE devices SET last_report_at=? WHERE device_id=?", (now, device_id))
    return row["reported_version"] + 1


def patch_device_reported(conn: Any, device_id: str, patch: dict[str, Any]) -> int:
    """Merge-patch a device twin's reported properties (the device itself writes them); new `$version`."""
    row = device_row(conn, device_id)
    reported = checked_merge(loads(row["reported"], {}), _strip_meta(patch), "reported", "properties.reported")
    conn.execute("UPDATE devices SET reported=?, reported_version=reported_version+1, twin_version=twin_version+1,"
                 " etag=?, last_report_at=? WHERE device_id=?", (dumps(reported), new_etag(), time.time(), device_id))
    return row["reported_version"] + 1


def set_connected(conn: Any, device_id: str, module_id: str | None, connected: bool) -> None:
    """Record that a device (module_id None) or module opened or closed its connection."""
    now = time.time()
    if module_id is None:
        conn.execute("UPDATE devices SET connected=?, last_report_at=? WHERE device_id=?", (int(connected), now, device_id))
    else:
        conn.execute("UPDATE modules SET connected=?, last_activity_at=? WHERE device_id=? AND module_id=?",
                     (int(connected), now, device_id, module_id))


def touch(conn: Any, device_id: str, module_id: str | None = None) -> None:
    """Record activity (any authenticated message) of a device or module."""
    now = time.time()
    conn.execute("UPDATE devices SET last_report_at=? WHERE device_id=?", (now, device_id))
    if module_id is not None:
        conn.execute("UPDATE modules SET last_activity_at=? WHERE device_id=? AND module_id=?", (now, device_id, module_id))


# ------------------------------------------------------------------ desired-property notifications
DesiredListener = Callable[[str, "str | None", dict[str, Any]], None]
_listeners: list[DesiredListener] = []
_listeners_lock = threading.Lock()


def on_desired_change(listener: DesiredListener) -> Callable[[], None]:
    """Call `listener(device_id, module_id_or_None, patch_with_$version)` after every desired change.

    Returns a function that removes the listener. Listeners run in the thread that committed
    the change and must not block (hand the patch to an event loop with `call_soon_threadsafe`).
    """
    with _listeners_lock:
        _listeners.append(listener)

    def remove() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return remove


def notify_desired(device_id: str, module_id: str | None, patch: dict[str, Any] | None) -> None:
    """Tell the listeners about a committed desired-property change (no-op for None)."""
    if not patch:
        return
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(device_id, module_id, patch)


__all__ = [
    "EDGE_SYSTEM_MODULES", "new_etag", "checked_merge", "device_row", "module_row", "list_modules", "create_module",
    "update_module_identity", "ensure_edge_modules", "delete_module", "module_keys",
    "set_module_desired", "set_module_configurations", "patch_module_reported", "patch_device_reported", "set_connected",
    "touch", "on_desired_change", "notify_desired",
]
