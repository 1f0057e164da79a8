"""Device telemetry read from IoT Hub's built-in Event Hubs-compatible endpoint, with `azure-eventhub`.

The same call reads Azure's hub and the local stand-in: it takes the endpoint's connection
string (Azure portal: IoT Hub > Built-in endpoints > Event Hub-compatible endpoint; the stand-in:
`helpers.endpoints.local_eventhub(ws)` or `python -m helpers.localcloud credentials`) and, for
the stand-in, its CA file::

    from helpers.hub.telemetry import read_telemetry
    for t in read_telemetry(cs, ca_file, max_events=10, timeout_s=10):
        print(t.device_id, t.module_id, t.json, t.properties, t.enqueued_time)

A read is bounded: it returns after `max_events` events or `timeout_s` seconds, whichever
comes first, and closes its client.
"""
from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import Secret, mask
from helpers.errors import ConfigError, ServiceError, ServiceUnavailable, Unauthorized

DEFAULT_CONSUMER_GROUP = "$Default"


@dataclass(frozen=True)
class Telemetry:
    """One device-to-cloud message as the built-in endpoint delivers it."""

    device_id: str | None
    module_id: str | None
    body: bytes
    properties: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    enqueued_time: dt.datetime | None = None
    sequence_number: int | None = None
    offset: str | None = None
    partition_id: str | None = None

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _body(body: Any) -> bytes:
    """A Data body as bytes (`EventData.body` is bytes, or an iterable of bytes sections)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return b"".join(bytes(section) for section in body)


def _from_event(event: Any, partition_id: str) -> Telemetry:
    system = event.system_properties or {}
    return Telemetry(
        device_id=_text(system.get(b"iothub-connection-device-id")),
        module_id=_text(system.get(b"iothub-connection-module-id")),
        body=_body(event.body),
        properties={_text(k) or "": _text(v) or "" for k, v in (event.properties or {}).items()},
        message_id=_text(system.get(b"message-id")),
        correlation_id=_text(system.get(b"correlation-id")),
        content_type=_text(system.get(b"content-type")),
        content_encoding=_text(system.get(b"content-encoding")),
        enqueued_time=event.enqueued_time,
        sequence_number=event.sequence_number,
        offset=_text(event.offset),
        partition_id=partition_id,
    )


def _client_error(exc: Exception) -> ServiceError:
    """An `azure-eventhub` failure as our error, naming the fix."""
    from azure.eventhub.exceptions import AuthenticationError, ConnectError, ConnectionLostError

    text = mask(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if isinstance(exc, AuthenticationError):
        return Unauthorized(f"the Event Hubs-compatible endpoint refused the credential ({text}): copy the endpoint's "
                            "connection string again (its SharedAccessKey is the hub's iothubowner key)", 401)
    if isinstance(exc, (ConnectError, ConnectionLostError)):
        return ServiceUnavailable(f"cannot reach the Event Hubs-compatible endpoint ({text}): check the Endpoint of the "
                                  "connection string, that the hub (or `python -m helpers.localcloud start`) runs, "
                                  "and the CA file for the local stand-in", 0)
    return ServiceError(f"reading telemetry failed: {text}")


def read_telemetry(connection_string: str | Secret, ca_file: str | Path | None = None, *,
                   consumer_group: str = DEFAULT_CONSUMER_GROUP, starting_position: Any = "-1",
                   inclusive: bool = False, partition_id: str | None = None, device_id: str | None = None,
                   max_events: int | None = None, timeout_s: float = 10.0, retries: int = 2,
                   keep: Callable[[Telemetry], bool] | None = None,
                   until: Callable[[list[Telemetry]], bool] | None = None) -> list[Telemetry]:
    """Read device telemetry from an Event Hubs-compatible endpoint; bounded in count and time.

    Args:
        connection_string: `Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...;EntityPath=...`.
        ca_file: the CA certificate to trust for the endpoint (the local stand-in's); None: the system's.
        consumer_group: the consumer group to read as (`$Default`).
        starting_position: `"-1"` (the start of each partition), `"@latest"` (only new events), an
            offset string, a sequence number (int), a `datetime` (enqueued after), or a dict of those by
            partition id, as `EventHubConsumerClient.receive` takes it.
        inclusive: whether the event at `starting_position` itself is read.
        partition_id: read one partition only; None: all of them.
        device_id: keep only this device's events (the others are read and dropped).
        max_events: return once this many (kept) events arrived; None: read until `timeout_s`.
        timeout_s: the most seconds the read takes after connecting.
        retries: how often the client retries a failed operation.
        keep: keep only the events for which this returns True (after `device_id`'s filter).
        until: return as soon as this returns True for the events kept so far (called on each kept event).

    Returns:
        The events in arrival order (per partition in sequence order).

    Raises:
        ConfigError: `ca_file` does not exist or a bound is not positive.
        Unauthorized: the endpoint refused the credential.
        ServiceUnavailable: the endpoint could not be reached.
    """
    from azure.eventhub import EventHubConsumerClient
    from azure.eventhub.exceptions import EventHubError

    if timeout_s <= 0 or (max_events is not None and max_events <= 0):
        raise ConfigError(f"read_telemetry needs timeout_s > 0 and max_events > 0 or None (got {timeout_s}, {max_events})")
    if ca_file is not None and not Path(ca_file).is_file():
        raise ConfigError(f"CA file {ca_file} does not exist: pass the file `local_eventhub(ws).ca_file` names "
                          "(or None for a hub on Azure)")
    cs = connection_string.get_secret_value() if isinstance(connection_string, Secret) else str(connection_string)
    kwargs: dict[str, Any] = {"retry_total": retries}
    if ca_file is not None:
        kwargs["connection_verify"] = str(ca_file)
    try:
        client = EventHubConsumerClient.from_connection_string(cs, consumer_group, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"not an Event Hubs connection string ({mask(str(exc))}): it reads "
                          "Endpoint=sb://HOST/;SharedAccessKeyName=...;SharedAccessKey=...;EntityPath=NAME") from None
    got: list[Telemetry] = []
    errors: list[Exception] = []
    done = threading.Event()
    lock = threading.Lock()

    def on_event(context: Any, event: Any) -> None:
        if event is None or done.is_set():
            return
        item = _from_event(event, context.partition_id)
        if device_id is not None and item.device_id != device_id:
            return
        if keep is not None and not keep(item):
            return
        with lock:
            got.append(item)
            if (max_events is not None and len(got) >= max_events) or (until is not None and until(got)):
                done.set()

    def on_error(_context: Any, exc: Exception) -> None:
        errors.append(exc)

    workers: list[threading.Thread] = []
    try:
        ids = client.get_partition_ids()  # a wrong key or endpoint fails here, not silently inside receive()
        # one receive() per partition, each in its thread: the synchronous pyamqp consumer of all partitions
        # waits out its socket timeout on every idle partition between two events of a busy one
        # (Azure/azure-sdk-for-python#27314), which makes reading a backlog crawl on Azure too
        for pid in [partition_id] if partition_id is not None else ids:
            worker = threading.Thread(target=client.receive, name="read-telemetry", daemon=True, kwargs={
                "on_event": on_event, "on_error": on_error, "partition_id": pid, "starting_position": starting_position,
                "starting_position_inclusive": inclusive, "max_wait_time": 0.5})
            worker.start()
            workers.append(worker)
        done.wait(timeout_s)
    except EventHubError as exc:
        raise _client_error(exc) from None
    finally:
        done.set()
        client.close()  # ends receive() in the workers
    for worker in workers:
        worker.join(15)
    with lock:
        result = list(got)
    if not result and errors:
        raise _client_error(errors[-1])
    return result[:max_events] if max_events is not None else result


__all__ = ["DEFAULT_CONSUMER_GROUP", "Telemetry", "read_telemetry"]
