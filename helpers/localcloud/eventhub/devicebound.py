"""Cloud-to-device messages on the hub's AMQP endpoint, as `azure-iot-hub` sends them.

`IoTHubRegistryManager.send_c2d_message(device_id, body, properties)` (uamqp) connects to port
5671 of the hub's host, puts a SAS token of the service policy on `$cbs` (IoT Hub's own form:
`sr` is the hub's host name, the key is the base64-decoded policy key), attaches a sender link
to `/messages/devicebound` and sends each message with `to` = `/devices/{id}/messages/devicebound`,
its message id, application properties, and `contentType`, `contentEncoding`, `correlationId`,
`expiryTimeUtc` as AMQP properties. Each message is queued for its device
(`helpers.localcloud.mqtt.devicebound`) and accepted, or rejected with IoT Hub's reason (the
device is not registered, its queue holds 50 messages, over 64 KB, expired), which the SDK
raises. The MQTT endpoint delivers the queue to the device.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any
from urllib.parse import quote_plus, urlsplit

from proton import Message

from helpers.config import Secret
from helpers.errors import Unauthorized
from helpers.localcloud.eventhub.auth import SAS_TOKEN_TYPE, Grant
from helpers.localcloud.mqtt.devicebound import DeviceboundQueues, Refused
from helpers.protocol.sas import parse_sas_token

#: the node a service's sender link attaches to, and what a token for the hub grants here
DEVICEBOUND = "messages/devicebound"
_TO = re.compile(r"^/devices/([^/]+)/messages/devicebound/?$", re.IGNORECASE)


def is_hub_token(token: str) -> bool:
    """Whether a CBS token names the hub itself (`sr=<host>`), not an Event Hubs entity (`sr=sb://...`)."""
    try:
        sr = parse_sas_token(token).sr
    except Unauthorized:
        return False
    return "://" not in sr and "/" not in sr.strip("/")


class ServiceTokenChecker:
    """Checks IoT Hub service tokens put on `$cbs`: the hub's host, the service policy, its key.

    Args:
        hosts: the hub's names (`ADDRESS:HTTPS_PORT` of the connection string's HostName, the bare address).
        policy: the shared access policy (`iothubowner`).
        key: its base64 key.
    """

    def __init__(self, hosts: tuple[str, ...], policy: str, key: Secret):
        self.hosts = tuple(h.lower() for h in hosts)
        self.policy = policy
        self._key = base64.b64decode(key.get_secret_value())

    def check(self, token: str, token_type: str | None = None, now: float | None = None) -> Grant:
        """The grant (`messages/devicebound`) of a service token, or why it is refused.

        Raises:
            Unauthorized: another token type, host or policy, expired, or a wrong signature.
        """
        if token_type is not None and token_type != SAS_TOKEN_TYPE:
            raise Unauthorized(f"token type {token_type!r} is not accepted here: put a SAS token ({SAS_TOKEN_TYPE}) of the "
                               f"{self.policy} policy", 401)
        parsed = parse_sas_token(token)
        if parsed.sr.strip("/").lower() not in self.hosts:
            raise Unauthorized(f"the token's resource (sr) {parsed.sr[:80]!r} is not this hub ({', '.join(self.hosts)}): "
                               "use the HostName of the hub's service connection string", 401)
        if parsed.skn != self.policy:
            raise Unauthorized(f"the token is for policy {parsed.skn!r}; cloud-to-device messages take the {self.policy} "
                               "policy's key (the hub's service connection string)", 401)
        if parsed.se < (time.time() if now is None else now):
            raise Unauthorized("the SAS token expired; the service SDK makes a new one when it reconnects", 401)
        # IoT Hub's SDKs sign the url-encoded host; azure-iot-hub's AMQP client signs it as it is (the same
        # string on Azure, where host names need no encoding; not for ADDRESS:PORT)
        for uri in (quote_plus(parsed.sr), parsed.sr):
            expected = base64.b64encode(hmac.new(self._key, f"{uri}\n{parsed.se}".encode(), hashlib.sha256).digest())
            if hmac.compare_digest(expected, parsed.sig.encode()):
                return Grant(path=DEVICEBOUND, expires=float(parsed.se))
        raise Unauthorized("the SAS token's signature does not match: the SharedAccessKey of the service connection "
                           "string is wrong or was regenerated", 401)


def is_devicebound(address: str, hosts: tuple[str, ...]) -> bool:
    """Whether a sender's target is the hub's `/messages/devicebound` (`amqps://<host>/messages/devicebound` too)."""
    if "://" in address:
        url = urlsplit(address)
        if (url.hostname or "").lower() not in {h.rsplit(":", 1)[0] for h in hosts}:
            return False
        address = url.path
    return address.strip("/").lower() == DEVICEBOUND


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise Refused("amqp:decode-error", f"a cloud-to-device message body must be data (bytes or text), not "
                                       f"{type(body).__name__}")


def enqueue(queues: DeviceboundQueues, msg: Message) -> int:
    """Queue one message a service sent to `/messages/devicebound`; its id in the device's queue.

    Raises:
        Refused: no `to` naming a device, or the queue refused it (the condition and reason go back to the sender).
    """
    to = _text(msg.address) or ""
    m = _TO.match(to)
    if not m:
        raise Refused("amqp:invalid-field", f"the message's 'to' property is {to[:120]!r}; it must be "
                                            "/devices/{deviceId}/messages/devicebound")
    system = {"to": to}
    for key, value in (("message_id", msg.id), ("correlation_id", msg.correlation_id), ("user_id", msg.user_id),
                       ("content_type", msg.content_type), ("content_encoding", msg.content_encoding)):
        text = _text(value)
        if text:
            system[key] = text
    expires_at = float(msg.expiry_time) if msg.expiry_time else None
    if expires_at is not None:
        system["expiry"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at))
    props = {str(k): _text(v) or "" for k, v in (msg.properties or {}).items()}
    return queues.enqueue(m.group(1), _body(msg.body), system, props, expires_at=expires_at)


__all__ = ["DEVICEBOUND", "ServiceTokenChecker", "enqueue", "is_devicebound", "is_hub_token"]
