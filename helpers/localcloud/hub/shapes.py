"""IoT Hub's JSON shapes of what the hub stores: device and module identities, device and module twins.

The answers the service SDK deserialises (`Device`, `Module`, `Twin`), and the documents the
query language runs over. Rows are the store's (`hub/store.py`); nothing here writes.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

from helpers.localcloud.common.clock import iso
from helpers.localcloud.common.db import loads

CONNECTED_WINDOW_S = 20.0  # a device that reported within this window counts as connected (HTTP agents)


def device_connected(row: Any, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if "connected" in row.keys() and row["connected"]:
        return True
    return row["last_report_at"] is not None and now - row["last_report_at"] <= CONNECTED_WINDOW_S


def _generation(row: Any) -> str:
    return str(int(hashlib.sha256(f"{row['device_id']}|{row['created_at']}".encode()).hexdigest()[:15], 16))


def _auth_json(row: Any, with_keys: bool) -> dict[str, Any]:
    kind = row["auth_type"] if "auth_type" in row.keys() and row["auth_type"] else "sas"
    sym = {"primaryKey": row["primary_key"] if with_keys and kind == "sas" else None,
           "secondaryKey": row["secondary_key"] if with_keys and kind == "sas" else None}
    x509 = {"primaryThumbprint": row["primary_thumbprint"] if kind == "selfSigned" else None,
            "secondaryThumbprint": row["secondary_thumbprint"] if kind == "selfSigned" else None}
    return {"symmetricKey": sym, "x509Thumbprint": x509, "type": kind}


def device_json(row: Any, with_keys: bool = True, now: float | None = None) -> dict[str, Any]:
    """A device identity in IoT Hub's shape (`Device` in the service SDK)."""
    connected = device_connected(row, now)
    out = {
        "deviceId": row["device_id"],
        "generationId": _generation(row),
        "etag": row["device_etag"],
        "connectionState": "Connected" if connected else "Disconnected",
        "status": row["status"],
        "statusReason": row["status_reason"] if "status_reason" in row.keys() else None,
        "connectionStateUpdatedTime": iso(row["last_report_at"]) or "0001-01-01T00:00:00Z",
        "statusUpdatedTime": "0001-01-01T00:00:00Z",
        "lastActivityTime": iso(row["last_report_at"]) or "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": _auth_json(row, with_keys),
        "capabilities": {"iotEdge": bool(row["edge"])},
        "createdTime": row["created_at"],
        "tags": loads(row["tags"], {}),
    }
    if row["edge"]:
        out["deviceScope"] = f"ms-azure-iot-edge://{row['device_id']}-{out['generationId']}"
    return out


def twin_json(row: Any) -> dict[str, Any]:
    """A device twin in IoT Hub's shape (`Twin` in the service SDK); also the query document."""
    kind = row["auth_type"] if "auth_type" in row.keys() and row["auth_type"] else "sas"
    out = {
        "deviceId": row["device_id"],
        "etag": row["etag"],
        "deviceEtag": row["device_etag"],
        "version": row["twin_version"],
        "status": row["status"],
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": "Connected" if device_connected(row) else "Disconnected",
        "lastActivityTime": iso(row["last_report_at"]) or "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": kind,
        "x509Thumbprint": {"primaryThumbprint": row["primary_thumbprint"] if kind == "selfSigned" else None,
                           "secondaryThumbprint": row["secondary_thumbprint"] if kind == "selfSigned" else None},
        "capabilities": {"iotEdge": bool(row["edge"])},
        "tags": loads(row["tags"], {}),
        "properties": {
            "desired": {**loads(row["desired"], {}), "$version": row["desired_version"]},
            "reported": {**loads(row["reported"], {}), "$version": row["reported_version"]},
        },
    }
    configurations = loads(row["configurations"], {}) if "configurations" in row.keys() else {}
    if configurations:
        out["configurations"] = configurations
    return out


def _module_connected(row: Any, now: float | None = None) -> bool:
    """A module is connected while its MQTT connection is open, or when it was active within the window."""
    if row["connected"]:
        return True
    now = time.time() if now is None else now
    return row["last_activity_at"] is not None and now - row["last_activity_at"] <= CONNECTED_WINDOW_S


def module_json(row: Any, with_keys: bool = True) -> dict[str, Any]:
    """A module identity in IoT Hub's shape (`Module` in the service SDK)."""
    auth: dict[str, Any] = {"type": row["auth_type"]}
    if row["auth_type"] == "sas":
        auth["symmetricKey"] = ({"primaryKey": row["primary_key"], "secondaryKey": row["secondary_key"]} if with_keys
                                else {"primaryKey": None, "secondaryKey": None})
        auth["x509Thumbprint"] = {"primaryThumbprint": None, "secondaryThumbprint": None}
    else:
        auth["symmetricKey"] = {"primaryKey": None, "secondaryKey": None}
        auth["x509Thumbprint"] = {"primaryThumbprint": row["primary_thumbprint"], "secondaryThumbprint": row["secondary_thumbprint"]}
    connected = _module_connected(row)
    return {
        "moduleId": row["module_id"],
        "deviceId": row["device_id"],
        "managedBy": row["managed_by"],
        "generationId": str(int(hashlib.sha256(f"{row['device_id']}|{row['module_id']}|{row['created_at']}".encode()).hexdigest()[:15], 16)),
        "etag": row["etag"],
        "connectionState": "Connected" if connected else "Disconnected",
        "connectionStateUpdatedTime": iso(row["last_activity_at"]) or "0001-01-01T00:00:00Z",
        "lastActivityTime": iso(row["last_activity_at"]) or "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authentication": auth,
    }


def module_twin_json(row: Any, device: Any | None = None) -> dict[str, Any]:
    """A module twin in IoT Hub's shape (`Twin` in the service SDK)."""
    out = {
        "deviceId": row["device_id"],
        "moduleId": row["module_id"],
        "etag": row["twin_etag"],
        "deviceEtag": device["device_etag"] if device is not None else None,
        "status": device["status"] if device is not None else "enabled",
        "version": row["twin_version"],
        "connectionState": "Connected" if _module_connected(row) else "Disconnected",
        "lastActivityTime": iso(row["last_activity_at"]) or "0001-01-01T00:00:00Z",
        "authenticationType": row["auth_type"],
        "x509Thumbprint": {"primaryThumbprint": row["primary_thumbprint"], "secondaryThumbprint": row["secondary_thumbprint"]},
        "properties": {
            "desired": {**loads(row["desired"], {}), "$version": row["desired_version"]},
            "reported": {**loads(row["reported"], {}), "$version": row["reported_version"]},
        },
    }
    configurations = loads(row["configurations"], {})
    if configurations:
        out["configurations"] = configurations
    if device is not None and device["edge"]:
        out["capabilities"] = {"iotEdge": True}
    return out


__all__ = ["CONNECTED_WINDOW_S", "device_connected", "device_json", "twin_json", "module_json", "module_twin_json"]
