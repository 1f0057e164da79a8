"""What goes over the wire: events as IoT Hub delivers them, `$management` answers, starting positions.

An event carries what a message read from IoT Hub's built-in endpoint carries: the device's
body as a Data section; its message id, correlation id, user id, content type and encoding as
AMQP properties; its application properties; and the annotations IoT Hub and Event Hubs add
(`iothub-connection-device-id`, `iothub-connection-module-id`, `iothub-enqueuedtime`,
`iothub-message-source`, `x-opt-sequence-number`, `x-opt-offset`, `x-opt-enqueued-time`).
"""
from __future__ import annotations

import re
import time
from typing import Any

from proton import UNDESCRIBED, Array, Data, Message, int32, symbol, timestamp

from helpers.errors import ServiceError
from helpers.localcloud.eventhub.log import Event, PartitionInfo, Position

SELECTOR_FILTER = symbol("apache.org:selector-filter:string")
RUNTIME_METRIC = symbol("com.microsoft:enable-receiver-runtime-metric")
EVENTHUB_TYPE = "com.microsoft:eventhub"
PARTITION_TYPE = "com.microsoft:partition"

_SELECTOR = re.compile(r"^\s*amqp\.annotation\.(x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)\s*(>=|>)\s*'([^']*)'\s*$")
_FIELDS = {"x-opt-offset": "offset", "x-opt-sequence-number": "seq", "x-opt-enqueued-time": "enqueued"}


class BadRequest(ServiceError):
    """A request the endpoint refuses; `condition` is the AMQP error condition to send."""

    def __init__(self, message: str, condition: str = "com.microsoft:argument-error", status: int = 400):
        super().__init__(message, status)
        self.condition = condition


def parse_selector(selector: str | None) -> Position:
    """The starting position a receiver link's selector filter asks for (none: `@latest`, as Azure).

    Raises:
        BadRequest: not one of the filters the Event Hubs clients send.
    """
    if selector is None:
        return Position("offset", ">", 0, latest=True)
    m = _SELECTOR.match(selector)
    if not m:
        raise BadRequest(f"selector filter {selector[:120]!r} is not understood: use amqp.annotation.x-opt-offset, "
                         "x-opt-sequence-number or x-opt-enqueued-time with > or >= and a quoted value")
    name, op, raw = m.groups()
    if name == "x-opt-offset" and raw == "@latest":
        return Position("offset", op, 0, latest=True)
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"the {name} in the selector filter must be an integer (or '@latest' for the offset), "
                         f"not {raw[:40]!r}") from None
    return Position(_FIELDS[name], op, value)


def _ms(epoch_s: float) -> timestamp:
    """Epoch milliseconds, truncated as `log.EventLog` compares them (an event's time filters back to itself)."""
    return timestamp(int(epoch_s * 1000))


def event_message(event: Event, last: PartitionInfo | None = None) -> Message:
    """The AMQP message IoT Hub's built-in endpoint delivers for `event`.

    Args:
        last: the partition's last event, for the receiver runtime metric (delivery annotations
            `last_enqueued_*`) when the receiver asked for it.
    """
    msg = Message(body=event.body, inferred=True)  # inferred: bytes go out as a Data section
    system = event.system
    if system.get("mid"):
        msg.id = system["mid"]
    if system.get("cid"):
        msg.correlation_id = system["cid"]
    if system.get("uid"):
        msg.user_id = system["uid"].encode("utf-8")
    if system.get("ct"):
        msg.content_type = system["ct"]
    if system.get("ce"):
        msg.content_encoding = system["ce"]
    annotations: dict[Any, Any] = {
        symbol("iothub-connection-device-id"): event.device_id,
        symbol("iothub-enqueuedtime"): _ms(event.enqueued_at),
        symbol("iothub-message-source"): "Telemetry",
        symbol("x-opt-sequence-number"): event.seq,
        symbol("x-opt-offset"): event.offset,
        symbol("x-opt-enqueued-time"): _ms(event.enqueued_at),
    }
    if event.module_id:
        annotations[symbol("iothub-connection-module-id")] = event.module_id
    msg.annotations = annotations
    msg.properties = dict(event.properties)
    if last is not None:
        msg.instructions = {
            symbol("last_enqueued_sequence_number"): last.last_seq,
            symbol("last_enqueued_offset"): last.last_offset,
            symbol("last_enqueued_time_utc"): _ms(last.last_enqueued_at),
            symbol("runtime_info_retrieval_time_utc"): _ms(time.time()),
        }
    return msg


def eventhub_body(entity: str, created_at: float, partition_count: int) -> dict[str, Any]:
    """`$management` READ `com.microsoft:eventhub`: the entity's name, creation time and partitions."""
    return {"name": entity, "type": EVENTHUB_TYPE, "created_at": _ms(created_at), "partition_count": partition_count,
            "partition_ids": Array(UNDESCRIBED, Data.STRING, *[str(p) for p in range(partition_count)])}


def partition_body(entity: str, info: PartitionInfo) -> dict[str, Any]:
    """`$management` READ `com.microsoft:partition`: sequence numbers, last offset and time, emptiness."""
    return {"name": entity, "type": PARTITION_TYPE, "partition": str(info.partition),
            "begin_sequence_number": info.begin_seq, "last_enqueued_sequence_number": info.last_seq,
            "last_enqueued_offset": info.last_offset, "last_enqueued_time_utc": _ms(info.last_enqueued_at),
            "is_partition_empty": info.empty}


def reply(request: Message, status: int, description: str, body: Any = None) -> Message:
    """A management (or CBS) answer to `request`: its id as correlation id, status code and description."""
    msg = Message(body=body)
    msg.correlation_id = request.id
    # an AMQP int, as Event Hubs sends it: uamqp (azure-iot-hub) refuses a long
    msg.properties = {"status-code": int32(status), "status-description": description}
    return msg


__all__ = ["BadRequest", "EVENTHUB_TYPE", "PARTITION_TYPE", "RUNTIME_METRIC", "SELECTOR_FILTER", "event_message",
           "eventhub_body", "parse_selector", "partition_body", "reply"]
