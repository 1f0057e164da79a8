"""Studio API keys with a role: the management key and the keys devices are given.

The management key (`credentials.json` `studio_api_key`) is for notebooks and clients: it may do
everything. A device gets a *device key* that may only

- upload samples (the ingestion API): `ei_dev_<32 hex>`, the collector's key;
- and, for a runner told to run model version N, download that version:
  `ei_dev_v<N>_<32 hex>`.

Device keys are derived from the management key with HMAC-SHA256, so the service keeps no key
table and whoever holds the management key (the notebook deploying the fleet) can give a device
its key. A device key reveals nothing of the management key and cannot be turned into the key
of another model version. Rotating the management key revokes every device key. A client gets
a device key from the studio (`POST /api/devicekeys`, `helpers.localcloud.studio.auth`).

Which endpoint a device key may call is declared on the endpoint itself (`device_access`):
every other endpoint refuses it, so a new endpoint is management-only unless it says otherwise.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from helpers.config import Secret

DEVICE_PREFIX = "ei_dev_"
_DEVICE_RE = re.compile(r"^ei_dev_(?:v([1-9][0-9]{0,8})_)?([0-9a-f]{32})$")
#: What a device key may do on an endpoint marked with `device_access`.
ACCESS_KINDS = ("ingest", "model", "info")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class KeyRole:
    """The role of a studio API key: `management`, or `device` (with the model version it may fetch)."""

    role: str
    model_version: int | None = None


def _secret_value(key: Secret | str) -> str:
    return key.get_secret_value() if isinstance(key, Secret) else str(key)


def _mac(management_key: Secret | str, model_version: int | None) -> str:
    message = f"edgeloop-device-key\n{model_version or ''}".encode()
    return hmac.new(_secret_value(management_key).encode(), message, hashlib.sha256).hexdigest()[:32]


def device_key(management_key: Secret | str, model_version: int | None = None) -> Secret:
    """The device key for the studio whose management key is `management_key`.

    Args:
        management_key: the studio's management API key.
        model_version: the model version the device (a runner) may download; None: ingest only.

    Raises:
        ValueError: the management key is empty or `model_version` is not a positive integer.
    """
    if not _secret_value(management_key):
        raise ValueError("device_key needs the studio's management API key")
    if model_version is not None and (isinstance(model_version, bool) or not isinstance(model_version, int) or model_version < 1):
        raise ValueError(f"model_version must be a positive integer (a registry version) or None, got {model_version!r}")
    tag = f"v{model_version}_" if model_version is not None else ""
    return Secret(f"{DEVICE_PREFIX}{tag}{_mac(management_key, model_version)}", "EI_API_KEY")


def key_role(key: str, management_key: Secret | str) -> KeyRole | None:
    """The role of `key` for the studio whose management key is `management_key`; None: not its key."""
    management = _secret_value(management_key)
    if management and hmac.compare_digest(key.encode(), management.encode()):
        return KeyRole("management")
    m = _DEVICE_RE.match(key)
    if m is None or not management:
        return None
    version = int(m.group(1)) if m.group(1) else None
    if not hmac.compare_digest(m.group(2).encode(), _mac(management, version).encode()):
        return None
    return KeyRole("device", version)


def device_access(kind: str) -> Callable[[F], F]:
    """Mark an endpoint a device key may call: `ingest` (uploads), `model` (the download of the
    key's model version; an endpoint with a `version` path parameter only for that version) or
    `info` (what the key itself may do). Unmarked endpoints refuse device keys."""
    if kind not in ACCESS_KINDS:
        raise ValueError(f"device_access kind must be one of {ACCESS_KINDS}, got {kind!r}")

    def mark(fn: F) -> F:
        fn.__device_access__ = kind  # type: ignore[attr-defined]
        return fn

    return mark


def endpoint_access(endpoint: Any) -> str | None:
    """The `device_access` kind an endpoint declares, or None (management only)."""
    return getattr(endpoint, "__device_access__", None)


__all__ = ["DEVICE_PREFIX", "KeyRole", "device_key", "key_role", "device_access", "endpoint_access"]
