"""MQTT 3.1.1 packets: the subset IoT Hub speaks, read from and written to asyncio streams.

IoT Hub's device endpoint is MQTT 3.1.1 (protocol level 4) with QoS 0 and 1; QoS 2 is refused
(IoT Hub closes the connection), retained messages and wills are not supported. This codec
reads and writes the packets the broker in `helpers.localcloud.mqtt` needs; it validates what
it reads and raises `ProtocolError` naming what is wrong, so the broker can close the
connection as the specification asks ("a malformed packet closes the network connection").
"""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

# CONNACK return codes (MQTT 3.1.1, 3.2.2.3)
ACCEPTED, BAD_PROTOCOL, ID_REJECTED, SERVER_UNAVAILABLE, BAD_CREDENTIALS, NOT_AUTHORIZED = range(6)
SUBACK_FAILURE = 0x80

#: the largest packet this broker reads (IoT Hub's messages are at most 256 KB; twin documents 32 KB)
MAX_PACKET = 512 * 1024


class ProtocolError(Exception):
    """The peer sent something MQTT 3.1.1 does not allow; the connection must close."""


@dataclass
class Connect:
    client_id: str
    username: str | None
    password: bytes | None
    keep_alive: int
    clean_session: bool
    protocol_level: int
    will: bool = False


@dataclass
class Publish:
    topic: str
    payload: bytes
    qos: int = 0
    packet_id: int | None = None
    dup: bool = False
    retain: bool = False


@dataclass
class Subscribe:
    packet_id: int
    topics: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Unsubscribe:
    packet_id: int
    topics: list[str] = field(default_factory=list)


@dataclass
class Simple:
    """PUBACK / PUBREL / PINGREQ / DISCONNECT...: a type and, for acks, a packet id."""

    kind: int
    packet_id: int | None = None


Packet = Connect | Publish | Subscribe | Unsubscribe | Simple


# ---------------------------------------------------------------- reading
async def read_packet(reader: asyncio.StreamReader, max_size: int = MAX_PACKET) -> Packet:
    """The next packet from `reader`.

    Raises:
        asyncio.IncompleteReadError: the peer closed the connection.
        ProtocolError: a malformed or unsupported packet.
    """
    first = (await reader.readexactly(1))[0]
    length, multiplier = 0, 1
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            break
        multiplier *= 128
    else:
        raise ProtocolError("remaining length longer than 4 bytes")
    if length > max_size:
        raise ProtocolError(f"packet of {length} bytes is over the {max_size} byte limit")
    body = await reader.readexactly(length) if length else b""
    return decode(first, body)


class _Buf:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def binary(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        raw = self.binary()
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("a string field is not UTF-8") from None
        if "\x00" in value:
            raise ProtocolError("a string field contains U+0000")
        return value

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def decode(first: int, body: bytes) -> Packet:
    """One packet from its first byte and body (the bytes after the remaining length)."""
    kind, flags = first >> 4, first & 0x0F
    buf = _Buf(body)
    if kind == CONNECT:
        name = buf.text()
        level = buf.u8()
        cflags = buf.u8()
        keep_alive = buf.u16()
        if name != "MQTT" or level != 4:
            # 3.1 ("MQIsdp", level 3) and 5.0 are answered with return code 1 by the broker
            return Connect("", None, None, keep_alive, True, level if name in ("MQTT", "MQIsdp") else -1)
        if cflags & 0x01:
            raise ProtocolError("CONNECT reserved flag set")
        client_id = buf.text()
        will = bool(cflags & 0x04)
        if will:
            buf.text()
            buf.binary()
        username = buf.text() if cflags & 0x80 else None
        password = buf.binary() if cflags & 0x40 else None
        return Connect(client_id, username, password, keep_alive, bool(cflags & 0x02), level, will)
    if kind == PUBLISH:
        qos = (flags >> 1) & 0x03
        if qos == 3:
            raise ProtocolError("PUBLISH with QoS 3")
        topic = buf.text()
        packet_id = buf.u16() if qos else None
        return Publish(topic, buf.rest(), qos, packet_id, bool(flags & 0x08), bool(flags & 0x01))
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        return Simple(kind, buf.u16())
    if kind == SUBSCRIBE:
        if flags != 0x02:
            raise ProtocolError("SUBSCRIBE flags must be 0010")
        sub = Subscribe(buf.u16())
        while buf.left:
            topic = buf.text()
            qos = buf.u8()
            if qos > 2:
                raise ProtocolError("SUBSCRIBE with requested QoS > 2")
            sub.topics.append((topic, qos))
        if not sub.topics:
            raise ProtocolError("SUBSCRIBE without a topic filter")
        return sub
    if kind == UNSUBSCRIBE:
        if flags != 0x02:
            raise ProtocolError("UNSUBSCRIBE flags must be 0010")
        unsub = Unsubscribe(buf.u16())
        while buf.left:
            unsub.topics.append(buf.text())
        if not unsub.topics:
            raise ProtocolError("UNSUBSCRIBE without a topic filter")
        return unsub
    if kind in (PINGREQ, PINGRESP, DISCONNECT):
        return Simple(kind)
    raise ProtocolError(f"packet type {kind} is not one a client sends")


# ---------------------------------------------------------------- writing
def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    """A whole packet: first byte, remaining length, body."""
    return bytes([first]) + _length(len(body)) + body


def connack(session_present: bool, code: int) -> bytes:
    return packet(CONNACK << 4, bytes([1 if session_present and code == ACCEPTED else 0, code]))


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None, dup: bool = False) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1)
    body = _text(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return packet((PUBLISH << 4) | flags, body)


def puback(packet_id: int) -> bytes:
    return packet(PUBACK << 4, struct.pack("!H", packet_id))


def suback(packet_id: int, codes: list[int]) -> bytes:
    return packet(SUBACK << 4, struct.pack("!H", packet_id) + bytes(codes))


def unsuback(packet_id: int) -> bytes:
    return packet(UNSUBACK << 4, struct.pack("!H", packet_id))


def pingresp() -> bytes:
    return packet(PINGRESP << 4, b"")


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT topic filter matching with `+` (one level) and `#` (the rest)."""
    fparts, tparts = filter_.split("/"), topic.split("/")
    for i, f in enumerate(fparts):
        if f == "#":
            return True
        if i >= len(tparts):
            return False
        if f != "+" and f != tparts[i]:
            return False
    return len(fparts) == len(tparts)


__all__ = [
    "ACCEPTED", "BAD_CREDENTIALS", "BAD_PROTOCOL", "Connect", "ID_REJECTED", "NOT_AUTHORIZED", "Packet",
    "ProtocolError", "Publish", "SERVER_UNAVAILABLE", "SUBACK_FAILURE", "Simple", "Subscribe", "Unsubscribe",
    "connack", "decode", "packet", "pingresp", "puback", "publish", "read_packet", "suback", "topic_matches",
    "unsuback",
]
