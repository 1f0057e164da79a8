"""Shared Access Signature (SAS) tokens exactly as Azure IoT Hub builds and checks them.

A token is `SharedAccessSignature sr=<url-encoded resource URI>&sig=<url-encoded signature>&se=<expiry>[&skn=<policy>]`
where the signature is `base64(HMAC-SHA256(base64decode(key), quote_plus(uri) + "\\n" + expiry))`.
Management calls sign the hub host name with the `iothubowner` policy key (`skn` present);
device calls sign `<host>/devices/<deviceId>` with the device's own key (no `skn`).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote_plus, urlencode

from helpers.config import Secret
from helpers.errors import Unauthorized

PREFIX = "SharedAccessSignature "
DEFAULT_TTL_S = 3600


def new_key(nbytes: int = 32) -> str:
    """A fresh random symmetric key, base64-encoded (Azure's format for device and policy keys)."""
    return base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def _key_bytes(key: str | Secret) -> bytes:
    value = key.get_secret_value() if isinstance(key, Secret) else key
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized("the SharedAccessKey is not valid base64; copy the key or connection string whole", 401) from None


def sign(uri: str, key: str | Secret, expiry: int) -> str:
    """The base64 HMAC-SHA256 signature of `quote_plus(uri) + "\\n" + expiry` with `key`."""
    message = f"{quote_plus(uri)}\n{int(expiry)}".encode()
    return base64.b64encode(hmac.new(_key_bytes(key), message, hashlib.sha256).digest()).decode("ascii")


def generate_sas_token(uri: str, key: str | Secret, policy_name: str | None = None, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> Secret:
    """A SAS token for `uri`, valid for `ttl_s` seconds, wrapped in a `Secret`.

    Args:
        uri: the resource URI: the hub host for service calls, `<host>/devices/<id>` for a device.
        key: the base64 key (policy key or device key).
        policy_name: the shared access policy (`iothubowner`) for service tokens, None for devices.
        ttl_s: lifetime in seconds.
        now: the current time (tests).
    """
    expiry = int((time.time() if now is None else now) + ttl_s)
    fields = {"sr": uri, "sig": sign(uri, key, expiry), "se": str(expiry)}
    if policy_name:
        fields["skn"] = policy_name
    return Secret(PREFIX + urlencode(fields), "sas_token")


@dataclass(frozen=True)
class ParsedToken:
    """The fields of a SAS token (`sig` is the raw base64 signature)."""

    sr: str
    sig: str
    se: int
    skn: str | None = None


def parse_sas_token(token: str | Secret) -> ParsedToken:
    """Split a SAS token into its fields.

    Raises:
        Unauthorized: not a `SharedAccessSignature ...` token or a field is missing.
    """
    value = token.get_secret_value() if isinstance(token, Secret) else str(token)
    value = value.strip()
    if not value.startswith(PREFIX):
        raise Unauthorized("Authorization must be a 'SharedAccessSignature sr=...&sig=...&se=...' token", 401, "Authorization")
    fields = dict(parse_qsl(value[len(PREFIX):], keep_blank_values=True))
    missing = [k for k in ("sr", "sig", "se") if not fields.get(k)]
    if missing:
        raise Unauthorized(f"SAS token is missing {', '.join(missing)}; generate it with helpers.protocol.sas.generate_sas_token", 401, "Authorization")
    try:
        se = int(fields["se"])
    except ValueError:
        raise Unauthorized("SAS token field se (expiry) must be an integer epoch time", 401, "Authorization") from None
    return ParsedToken(sr=fields["sr"], sig=fields["sig"], se=se, skn=fields.get("skn") or None)


def verify_sas_token(token: str | Secret | ParsedToken, keys: list[str | Secret], now: float | None = None) -> ParsedToken:
    """Check a token's expiry and signature against any of `keys` (primary, secondary).

    Raises:
        Unauthorized: expired, or signed with none of the keys.
    """
    parsed = token if isinstance(token, ParsedToken) else parse_sas_token(token)
    current = time.time() if now is None else now
    if parsed.se < current:
        raise Unauthorized("SAS token expired; generate a new one (the clients do this on every call)", 401, "Authorization")
    for key in keys:
        if not key:
            continue
        expected = sign(parsed.sr, key, parsed.se)
        if hmac.compare_digest(expected.encode(), parsed.sig.encode()):
            return parsed
    raise Unauthorized("SAS token signature does not match; the key is wrong or was regenerated", 401, "Authorization")
