"""The built-in endpoint's AMQP server: the `python-qpid-proton` engine behind an asyncio TLS listener.

What it answers, as Event Hubs does for the clients:
- SASL ANONYMOUS over TLS (the workspace CA's certificate for the hub's address), then
- `$cbs`: `put-token` with a SAS token of the hub's `iothubowner` policy (checked by
  `auth.TokenChecker`); status 200, or 401 naming what is wrong;
- `$management`: READ of `com.microsoft:eventhub` (name, creation time, partition ids) and
  `com.microsoft:partition` (sequence numbers, last offset and time), each request carrying
  its own `security_token`;
- receiver links on `<entity>/ConsumerGroups/<group>/Partitions/<n>` of a connection that put a
  token for the entity, starting where the link's selector filter says, delivering pre-settled
  events as link credit allows. New messages are picked up every `poll_s`;
- SASL `MSSBCBS` beside `ANONYMOUS` (`sasl`), a `$cbs` token of the hub itself (IoT Hub's service
  token) and sender links to `/messages/devicebound`: cloud-to-device messages (`devicebound`),
  each accepted into its device's queue or rejected with IoT Hub's reason.

Links it refuses are attached and at once detached with the AMQP error condition and a message
(`amqp:unauthorized-access`, `amqp:not-found`, `amqp:not-allowed`), as Event Hubs does.

Proton does all of AMQP (SASL, framing, sessions, links, flow control, message encoding); its
engine (`Transport` + `Collector`) is driven here from an asyncio TLS server, like the MQTT
endpoint's, so the outgoing frames can pass `frames.FramePadder` on their way out (see there
why). One thread runs the loop, the engine and the handler; nothing else touches them.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from proton import (
    Collector,
    Condition,
    Connection,
    Data,
    Delivery,
    Endpoint,
    Handler,
    Link,
    Message,
    Transport,
    TransportException,
)

from helpers.config import Secret, parse_connection_string
from helpers.endpoints import read_credentials
from helpers.errors import ConfigError, ServiceError
from helpers.localcloud.common import tls
from helpers.localcloud.common.auth import SERVICE_POLICY
from helpers.localcloud.eventhub.auth import Grant, TokenChecker
from helpers.localcloud.eventhub.devicebound import DEVICEBOUND, ServiceTokenChecker, enqueue, is_devicebound, is_hub_token
from helpers.localcloud.eventhub.frames import FrameError, FramePadder
from helpers.localcloud.eventhub.groups import ConsumerGroups
from helpers.localcloud.eventhub.log import DEFAULT_CONSUMER_GROUP, EventLog
from helpers.localcloud.eventhub.sasl import SaslInbound, offer_cbs
from helpers.localcloud.eventhub.wire import (
    EVENTHUB_TYPE,
    PARTITION_TYPE,
    SELECTOR_FILTER,
    BadRequest,
    event_message,
    eventhub_body,
    parse_selector,
    partition_body,
    reply,
)
from helpers.localcloud.mqtt.devicebound import DeviceboundQueues, Refused

log = logging.getLogger("helpers.localcloud.eventhub")

AMQPS_PORT = 5671  # the Event Hubs clients connect to 5671 (AMQP over TLS) of the endpoint's host
NODES = ("$cbs", "$management")
CREDIT = 100  # link credit granted to a client's request links ($cbs, $management)


@dataclass
class _Consumer:
    """A receiver link's partition, where it has got to, and whether it asked for runtime metrics."""

    partition: int
    cursor: int
    metrics: bool


@dataclass
class _Conn:
    """Per connection: its grants (from CBS) and its reply links by node."""

    grants: list[Grant] = field(default_factory=list)
    replies: dict[str, Any] = field(default_factory=dict)


def _obj(data: Any) -> Any:
    """A proton `Data` (a terminus filter) as a Python object, or None when empty."""
    if data is None:
        return None
    if not isinstance(data, Data):
        return data
    data.rewind()
    return data.get_object() if data.next() else None


