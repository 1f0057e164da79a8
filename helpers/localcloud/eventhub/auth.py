"""CBS tokens for the built-in endpoint: Service Bus SAS tokens of the hub's `iothubowner` policy.

IoT Hub's Event Hubs-compatible connection string carries the same policy name and key as the
hub's service connection string, but the Event Hubs clients sign as Service Bus does: the
HMAC-SHA256 key is the key *string's* UTF-8 bytes (IoT Hub's own tokens use the base64-decoded
key), over `quote_plus(sr) + "\\n" + se`, with `sr` = `sb://<host>/<entity>`. The token's
fields are parsed by `helpers.protocol.sas`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote_plus, urlsplit

from helpers.config import Secret
from helpers.errors import Unauthorized
from helpers.protocol.sas import parse_sas_token

#: the token type the Event Hubs clients put (`servicebus.windows.net:sastoken`)
SAS_TOKEN_TYPE = "servicebus.windows.net:sastoken"


def sign(uri: str, key: str, expiry: int) -> str:
    """The Service Bus signature of `uri` until `expiry` with `key` (its UTF-8 bytes are the HMAC key)."""
    message = f"{quote_plus(uri)}\n{int(expiry)}".encode()
    return base64.b64encode(hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()).decode("ascii")


@dataclass(frozen=True)
class Grant:
    """What a checked token allows: listening on `path` and below (`` the namespace) until `expires`."""

    path: str
    expires: float

    def covers(self, resource: str, now: float | None = None) -> bool:
        """True while the token is valid for `resource` (`<entity>/ConsumerGroups/<group>/Partitions/<n>`)."""
        current = time.time() if now is None else now
        resource = resource.strip("/").lower()
        return self.expires > current and (not self.path or resource == self.path or resource.startswith(self.path + "/"))


class TokenChecker:
    """Checks CBS tokens for this endpoint: its host names, its entity, the service policy's key.

    Args:
        hosts: the names the endpoint answers to (the hub's loopback address).
        entity: the Event Hubs-compatible name (the connection string's `EntityPath`).
        policy: the shared access policy name (`iothubowner`).
        key: that policy's key (the same key as the hub's service connection string).
    """

    def __init__(self, hosts: tuple[str, ...], entity: str, policy: str, key: Secret):
        self.hosts = tuple(h.lower() for h in hosts)
        self.entity = entity
        self.policy = policy
        self._key = key

    def check(self, token: str, token_type: str | None = None, now: float | None = None) -> Grant:
        """The grant of a SAS token, or why it is refused.

        Raises:
            Unauthorized: not a SAS token, another host or entity, another policy, expired, or
                not signed with the policy's key.
        """
        if token_type is not None and token_type != SAS_TOKEN_TYPE:
            raise Unauthorized(f"token type {token_type!r} is not accepted here: the built-in endpoint takes SAS tokens "
                               f"({SAS_TOKEN_TYPE}) of the {self.policy} policy, as the Event Hubs-compatible connection "
                               "string gives", 401)
        parsed = parse_sas_token(token)
        parts = urlsplit(parsed.sr if "://" in parsed.sr else f"sb://{parsed.sr}")
        host = (parts.hostname or "").lower()
        if host not in self.hosts:
            raise Unauthorized(f"the token's resource (sr) names host {host[:80]!r}, not this endpoint "
                               f"({', '.join(self.hosts)}): use the hub's Event Hubs-compatible connection string", 401)
        path = parts.path.strip("/").lower()
        if path and path.split("/", 1)[0] != self.entity.lower():
            raise Unauthorized(f"the token's resource (sr) names entity {path[:80]!r}, not {self.entity!r}: set "
                               f"EntityPath={self.entity} in the connection string", 401)
        if parsed.skn != self.policy:
            raise Unauthorized(f"the token is for policy {parsed.skn!r}; this endpoint takes the {self.policy} policy's "
                               "key (SharedAccessKeyName of the hub's connection string)", 401)
        current = time.time() if now is None else now
        if parsed.se < current:
            raise Unauthorized("the SAS token expired; the Event Hubs client makes a new one when it reconnects", 401)
        expected = sign(parsed.sr, self._key.get_secret_value(), parsed.se)
        if not hmac.compare_digest(expected.encode(), parsed.sig.encode()):
            raise Unauthorized("the SAS token's signature does not match: the SharedAccessKey is wrong or was "
                               "regenerated; copy the Event Hubs-compatible connection string again", 401)
        return Grant(path=path, expires=float(parsed.se))


__all__ = ["Grant", "SAS_TOKEN_TYPE", "TokenChecker", "sign"]
