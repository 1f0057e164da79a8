"""Cloud-to-device messages: each device's queue in the hub's SQLite store, as IoT Hub keeps it.

The service side (`azure-iot-hub`'s `IoTHubRegistryManager.send_c2d_message`, over AMQP: see
`helpers.localcloud.eventhub.devicebound`) enqueues; the MQTT endpoint delivers each queued
message on `devices/{id}/messages/devicebound/{properties}` with QoS 1 to the device once it
subscribed (`azure-iot-device`'s `receive_message` / `on_message_received`), and completes it
(removes it from the queue) on the device's PUBACK. A device that is offline finds its messages
when it connects again, until they expire.

IoT Hub's limits, kept here: at most `MAX_QUEUED` (50) messages wait per device (the next one is
refused: DeviceMaximumQueueDepthExceeded), a message is at most `MAX_MESSAGE_BYTES` (64 KB), and
it expires after its `absolute-expiry-time`, else after the hub's default TTL of one hour
(`DEFAULT_TTL_S`; at most two days). Feedback (`iothub-ack`) is not produced.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from helpers.localcloud.common.db import Store, dumps, loads
from helpers.localcloud.mqtt import codec as mc
from helpers.localcloud.mqtt.session import Session

log = logging.getLogger("helpers.localcloud.mqtt")

SCHEMA = """
CREATE TABLE IF NOT EXISTS c2d_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    system_properties TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS c2d_messages_device ON c2d_messages(device_id, id);
"""

MAX_QUEUED = 50  # IoT Hub: cloud-to-device messages waiting per device
MAX_MESSAGE_BYTES = 64 * 1024  # IoT Hub: the largest cloud-to-device message
DEFAULT_TTL_S = 3600.0  # IoT Hub's default time to live of a cloud-to-device message
MAX_TTL_S = 2 * 24 * 3600.0  # and the longest one it takes
#: system properties, as the device's MQTT topic names them (`$.mid`...)
TOPIC_KEYS = {"message_id": "$.mid", "correlation_id": "$.cid", "user_id": "$.uid", "to": "$.to",
              "content_type": "$.ct", "content_encoding": "$.ce", "expiry": "$.exp"}


_listeners: list[Callable[[str], None]] = []
_listeners_lock = threading.Lock()


def on_enqueue(listener: Callable[[str], None]) -> Callable[[], None]:
    """Call `listener(device_id)` after each message queued in this process; returns the unsubscribe call."""
    with _listeners_lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _listeners_lock:
            if listener in _listeners:
                _listeners.remove(listener)
    return unsubscribe


class Refused(Exception):
    """A message the hub does not queue: `condition` is the AMQP error condition to answer with."""

    def __init__(self, condition: str, message: str):
        super().__init__(message)
        self.condition = condition


@dataclass(frozen=True)
class DeviceboundMessage:
    """One queued message: its id in the queue, device, system and application properties, body."""

    id: int
    device_id: str
    body: bytes
    system: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)

    def topic(self) -> str:
        """`devices/{id}/messages/devicebound/{properties}`: application, then system properties, each
        percent-encoded whole (a `/` in a value would split the topic where the device SDK reads it)."""
        pairs = list(self.properties.items()) + [(TOPIC_KEYS[k], v) for k, v in self.system.items() if k in TOPIC_KEYS]
        bag = "&".join(f"{urllib.parse.quote(k, safe='$.')}={urllib.parse.quote(v, safe='')}" for k, v in pairs)
        return f"devices/{self.device_id}/messages/devicebound/{bag}"


class DeviceboundQueues:
    """The per-device queues of cloud-to-device messages in the hub's store.

    Args:
        store: the local cloud's SQLite store (the `devices` table says which devices exist).
        max_queued: messages waiting per device before the next is refused.
    """

    def __init__(self, store: Store, max_queued: int = MAX_QUEUED):
        self.store = store
        self.max_queued = max_queued
        with self.store.tx() as conn:
            for stmt in SCHEMA.strip().split(";"):  # statement by statement, inside the transaction
                if stmt.strip():
                    conn.execute(stmt)

    def enqueue(self, device_id: str, body: bytes, system: dict[str, str] | None = None,
                properties: dict[str, str] | None = None, expires_at: float | None = None,
                now: float | None = None) -> int:
        """Queue a message for `device_id` (committed before the sender hears it was accepted); its id.

        Raises:
            Refused: the device does not exist, its queue is full, the message is too large or expired.
        """
        current = time.time() if now is None else now
        if len(body) > MAX_MESSAGE_BYTES:
            raise Refused("amqp:link:message-size-exceeded", f"the message has {len(body)} bytes, over IoT Hub's "
                          f"{MAX_MESSAGE_BYTES // 1024} KB limit for a cloud-to-device message")
        expiry = current + DEFAULT_TTL_S if expires_at is None else min(float(expires_at), current + MAX_TTL_S)
        if expiry <= current:
            raise Refused("amqp:precondition-failed", "the message's expiry time (expiryTimeUtc) has passed already")
        with self.store.tx() as conn:
            if conn.execute("SELECT 1 FROM devices WHERE device_id=?", (device_id,)).fetchone() is None:
                raise Refused("amqp:not-found", f"DeviceNotFound: device {device_id!r} is not registered in this hub")
            conn.execute("DELETE FROM c2d_messages WHERE device_id=? AND expires_at <= ?", (device_id, current))
            waiting = conn.execute("SELECT COUNT(*) FROM c2d_messages WHERE device_id=?", (device_id,)).fetchone()[0]
            if waiting >= self.max_queued:
                raise Refused("amqp:resource-limit-exceeded", f"DeviceMaximumQueueDepthExceeded: {waiting} messages wait "
                              f"for device {device_id!r}, IoT Hub's limit is {self.max_queued}; the device takes them "
                              "when it connects and receives (or they expire)")
            cur = conn.execute("INSERT INTO c2d_messages(device_id, enqueued_at, expires_at, system_properties, properties, "
                               "body) VALUES(?,?,?,?,?,?)", (device_id, current, expiry, dumps(system or {}),
                                                             dumps(properties or {}), body))
        with _listeners_lock:
            listeners = list(_listeners)
        for listener in listeners:  # committed: the MQTT endpoint may deliver it now
            listener(device_id)
        return int(cur.lastrowid)

    def waiting(self, device_ids: list[str], now: float | None = None) -> list[DeviceboundMessage]:
        """The unexpired messages waiting for these devices, oldest first."""
        if not device_ids:
            return []
        current = time.time() if now is None else now
        marks = ",".join("?" * len(device_ids))
        with self.store.read() as conn:
            rows = conn.execute(f"SELECT id, device_id, system_properties, properties, body FROM c2d_messages "
                                f"WHERE device_id IN ({marks}) AND expires_at > ? ORDER BY id", (*device_ids, current)).fetchall()
        return [DeviceboundMessage(int(r["id"]), str(r["device_id"]), bytes(r["body"]), loads(r["system_properties"], {}),
                                   loads(r["properties"], {})) for r in rows]

    def complete(self, message_id: int) -> None:
        """The device acknowledged the message: it leaves the queue."""
        with self.store.tx() as conn:
            conn.execute("DELETE FROM c2d_messages WHERE id=?", (int(message_id),))

    def purge(self, device_id: str) -> int:
        """Drop every message waiting for a device (`az iot device c2d-message purge`); how many."""
        with self.store.tx() as conn:
            return conn.execute("DELETE FROM c2d_messages WHERE device_id=?", (device_id,)).rowcount


class DeviceboundDelivery:
    """The MQTT side: queued messages published to the devices subscribed to them, completed on PUBACK.

    Runs on the broker's event loop; `pump` runs every `poll_s`, and at once when a message is queued
    in this process (`on_enqueue`: the AMQP endpoint runs in the broker's process).
    Each message is in flight at most once per session (its packet id -> queue id, kept per
    client id, so a persistent session's redelivery after a reconnect completes it too).
    """

    def __init__(self, queues: DeviceboundQueues, poll_s: float = 0.2):
        self.queues = queues
        self.poll_s = poll_s
        self.sent: dict[str, dict[int, int]] = {}  # client id -> packet id -> queue id
        # acknowledged, their removal from the queue maybe not committed yet: never sent again
        self.completing: set[int] = set()

    async def pump(self, sessions: Iterable[Session]) -> None:
        """Publish what waits for each connected device that subscribed to its devicebound topic."""
        ready = {s.ident.device_id: s for s in sessions if s.ident.module_id is None and s.conn is not None
                 and not s.conn.closed and s.granted(f"devices/{s.ident.device_id}/messages/devicebound/x") is not None}
        if not ready:
            return
        loop = asyncio.get_running_loop()
        waiting = await loop.run_in_executor(None, self.queues.waiting, list(ready))
        # an id no longer waiting was removed for good; one still listed may be acknowledged meanwhile
        self.completing &= {msg.id for msg in waiting}
        for msg in waiting:
            s = ready[msg.device_id]
            sent = self.sent.setdefault(s.client_id, {})
            for pid in [p for p in sent if p not in s.inflight]:  # dropped by the in-flight limit: send it again
                del sent[pid]
            if msg.id in self.completing or msg.id in sent.values() or s.conn is None or s.conn.closed:
                continue
            topic = msg.topic()
            if s.granted(topic) == 0:  # QoS 0: delivered once, completed at once (IoT Hub's device SDKs ask for 1)
                await s.conn.send(mc.publish(topic, msg.body, 0))
                await loop.run_in_executor(None, self.queues.complete, msg.id)
                continue
            if not s.room_for(msg.body):
                continue  # the device has enough unacknowledged messages: the rest waits for the next round
            pid = s.next_pid()
            s.inflight[pid] = (topic, msg.body, 1)
            sent[pid] = msg.id
            log.debug("%s: cloud-to-device message %d sent (packet %d)", s.client_id, msg.id, pid)
            await s.conn.send(mc.publish(topic, msg.body, 1, pid))

    async def acked(self, s: Session, pid: int) -> None:
        """The device's PUBACK for packet `pid`: a cloud-to-device message leaves its queue."""
        queue_id = self.sent.get(s.client_id, {}).pop(pid, None)
        if queue_id is not None:
            self.completing.add(queue_id)
            await asyncio.get_running_loop().run_in_executor(None, self.queues.complete, queue_id)

    def forget(self, client_id: str) -> None:
        """A session ended (clean): what it had in flight is sent again to its next session."""
        self.sent.pop(client_id, None)


__all__ = ["DEFAULT_TTL_S", "DeviceboundDelivery", "MAX_MESSAGE_BYTES", "MAX_QUEUED", "DeviceboundMessage", "DeviceboundQueues", "Refused"]