class EventHubHandler(Handler):
    """The proton event handler: connections, links, CBS, `$management` and event delivery."""

    def __init__(self, endpoint: EventHubEndpoint):
        super().__init__()
        self.ep = endpoint
        self.consumers: dict[Any, _Consumer] = {}
        self.devicebound: set[Any] = set()  # services' sender links to /messages/devicebound
        self._conns: dict[Any, _Conn] = {}

    # ------------------------------------------------------------ new messages
    def poll(self) -> None:
        """Index messages stored since the last poll and send them to receivers with credit."""
        self.ep.log.index_new()
        for link in list(self.consumers):
            self._pump(link)

    # ------------------------------------------------------------ connections and sessions
    def on_connection_remote_open(self, event: Any) -> None:
        conn = event.connection
        self._conns[conn] = _Conn()
        if conn.state & Endpoint.LOCAL_UNINIT:
            conn.container = f"edgeloop-eventhub-{self.ep.entity}"
            conn.open()

    def on_connection_remote_close(self, event: Any) -> None:
        self.forget(event.connection)
        if not event.connection.state & Endpoint.LOCAL_CLOSED:
            event.connection.close()

    def on_transport_closed(self, event: Any) -> None:
        if event.connection is not None:
            self.forget(event.connection)

    def on_transport_error(self, event: Any) -> None:
        cond = event.transport.condition
        text = f"{cond.name}: {cond.description}" if cond else "transport error"
        # pyamqp detaches a session's links after ending it when it closes: "no such channel", harmless
        log.log(logging.DEBUG if "no such channel" in text else logging.INFO, "AMQP connection ended: %s", text)

    def forget(self, conn: Any) -> None:
        """Drop what is kept for a connection that ended."""
        self._conns.pop(conn, None)
        for link in [lk for lk in self.consumers if lk.connection == conn]:
            self.consumers.pop(link, None)
        self.devicebound = {lk for lk in self.devicebound if lk.connection != conn}

    def on_session_remote_open(self, event: Any) -> None:
        if event.session.state & Endpoint.LOCAL_UNINIT:
            event.session.open()

    def on_session_remote_close(self, event: Any) -> None:
        if not event.session.state & Endpoint.LOCAL_CLOSED:
            event.session.close()

    # ------------------------------------------------------------ links
    def on_link_remote_open(self, event: Any) -> None:
        link = event.link
        if not link.state & Endpoint.LOCAL_UNINIT:
            return
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        state = self._conns.setdefault(link.connection, _Conn())
        if link.is_receiver:  # the client sends: requests to $cbs / $management, or events (refused)
            address = link.remote_target.address or ""
            if address in NODES:
                link.open()
                link.flow(CREDIT)
                return
            if self.ep.queues is not None and self.ep.service_checker is not None and \
                    is_devicebound(address, self.ep.service_checker.hosts):
                if not any(g.covers(DEVICEBOUND) for g in state.grants):
                    self._refuse(link, "amqp:unauthorized-access", "Unauthorized: put a SAS token of the hub's service "
                                 "policy (sr = the hub's host name) on $cbs before sending to /messages/devicebound")
                    return
                self.devicebound.add(link)
                link.open()
                link.flow(CREDIT)
                return
            self._refuse(link, "amqp:not-allowed", f"the built-in endpoint is read-only (Listen): it takes no events "
                         f"on {address!r}; devices send telemetry to the hub over MQTT or AMQP")
            return
        address = link.remote_source.address or ""
        if address in NODES:
            link.snd_settle_mode = Link.SND_SETTLED
            state.replies[address] = link
            link.open()
            return
        try:
            partition, group, resource = self._resolve(address)
            if not any(g.covers(resource) for g in state.grants):
                raise BadRequest(f"Unauthorized access: 'Listen' claim required for {address!r}. Put a SAS token for "
                                 f"sb://{self.ep.address}/{self.ep.entity} on $cbs first (the Event Hubs clients do)",
                                 "amqp:unauthorized-access", 401)
            flt = _obj(link.remote_source.filter) or {}
            selector = flt.get(SELECTOR_FILTER)
            position = parse_selector(None if selector is None else str(getattr(selector, "value", selector)))
            self.ep.log.index_new()
            cursor = self.ep.log.start_cursor(partition, position)
        except BadRequest as exc:
            self._refuse(link, exc.condition, str(exc))
            return
        link.snd_settle_mode = Link.SND_SETTLED
        link.open()
        # proton does not expose a link's desired capabilities, so the receiver runtime metric
        # (`com.microsoft:enable-receiver-runtime-metric`) is always sent; clients that did not
        # ask for it ignore the delivery annotations
        self.consumers[link] = _Consumer(partition, cursor, metrics=True)
        log.info("receiver on %s/ConsumerGroups/%s/Partitions/%d from sequence number %d", self.ep.entity, group,
                 partition, cursor + 1)

    def _resolve(self, address: str) -> tuple[int, str, str]:
        """(partition, consumer group) of a receiver's source `[amqps://<host>/]<entity>/ConsumerGroups/<group>/Partitions/<n>`."""
        if "://" in address:
            url = urlsplit(address)
            if (url.hostname or "").lower() not in self.ep.checker.hosts:
                raise BadRequest(f"source {address!r} names host {url.hostname!r}, not this endpoint {self.ep.address}",
                                 "amqp:not-found", 404)
            address = url.path
        parts = address.strip("/").split("/")
        if len(parts) != 5 or parts[1].lower() != "consumergroups" or parts[3].lower() != "partitions":
            raise BadRequest(f"source {address!r} is not <entity>/ConsumerGroups/<group>/Partitions/<n>", "amqp:not-found", 404)
        entity, group, raw = parts[0], parts[2], parts[4]
        if entity.lower() != self.ep.entity.lower():
            raise BadRequest(f"The messaging entity {entity!r} could not be found; this hub's Event Hubs-compatible name "
                             f"is {self.ep.entity!r}", "amqp:not-found", 404)
        groups = self.ep.current_groups()
        if group.lower() not in {g.lower() for g in groups}:
            raise BadRequest(f"consumer group {group!r} does not exist on {self.ep.entity!r}; the groups are "
                             f"{', '.join(groups)} (python -m helpers.localcloud consumer-group create NAME)",
                             "amqp:not-found", 404)
        if not raw.isdigit() or int(raw) >= self.ep.log.partition_count:
            raise BadRequest(f"partition {raw!r} does not exist: the partitions are 0..{self.ep.log.partition_count - 1}",
                             "amqp:not-found", 404)
        return int(raw), group, "/".join(parts)

    def _refuse(self, link: Any, condition: str, description: str) -> None:
        log.warning("refused link %r: %s", link.name, description)
        link.condition = Condition(condition, description)
        link.open()
        link.close()

    def on_link_remote_close(self, event: Any) -> None:
        link = event.link
        self.consumers.pop(link, None)
        self.devicebound.discard(link)
        state = self._conns.get(link.connection)
        if state is not None:
            for node, lk in list(state.replies.items()):
                if lk == link:
                    state.replies.pop(node, None)
        if not link.state & Endpoint.LOCAL_CLOSED:
            link.close()

    def on_link_flow(self, event: Any) -> None:
        if event.link in self.consumers:
            self._pump(event.link)

    def _pump(self, link: Any) -> None:
        consumer = self.consumers.get(link)
        if consumer is None or link.credit <= 0 or not link.state & Endpoint.LOCAL_ACTIVE:
            return
        events = self.ep.log.read(consumer.partition, consumer.cursor, min(link.credit, 500))
        if not events:
            return
        last = self.ep.log.partition_info(consumer.partition) if consumer.metrics else None
        for ev in events:
            delivery = link.send(event_message(ev, last))
            delivery.settle()
            consumer.cursor = ev.seq

    # ------------------------------------------------------------ requests: $cbs and $management
    def on_delivery(self, event: Any) -> None:
        link, delivery = event.link, event.delivery
        if not link.is_receiver or not delivery.readable or delivery.partial:
            return
        msg = Message()
        msg.decode(link.recv(delivery.pending))
        link.advance()
        if link in self.devicebound:
            self._devicebound(link, delivery, msg)
            return
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        if link.credit < CREDIT // 2:
            link.flow(CREDIT - link.credit)
        node = link.remote_target.address or ""
        answer = self._cbs(link.connection, msg) if node == "$cbs" else self._management(msg)
        sender = self._conns.get(link.connection, _Conn()).replies.get(node)
        if sender is None or not sender.state & Endpoint.LOCAL_ACTIVE:
            log.warning("%s request without a link to answer on: dropped", node)
            return
        sender.send(answer).settle()

    def _devicebound(self, link: Any, delivery: Any, msg: Message) -> None:
        """A cloud-to-device message from a service: queued for its device (accepted), or rejected with the reason."""
        try:
            queued = enqueue(self.ep.queues, msg)
            delivery.update(Delivery.ACCEPTED)
            log.info("cloud-to-device message queued (%d) for %s", queued, msg.address)
        except Refused as exc:
            log.warning("cloud-to-device message refused: %s", exc)
            delivery.local.condition = Condition(exc.condition, str(exc))
            delivery.update(Delivery.REJECTED)
        delivery.settle()
        if link.credit < CREDIT // 2:
            link.flow(CREDIT - link.credit)

    def _cbs(self, conn: Any, msg: Message) -> Message:
        props = msg.properties or {}
        if props.get("operation") != "put-token":
            return reply(msg, 400, f"$cbs takes operation put-token, not {props.get('operation')!r}")
        hub_token = self.ep.service_checker is not None and is_hub_token(str(msg.body))
        checker = self.ep.service_checker if hub_token else self.ep.checker
        try:
            grant = checker.check(str(msg.body), str(props.get("type") or ""))
        except ServiceError as exc:
            log.warning("CBS put-token refused: %s", exc)
            return reply(msg, 401, str(exc))
        self._conns.setdefault(conn, _Conn()).grants.append(grant)
        return reply(msg, 200, "OK")

    def _management(self, msg: Message) -> Message:
        props = msg.properties or {}
        try:
            self.ep.checker.check(str(props.get("security_token") or ""))
        except ServiceError as exc:
            return reply(msg, 401, str(exc))
        if props.get("operation") != "READ":
            return reply(msg, 400, f"$management takes operation READ, not {props.get('operation')!r}")
        name = str(props.get("name") or "")
        if name.lower() != self.ep.entity.lower():
            return reply(msg, 404, f"The messaging entity {name!r} could not be found; this hub's Event Hubs-compatible "
                                   f"name is {self.ep.entity!r}")
        kind = props.get("type")
        if kind == EVENTHUB_TYPE:
            return reply(msg, 200, "OK", eventhub_body(self.ep.entity, self.ep.created_at, self.ep.log.partition_count))
        if kind == PARTITION_TYPE:
            raw = str(props.get("partition") or "")
            if not raw.isdigit() or int(raw) >= self.ep.log.partition_count:
                return reply(msg, 400, f"partition {raw!r} does not exist: the partitions are "
                                       f"0..{self.ep.log.partition_count - 1}")
            self.ep.log.index_new()
            return reply(msg, 200, "OK", partition_body(self.ep.entity, self.ep.log.partition_info(int(raw))))
        return reply(msg, 400, f"$management READ type {kind!r} is not {EVENTHUB_TYPE} or {PARTITION_TYPE}")


