"""IoT Hub's MQTT device endpoint for the local hub: what `azure-iot-device` connects to.

MQTT 3.1.1 over TLS on port 8883 (the port the SDK hard-codes) of the workspace's own
loopback address, in the local cloud's process, with IoT Hub's semantics:

* CONNECT: client id `deviceId` or `deviceId/moduleId`; username
  `{host}/{clientId}/?api-version=...`; password a SAS token whose resource is
  `{host}/devices/{deviceId}[/modules/{moduleId}]` signed with that identity's key, or no
  password and an X.509 client certificate (a registered thumbprint, or a chain to a trusted
  CA with the device id as CN). Clean and persistent sessions (subscriptions kept in SQLite, so
  they survive a restart of the stand-in); keep-alive enforced at 1.5 times the client's value.
* QoS 0 and 1 (QoS 2 closes the connection, as on IoT Hub); no retained messages.
* Topics, scoped to the connection's own identity (anything else: SUBACK failure, or the
  connection is closed for a PUBLISH):
  - `$iothub/twin/GET/?$rid=` and `$iothub/twin/PATCH/properties/reported/?$rid=`, answered on
    `$iothub/twin/res/{status}/?$rid=[&$version=]`;
  - desired-property patches pushed on `$iothub/twin/PATCH/properties/desired/?$version=`;
  - direct methods on `$iothub/methods/POST/{name}/?$rid=`, answered on
    `$iothub/methods/res/{status}/?$rid=` (`invoke_method` relays a service call);
  - device-to-cloud messages on `devices/{id}/messages/events/` and
    `devices/{id}/modules/{mid}/messages/events/` with their properties (kept in SQLite);
  - cloud-to-device messages, queued per device (`devicebound.DeviceboundQueues`), published on
    `devices/{id}/messages/devicebound/{properties}` and completed on the device's PUBACK.

Not mirrored: AMQP for devices, MQTT over websockets (port 443), module inputs/outputs routing,
file upload, will messages (accepted and ignored), DPS.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import json
import logging
import sqlite3
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import Future
from typing import Any

from helpers.errors import ConfigError
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.common.limits import (
    MAX_JSON_DEPTH,
    MQTT_MAX_INFLIGHT,
    MQTT_MAX_INFLIGHT_BYTES,
    MQTT_MAX_MESSAGE_BYTES,
    SCAN_ON_LOOP_BYTES,
    TWIN_MAX_DEPTH,
    TWIN_SECTION_BYTES,
    LimitError,
    count_refusal,
    parse_json,
)
from helpers.localcloud.hub import store as hub_store
from helpers.localcloud.mqtt import codec as mc
from helpers.localcloud.mqtt.devicebound import DeviceboundDelivery, DeviceboundQueues, on_enqueue
from helpers.localcloud.mqtt.session import Connection, MethodError, Session, split_message_props, topic_query
from helpers.localcloud.mqtt.store import AuthError, HubState, Identity
from helpers.protocol.twinpatch import diff_patch

log = logging.getLogger("helpers.localcloud.mqtt")

MQTT_PORT = 8883
CONNECT_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = MQTT_MAX_MESSAGE_BYTES  # IoT Hub's device-to-cloud message limit
MAX_TWIN_BYTES = TWIN_SECTION_BYTES["reported"]  # IoT Hub's limit for a twin section
DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"
METHODS_FILTER = "$iothub/methods/POST/#"
TWIN_RES_FILTER = "$iothub/twin/res/#"


class MqttBroker:
    """The MQTT endpoint; runs its own event loop in a thread of the local cloud process.

    Args:
        state: the hub's identities, twins, sessions and messages (`HubState`).
        ssl_context: the server's TLS context (workspace CA's certificate for `address`).
        address: the loopback address to listen on (the hub's host name).
        port: 8883 unless a test says otherwise.
        desired_poll_s: how often the twins of connected clients are checked for desired
            changes by any writer; writers that call `hub_store.notify_desired` (the REST API,
            deployments) wake the check at once.
    """

    def __init__(self, state: HubState, ssl_context: ssl.SSLContext, address: str, port: int = MQTT_PORT,
                 desired_poll_s: float = 1.0, activity_s: float = 5.0):
        self.state = state
        self.ssl_context = ssl_context
        self.address = address
        self.port = port
        self.desired_poll_s = desired_poll_s
        self.activity_s = activity_s
        self.sessions: dict[str, Session] = {}
        self._pending: dict[str, tuple[Identity, asyncio.Future]] = {}
        self._rid = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._wake: asyncio.Event | None = None
        self._stopped = threading.Event()
        self._unlisten: Any = None
        self.devicebound = DeviceboundDelivery(DeviceboundQueues(state.store))

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 10.0) -> None:
        """Bind and serve in a background thread.

        Raises:
            ConfigError: the port is taken on this address (the message says what to do).
        """
        ready: Future = Future()
        self._unlisten = hub_store.on_desired_change(lambda _d, _m, _p: self.notify_desired())
        self._thread = threading.Thread(target=self._run, args=(ready,), name="mqtt-broker", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=timeout_s)
        except BaseException:
            self._unlisten()
            self._unlisten = None
            raise
        log.info("MQTT endpoint listening on mqtts://%s:%d", self.address, self.port)

    def _run(self, ready: Future) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._handle, host=self.address, port=self.port, ssl=self.ssl_context, ssl_handshake_timeout=10,
                reuse_address=True))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                err: Exception = ConfigError(
                    f"port {self.port} on {self.address} is taken by another process, and IoT Hub's device SDK "
                    f"only connects to port {self.port}: stop that process (find it with `ss -ltnp 'sport = :"
                    f"{self.port}'`) or give this workspace another loopback address")
            else:
                err = ConfigError(f"cannot listen on {self.address}:{self.port} for MQTT: {exc}")
            ready.set_exception(err)
            loop.close()
            return
        self._wake = asyncio.Event()
        tasks = [loop.create_task(self._desired_loop()), loop.create_task(self._activity_loop()),
                 loop.create_task(self._devicebound_loop())]
        ready.set_result(True)
        try:
            loop.run_forever()
        finally:
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()
            self._stopped.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close every connection and the listener."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for s in list(self.sessions.values()):
                if s.conn is not None:
                    s.conn.close()
            for _, fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(MethodError(503, 503101, "the hub is shutting down"))
            await asyncio.sleep(0)
            loop.stop()

        asyncio.run_coroutine_threadsafe(_shutdown(), loop)
        self._stopped.wait(timeout_s)

    # ------------------------------------------------------------ thread-safe API
    def notify_desired(self) -> None:
        """Check connected clients' desired properties now (call after writing them)."""
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def connected(self, ident: Identity) -> bool:
        s = self.sessions.get(ident.client_id)
        return bool(s and s.conn is not None and not s.conn.closed)

    def invoke_method(self, ident: Identity, name: str, payload: Any, response_timeout_s: float = 30.0,
                      connect_timeout_s: float = 0.0) -> dict[str, Any]:
        """Call a direct method on a connected device or module; `{"status", "payload"}` of its answer.

        Raises:
            MethodError: 404 (not online / not subscribed to methods), 504 (no answer in time).
        """
        if self._loop is None:
            raise MethodError(503, 503101, "the MQTT endpoint is not running")
        fut = asyncio.run_coroutine_threadsafe(
            self._invoke(ident, name, payload, response_timeout_s, connect_timeout_s), self._loop)
        return fut.result(timeout=response_timeout_s + connect_timeout_s + 5)

    async def _invoke(self, ident: Identity, name: str, payload: Any, response_timeout_s: float,
                      connect_timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + connect_timeout_s
        while True:
            s = self.sessions.get(ident.client_id)
            if s is not None and s.conn is not None and not s.conn.closed and s.granted("$iothub/methods/POST/x/") is not None:
                break
            if time.monotonic() >= deadline:
                raise MethodError(404, 404103, f"{ident} is not online (not connected, or not subscribed to direct "
                                                f"methods): the device must connect and register a method handler")
            await asyncio.sleep(0.1)
        rid = format(next(self._rid), "x")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[rid] = (ident, fut)
        try:
            body = json.dumps(payload).encode()
            await self._deliver(s, f"$iothub/methods/POST/{urllib.parse.quote(name, safe='')}/?$rid={rid}", body)
            status, answer = await asyncio.wait_for(fut, response_timeout_s)
        except TimeoutError:
            raise MethodError(504, 504101, f"{ident} did not answer method {name!r} within {response_timeout_s:g} s") from None
        finally:
            self._pending.pop(rid, None)
        return {"status": status, "payload": answer}

    # ------------------------------------------------------------ delivery
    async def _deliver(self, s: Session, topic: str, payload: bytes) -> bool:
        """Publish to a session's client when it subscribed to the topic; False when not delivered."""
        qos = s.granted(topic)
        conn = s.conn
        if qos is None or conn is None or conn.closed:
            return False
        if qos >= 1:
            if not s.room_for(payload):
                count_refusal("mqtt_inflight")
                log.warning("%s: %d messages (%d bytes) sent with QoS 1 and not acknowledged, over the limit of %d "
                            "(%d bytes): closing its connection and dropping them", s.client_id, len(s.inflight),
                            sum(len(p) for _, p, _ in s.inflight.values()), MQTT_MAX_INFLIGHT, MQTT_MAX_INFLIGHT_BYTES)
                s.inflight.clear()
                conn.close()
                return False
            pid = s.next_pid()
            s.inflight[pid] = (topic, payload, 1)
            await conn.send(mc.publish(topic, payload, 1, pid))
        else:
            await conn.send(mc.publish(topic, payload, 0))
        return True

    async def _parse(self, payload: bytes, field: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
        """A device's JSON payload parsed within the limits (`parse_json`); a long one in a worker thread."""
        if len(payload) > SCAN_ON_LOOP_BYTES:
            return await asyncio.get_running_loop().run_in_executor(None, parse_json, payload, field, max_depth)
        return parse_json(payload, field, max_depth)

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _desired_loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.desired_poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            watching = [s for s in self.sessions.values()
                        if s.conn is not None and not s.conn.closed and s.desired_base is not None]
            if not watching:
                continue
            try:
                versions = await self._db(self.state.desired_versions, [s.ident for s in watching])
                for s in watching:
                    base = s.desired_base
                    if base is None or versions.get(s.ident, base[1]) == base[1]:
                        continue
                    desired, version = await self._db(self.state.desired, s.ident)
                    patch = diff_patch(base[0], desired)
                    s.desired_base = (desired, version)
                    patch["$version"] = version
                    log.debug("%s: desired $version %s -> %s pushed", s.ident, base[1], version)
                    await self._deliver(s, f"$iothub/twin/PATCH/properties/desired/?$version={version}",
                                        json.dumps(patch).encode())
            except (OSError, KeyError) as exc:
                log.warning("desired-property check failed (%s); retrying", exc)

    async def _devicebound_loop(self) -> None:
        """Cloud-to-device messages to the devices subscribed to them (`devicebound.DeviceboundDelivery`)."""
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        unsubscribe = on_enqueue(lambda _device: loop.call_soon_threadsafe(wake.set))
        try:
            while True:
                try:
                    await asyncio.wait_for(wake.wait(), self.devicebound.poll_s)
                except TimeoutError:
                    pass
                wake.clear()
                await self._devicebound_round()
        finally:
            unsubscribe()

    async def _devicebound_round(self) -> None:
        try:
            await self.devicebound.pump(list(self.sessions.values()))
        except (OSError, sqlite3.Error) as exc:
            log.warning("cloud-to-device delivery failed (%s); retrying", exc)

    async def _activity_loop(self) -> None:
        """Keep the connected identities' last activity fresh (the hub's connection state)."""
        while True:
            await asyncio.sleep(self.activity_s)
            idents = {s.ident for s in self.sessions.values() if s.conn is not None and not s.conn.closed}
            if idents:
                try:
                    await self._db(self.state.touch, *idents)
                except (OSError, sqlite3.Error) as exc:
                    log.warning("could not record activity of %d clients: %s", len(idents), exc)

    # ------------------------------------------------------------ connections
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer)
        session: Session | None = None
        peer = writer.get_extra_info("peername")
        try:
            first = await asyncio.wait_for(mc.read_packet(reader), CONNECT_TIMEOUT_S)
            if not isinstance(first, mc.Connect):
                raise mc.ProtocolError("the first packet must be CONNECT")
            session = await self._connect(conn, first)
            if session is None:
                return
            keep_alive = first.keep_alive * 1.5 if first.keep_alive else None
            while not conn.closed:
                pkt = await asyncio.wait_for(mc.read_packet(reader), keep_alive)
                if not await self._dispatch(session, conn, pkt):
                    break
        except TimeoutError:
            log.info("%s: no packet within the keep-alive time: closing", session.client_id if session else peer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except mc.ProtocolError as exc:
            log.warning("%s: protocol error, closing: %s", session.client_id if session else peer, exc)
        except Exception as exc:  # noqa: BLE001 - one client's failure closes its connection, never the endpoint's handler
            log.error("%s: unexpected %s handling its packets, closing: %s", session.client_id if session else peer,
                      type(exc).__name__, exc, exc_info=exc)
        finally:
            conn.close()
            if session is not None and session.conn is conn:
                session.conn = None
                try:
                    await self._db(self.state.set_connected, session.ident, False)
                except (OSError, sqlite3.Error) as exc:
                    log.warning("could not record that %s disconnected: %s", session.ident, exc)
                if session.clean:  # a clean session ends with its connection
                    self.sessions.pop(session.client_id, None)
                    self.devicebound.forget(session.client_id)
                for _rid, (ident, fut) in list(self._pending.items()):
                    if ident == session.ident and not fut.done():
                        fut.set_exception(MethodError(404, 404103, f"{ident} disconnected before answering"))
                log.info("%s disconnected", session.client_id)

    async def _connect(self, conn: Connection, pkt: mc.Connect) -> Session | None:
        if pkt.protocol_level != 4:
            await conn.send(mc.connack(False, mc.BAD_PROTOCOL))
            conn.close()
            return None
        parts = pkt.client_id.split("/")
        if not pkt.client_id or len(parts) > 2 or not all(parts):
            await conn.send(mc.connack(False, mc.ID_REJECTED))
            conn.close()
            return None
        ident = Identity(parts[0], parts[1] if len(parts) == 2 else None)
        try:
            expected = f"{self.state.host}/{ident.client_id}/"
            if not pkt.username or not (pkt.username == expected.rstrip("/") or pkt.username.startswith(expected)):
                raise AuthError(f"username must be {expected}?api-version=... (this hub's host and the client id)",
                                mc.BAD_CREDENTIALS)
            if pkt.password is not None:
                await self._db(self.state.authenticate_sas, ident, pkt.password)
            else:
                der = conn.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                if not der:
                    raise AuthError("no credential: send a SAS token as the password or a client certificate",
                                    mc.BAD_CREDENTIALS)
                info = conn.writer.get_extra_info("ssl_object").getpeercert() or {}
                subject = dict(x[0] for x in info.get("subject", ()))
                issuer = dict(x[0] for x in info.get("issuer", ()))
                thumbprints = [hashlib.sha1(der).hexdigest(), hashlib.sha256(der).hexdigest()]
                last: AuthError | None = None
                for tp in thumbprints:
                    try:
                        await self._db(self.state.authenticate_x509, ident, tp, subject != issuer,
                                       subject.get("commonName"))
                        last = None
                        break
                    except AuthError as exc:
                        last = exc
                if last is not None:
                    raise last
        except AuthError as exc:
            log.warning("connection of %s refused: %s", ident, exc)
            await conn.send(mc.connack(False, exc.code))
            conn.close()
            return None
        session = self.sessions.get(ident.client_id)
        if session is not None and session.conn is not None:
            log.info("%s connected again: closing its previous connection", ident)
            session.conn.close()
        if pkt.clean_session:
            await self._db(self.state.drop_session, ident.client_id)
            self.devicebound.forget(ident.client_id)
            session = Session(ident.client_id, ident)
            present = False
        elif session is not None:
            present = True
        else:
            subs = await self._db(self.state.load_session, ident.client_id)
            present = subs is not None
            session = Session(ident.client_id, ident, subscriptions=subs or {})
        session.clean = pkt.clean_session
        self.sessions[ident.client_id] = session
        session.conn = conn
        if session.granted("$iothub/twin/PATCH/properties/desired/") is not None:
            session.desired_base = await self._db(self.state.desired, ident)
        await conn.send(mc.connack(present, mc.ACCEPTED))
        await self._db(self.state.set_connected, ident, True)
        log.info("%s connected (%s session%s)", ident, "clean" if pkt.clean_session else "persistent",
                 ", resumed" if present else "")
        for pid, (topic, payload, qos) in sorted(session.inflight.items()):
            await conn.send(mc.publish(topic, payload, qos, pid, dup=True))
        return session

    def _allowed_filter(self, ident: Identity, flt: str) -> bool:
        own = f"devices/{ident.device_id}/messages/devicebound/#" if ident.module_id is None else \
            f"devices/{ident.device_id}/modules/{ident.module_id}/inputs/#"
        return flt in (TWIN_RES_FILTER, DESIRED_FILTER, METHODS_FILTER, own)

    async def _dispatch(self, s: Session, conn: Connection, pkt: mc.Packet) -> bool:
        """Handle one packet; False closes the connection."""
        if isinstance(pkt, mc.Publish):
            if pkt.qos == 2:
                log.warning("%s published with QoS 2, which IoT Hub does not support: closing", s.client_id)
                return False
            ok = await self._on_publish(s, conn, pkt)
            if ok and pkt.qos == 1 and pkt.packet_id is not None:
                await conn.send(mc.puback(pkt.packet_id))
            return ok
        if isinstance(pkt, mc.Subscribe):
            codes = []
            changed = False
            for flt, qos in pkt.topics:
                if self._allowed_filter(s.ident, flt):
                    granted = min(qos, 1)
                    s.subscriptions[flt] = granted
                    codes.append(granted)
                    changed = True
                    if flt == DESIRED_FILTER:
                        s.desired_base = await self._db(self.state.desired, s.ident)
                else:
                    log.warning("%s may not subscribe to %r", s.client_id, flt)
                    codes.append(mc.SUBACK_FAILURE)
            if changed and not s.clean:
                await self._db(self.state.save_session, s.client_id, dict(s.subscriptions))
            await conn.send(mc.suback(pkt.packet_id, codes))
            return True
        if isinstance(pkt, mc.Unsubscribe):
            for flt in pkt.topics:
                s.subscriptions.pop(flt, None)
                if flt == DESIRED_FILTER:
                    s.desired_base = None
            if not s.clean:
                await self._db(self.state.save_session, s.client_id, dict(s.subscriptions))
            await conn.send(mc.unsuback(pkt.packet_id))
            return True
        if isinstance(pkt, mc.Simple):
            if pkt.kind == mc.PINGREQ:
                await conn.send(mc.pingresp())
                return True
            if pkt.kind == mc.PUBACK:
                s.inflight.pop(pkt.packet_id or 0, None)
                await self.devicebound.acked(s, pkt.packet_id or 0)
                return True
            if pkt.kind == mc.DISCONNECT:
                return False
            raise mc.ProtocolError(f"packet type {pkt.kind} is not supported here (QoS 2 flows are not)")
        raise mc.ProtocolError("a second CONNECT on one connection")

    async def _on_publish(self, s: Session, conn: Connection, pkt: mc.Publish) -> bool:
        topic, ident = pkt.topic, s.ident
        if topic.startswith("$iothub/twin/"):
            return await self._on_twin(s, pkt)
        if topic.startswith("$iothub/methods/res/"):
            status_s = topic[len("$iothub/methods/res/"):].split("/", 1)[0]
            rid = topic_query(topic).get("$rid", "")
            pending = self._pending.get(rid)
            if pending is None or pending[0] != ident:
                log.warning("%s answered a method request it was not sent (rid %r): ignored", ident, rid)
                return True
            try:
                status = int(status_s)
                answer = await self._parse(pkt.payload, "payload") if pkt.payload.strip() else None
            except (ValueError, ApiError) as exc:
                status, answer = 500, {"error": f"the device's method answer was not JSON within the limits: {exc}"}
            if not pending[1].done():
                pending[1].set_result((status, answer))
            return True
        prefix = f"devices/{ident.device_id}/messages/events/" if ident.module_id is None else \
            f"devices/{ident.device_id}/modules/{ident.module_id}/messages/events/"
        if topic.startswith(prefix):
            if len(pkt.payload) > MAX_MESSAGE_BYTES:
                log.warning("%s sent a %d byte message, over IoT Hub's %d: closing", ident, len(pkt.payload),
                            MAX_MESSAGE_BYTES)
                return False
            system, props = split_message_props(topic[len(prefix):])
            await self._db(self.state.save_message, ident, system, props, pkt.payload)
            return True
        log.warning("%s may not publish to %r: closing its connection, as IoT Hub does", ident, topic)
        return False

    async def _on_twin(self, s: Session, pkt: mc.Publish) -> bool:
        topic = pkt.topic
        rid = topic_query(topic).get("$rid")
        if rid is None:
            log.warning("%s sent a twin request without $rid: closing", s.ident)
            return False
        if topic.startswith("$iothub/twin/GET/"):
            twin = await self._db(self.state.get_twin, s.ident)
            await self._deliver(s, f"$iothub/twin/res/200/?$rid={rid}", json.dumps(twin).encode())
            return True
        if topic.startswith("$iothub/twin/PATCH/properties/reported/"):
            try:
                if len(pkt.payload) > MAX_TWIN_BYTES:
                    raise LimitError("twin_reported_size", f"a reported-properties patch of {len(pkt.payload)} bytes, over "
                                                           f"IoT Hub's {MAX_TWIN_BYTES // 1024} KB limit", "reported", 413)
                # the patch object is one level above the twin's own depth limit; the store checks the rest
                patch = await self._parse(pkt.payload, "reported", TWIN_MAX_DEPTH + 1)
                if not isinstance(patch, dict):
                    raise ApiError(400, "a reported-properties patch must be a JSON object", "reported")
                version = await self._db(self.state.patch_reported, s.ident, patch)
            except ApiError as exc:  # refused with its status and the limit named; nothing written
                log.warning("%s: reported-properties patch refused (%d): %s", s.ident, exc.status, exc.message)
                body = json.dumps({"errorCode": exc.status, "message": exc.message, "field": exc.field}).encode()
                await self._deliver(s, f"$iothub/twin/res/{exc.status}/?$rid={rid}", body)
                return True
            await self._deliver(s, f"$iothub/twin/res/204/?$rid={rid}&$version={version}", b"")
            return True
        log.warning("%s sent an unknown twin request %r: closing", s.ident, topic)
        return False


__all__ = ["MQTT_PORT", "MqttBroker"]
