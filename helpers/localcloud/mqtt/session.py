"""An MQTT session as IoT Hub keeps it (subscriptions, messages awaiting PUBACK), its connection, topic helpers."""
from __future__ import annotations

import asyncio
import itertools
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from helpers.localcloud.common.limits import MQTT_MAX_INFLIGHT, MQTT_MAX_INFLIGHT_BYTES, MQTT_MAX_QUEUED_BYTES, count_refusal
from helpers.localcloud.mqtt import codec as mc
from helpers.localcloud.mqtt.store import Identity

log = logging.getLogger("helpers.localcloud.mqtt")


class MethodError(Exception):
    """A direct method could not be delivered or answered: IoT Hub's status and error code."""

    def __init__(self, status: int, error_code: int, message: str):
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


@dataclass
class Session:
    """An MQTT session: its subscriptions, the connection carrying it, messages awaiting PUBACK.

    At most `MQTT_MAX_INFLIGHT` messages (`MQTT_MAX_INFLIGHT_BYTES`) await a PUBACK; the broker closes
    a session's connection that would go over (`room_for`) and drops what it held.
    """

    client_id: str
    ident: Identity
    subscriptions: dict[str, int] = field(default_factory=dict)
    conn: Connection | None = None
    inflight: dict[int, tuple[str, bytes, int]] = field(default_factory=dict)
    pid_counter: Any = field(default_factory=lambda: itertools.count(1))
    desired_base: tuple[dict[str, Any], int] | None = None
    clean: bool = False

    def next_pid(self) -> int:
        for _ in range(65535):
            pid = (next(self.pid_counter) - 1) % 65535 + 1
            if pid not in self.inflight:
                return pid
        raise RuntimeError("65535 messages awaiting PUBACK")

    def room_for(self, payload: bytes) -> bool:
        """Whether one more QoS 1 message of `payload` stays within the session's in-flight limits."""
        held = sum(len(p) for _, p, _ in self.inflight.values())
        return len(self.inflight) < MQTT_MAX_INFLIGHT and held + len(payload) <= MQTT_MAX_INFLIGHT_BYTES

    def granted(self, topic: str) -> int | None:
        best = None
        for flt, qos in self.subscriptions.items():
            if mc.topic_matches(flt, topic):
                best = qos if best is None else max(best, qos)
        return best


class Connection:
    """One client's network connection (writes serialised)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self._lock = asyncio.Lock()
        self.closed = False
        self.peer: Any = writer.get_extra_info("peername")

    async def send(self, data: bytes) -> None:
        """Queue `data` for the client; a client that lets more than `MQTT_MAX_QUEUED_BYTES` pile up
        unread is closed (and counted), so no sender ever waits on a client that does not read."""
        if self.closed:
            return
        async with self._lock:
            self.writer.write(data)
            queued = self.writer.transport.get_write_buffer_size()
            if queued > MQTT_MAX_QUEUED_BYTES:
                count_refusal("mqtt_queued_bytes")
                log.warning("%s: %d bytes sent to it and not read, over the %d byte limit: closing its connection",
                            self.peer, queued, MQTT_MAX_QUEUED_BYTES)
                self.close(abort=True)

    def close(self, abort: bool = False) -> None:
        """Close the connection: flushing what is queued, or (`abort`) dropping it at once, for a
        client that reads nothing (a graceful close would hold its unread bytes until a timeout)."""
        if not self.closed:
            self.closed = True
            if abort:
                self.writer.transport.abort()
            else:
                self.writer.close()


def topic_query(topic: str) -> dict[str, str]:
    _, _, q = topic.partition("?")
    return dict(urllib.parse.parse_qsl(q, keep_blank_values=True))


def split_message_props(props: str) -> tuple[dict[str, str], dict[str, str]]:
    """System (`$.mid`...) and application properties of a telemetry topic's property bag."""
    system: dict[str, str] = {}
    app: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(props, keep_blank_values=True):
        if key.startswith("$."):
            system[key[2:]] = value
        else:
            app[key] = value
    return system, app


__all__ = ["Connection", "MethodError", "Session", "split_message_props", "topic_query"]