def _listen_error(address: str, port: int, exc: OSError) -> ConfigError:
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} on {address} is taken by another process, and the Event Hubs clients connect to "
                           f"port {port}: stop that process (find it with `ss -ltnp 'sport = :{port}'`) or give this "
                           "workspace another loopback address")
    return ConfigError(f"cannot listen on {address}:{port} for AMQP: {exc}")


class _AmqpConnection:
    """One client connection: proton's engine fed from the TLS stream, its output padded and written back."""

    def __init__(self, handler: EventHubHandler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.handler = handler
        self.reader = reader
        self.writer = writer
        self.collector = Collector()
        self.connection = Connection()
        self.connection.collect(self.collector)
        self.transport = Transport(Transport.SERVER)
        self.transport.sasl().allowed_mechs("ANONYMOUS")  # the Event Hubs clients use CBS after SASL ANONYMOUS
        self.transport.bind(self.connection)
        self.padder = FramePadder(rewrite=offer_cbs)  # and uamqp (azure-iot-hub) after MSSBCBS (see sasl)
        self.inbound = SaslInbound()

    def flush(self) -> None:
        """Dispatch the engine's events to the handler, then write what the engine has to send."""
        while True:
            event = self.collector.peek()
            if event is None:
                break
            event.dispatch(self.handler)
            self.collector.pop()
        while True:
            pending = self.transport.pending()
            if pending <= 0:
                if pending < 0 and not self.writer.is_closing():  # the engine is done sending
                    self.writer.close()
                break
            data = self.transport.peek(pending)
            self.transport.pop(len(data))
            if self.writer.is_closing():  # the client went away: nothing more reaches it
                continue
            self.writer.write(self.padder.feed(data))

    async def serve(self) -> None:
        try:
            self.flush()
            while not self.transport.closed:
                data = await self.reader.read(65536)
                if not data:
                    self.transport.close_tail()
                    self.flush()
                    break
                self.transport.push(self.inbound.feed(data))
                self.flush()
                await self.writer.drain()
        except (ConnectionError, TransportException, OSError) as exc:
            log.info("AMQP connection ended: %s", exc)
        except (FrameError, ServiceError, ValueError, TypeError, AttributeError, KeyError):
            # a bug of ours answering this client: its connection ends, the endpoint serves on, the log says why
            log.exception("AMQP connection closed on an internal error")
        finally:
            self.handler.forget(self.connection)
            if not self.writer.is_closing():
                self.writer.close()


class EventHubEndpoint:
    """The built-in endpoint; `start()` serves in a thread of its own, `stop()` ends it.

    Args:
        log: the partitions of events (`EventLog`).
        checker: checks CBS tokens (`TokenChecker`).
        address: the loopback address to listen on (the hub's host).
        ssl_context: the server's TLS context (the workspace CA's certificate for `address`).
        entity: the Event Hubs-compatible name.
        port: 5671 unless a test says otherwise.
        consumer_groups: the groups that exist (`$Default`).
        poll_s: how often new messages are looked for.
        queues: the devices' cloud-to-device queues; None: no `/messages/devicebound` here.
        service_checker: checks the hub's service tokens for `/messages/devicebound`.
        groups: the consumer groups kept in the store (read at each attach); None: `consumer_groups`.
    """

    def __init__(self, log: EventLog, checker: TokenChecker, address: str, ssl_context: Any, entity: str,
                 port: int = AMQPS_PORT, consumer_groups: tuple[str, ...] = (DEFAULT_CONSUMER_GROUP,),
                 poll_s: float = 0.05, queues: DeviceboundQueues | None = None,
                 service_checker: ServiceTokenChecker | None = None, groups: ConsumerGroups | None = None):
        self.log = log
        self.checker = checker
        self.address = address
        self.ssl_context = ssl_context
        self.entity = entity
        self.port = port
        self.consumer_groups = consumer_groups
        self.poll_s = poll_s
        self.queues = queues
        self.service_checker = service_checker
        self.groups = groups
        self.created_at = time.time()
        self.handler = EventHubHandler(self)
        self._conns: set[_AmqpConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    def current_groups(self) -> list[str]:
        """The consumer groups that exist now."""
        return self.groups.list() if self.groups is not None else list(self.consumer_groups)

    def start(self, timeout_s: float = 10.0) -> None:
        """Listen and serve in a background thread.

        Raises:
            ConfigError: the port is taken on this address, or it cannot be listened on.
        """
        ready: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="eventhub-amqp", daemon=True)
        self._thread.start()
        ready.result(timeout=timeout_s)
        log.info("Event Hubs-compatible endpoint listening on amqps://%s:%d (entity %s)", self.address, self.port, self.entity)

    def _run(self, ready: Future) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._accept, host=self.address, port=self.port, ssl=self.ssl_context, ssl_handshake_timeout=10,
                reuse_address=True))
        except OSError as exc:
            ready.set_exception(_listen_error(self.address, self.port, exc))
            loop.close()
            return
        poller = loop.create_task(self._poll())
        ready.set_result(True)
        try:
            loop.run_forever()
        finally:
            poller.cancel()
            loop.run_until_complete(asyncio.gather(poller, return_exceptions=True))
            loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _AmqpConnection(self.handler, reader, writer)
        self._conns.add(conn)
        try:
            await conn.serve()
        finally:
            self._conns.discard(conn)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            if not self.handler.consumers:
                continue
            try:
                self.handler.poll()
            except ServiceError as exc:
                log.error("reading events failed: %s", exc)
            for conn in list(self._conns):
                conn.flush()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close every connection and the listener; wait for the thread to end."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.writer.close()
            await asyncio.sleep(0)
            loop.stop()

        asyncio.run_coroutine_threadsafe(_shutdown(), loop)
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the Event Hubs-compatible endpoint did not stop within %.0f s", timeout_s)


def entity_name(address: str) -> str:
    """The workspace hub's Event Hubs-compatible name (its `EntityPath`), from its loopback address."""
    return "edgeloop-" + address.replace(".", "-").replace(":", "-")


def start_eventhub(workspace: Any, store: Any, service_key: Secret, port: int = AMQPS_PORT) -> EventHubEndpoint:
    """The workspace hub's built-in endpoint, started on port 5671 of its address (`tls.hub_address`).

    Raises:
        ConfigError: the port is taken on that address, or TLS could not be set up.
    """
    address = tls.hub_address(workspace)
    entity = entity_name(address)
    hub_host = parse_connection_string(read_credentials(workspace)["service_connection_string"])["HostName"]
    hosts = (hub_host, address)  # the service SDK names the hub by its HostName (ADDRESS:PORT)
    endpoint = EventHubEndpoint(EventLog(store), TokenChecker((address,), entity, SERVICE_POLICY, service_key),
                                address, tls.server_ssl_context(workspace, address), entity, port=port,
                                queues=DeviceboundQueues(store), groups=ConsumerGroups(store),
                                service_checker=ServiceTokenChecker(hosts, SERVICE_POLICY, service_key))
    endpoint.start()
    return endpoint


def start_for_service(workspace: Any, store: Any, service_key: Secret,
                      port: int = AMQPS_PORT) -> tuple[EventHubEndpoint | None, dict[str, Any]]:
    """Start the endpoint for the local cloud: (endpoint or None, what service.json says of it).

    The hub and studio serve on without it when it cannot start (port 5671 taken on the hub's
    address, TLS): the error goes to service.log and to service.json as `eventhub_error`, where
    `helpers.endpoints.local_eventhub` and `python -m helpers.localcloud status` show it.
    """
    address = tls.hub_address(workspace)
    try:
        endpoint = start_eventhub(workspace, store, service_key, port=port)
    except (ConfigError, TimeoutError) as exc:
        message = str(exc) or f"no answer within the start timeout ({type(exc).__name__})"
        log.error("the Event Hubs-compatible endpoint (amqps://%s:%d) did not start: %s", address, port, message)
        return None, {"eventhub_error": f"the Event Hubs-compatible endpoint on {address}:{port} did not start: {message}"}
    return endpoint, {"eventhub_endpoint": f"sb://{address}/", "eventhub_port": port, "eventhub_name": endpoint.entity,
                      "eventhub_partitions": endpoint.log.partition_count,
                      "eventhub_consumer_groups": endpoint.current_groups()}


__all__ = ["AMQPS_PORT", "EventHubEndpoint", "EventHubHandler", "entity_name", "start_eventhub", "start_for_service"]
