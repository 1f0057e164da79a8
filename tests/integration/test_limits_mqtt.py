"""Limits of the hub's MQTT endpoint against a hostile device: reported patches, unacknowledged messages, log lines.

The device is the unmodified `azure-iot-device` SDK (which sends whatever JSON it is given, NaN
included) or a raw TLS socket speaking MQTT (for what the SDK never does: not acknowledging).
"""
from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import pytest
import requests

pytest.importorskip("azure.iot.device")

from azure.iot.device.exceptions import ClientError, ServiceError  # noqa: E402
from test_limits_hub import Hub, nested, tracebacks  # noqa: E402
from test_mqtt_device import _raw_connect, device_key, sdk_client  # noqa: E402

from helpers.localcloud.common import limits, tls  # noqa: E402
from helpers.localcloud.mqtt import codec as mc  # noqa: E402
from helpers.protocol.sas import generate_sas_token  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def service_log(cloud) -> bytes:
    return (cloud.workspace / "localcloud" / "service.log").read_bytes()


def refused_patch(client, patch: dict, status: str) -> None:
    """The SDK's sync client raises ClientError whose cause is the pipeline's ServiceError naming the hub's status."""
    with pytest.raises(ClientError) as caught:
        client.patch_twin_reported_properties(patch)
    cause = caught.value.__cause__
    assert isinstance(cause, ServiceError) and f"status {status}" in str(cause), (type(cause), cause)


def test_reported_patches_over_the_limits_are_refused_and_the_device_stays_connected(cloud, unique_name):
    hub = Hub(cloud)
    before_tb = tracebacks(cloud)
    dev = unique_name("rep")
    cloud.hub.create_edge_device(dev)
    client = sdk_client(cloud, dev)
    try:
        client.connect()
        client.patch_twin_reported_properties({"ok": 1})
        bad = [(nested(11), "400"), (nested(40), "400"), ({"x": float("nan")}, "400"), ({"x": float("inf")}, "400"),
               ({"blob": "z" * 40_000}, "413")]
        for patch, status in bad:
            refused_patch(client, patch, status)
            twin = hub.fleet_ok(dev)
            assert twin["properties"]["reported"].get("ok") == 1 and set(twin["properties"]["reported"]) <= {"ok", "$version"}
        # two patches under the limit each, over it together: the second is refused
        client.patch_twin_reported_properties({"half": "h" * 20_000})
        refused_patch(client, {"other": "o" * 20_000}, "413")
        # the same connection still works: the broker's handler never dropped it
        client.patch_twin_reported_properties({"ok": 2})
        assert hub.fleet_ok(dev)["properties"]["reported"]["ok"] == 2
        assert client.get_twin()["reported"]["ok"] == 2
    finally:
        client.shutdown()
    log = service_log(cloud)
    assert b"Unhandled exception in client_connected_cb" not in log
    assert tracebacks(cloud) == before_tb
    stats = hub.call("GET", "/api/hub/stats").json()["refused"]
    print(f"refusals: {stats}")
    assert stats.get("twin_depth", 0) + stats.get("json_depth", 0) >= 2 and stats.get("twin_reported_size", 0) >= 2


def _recv_exactly(sock, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        out += chunk
    return out


def read_packet(sock) -> mc.Packet | tuple[int, bytes]:
    """The next MQTT packet from a raw socket: a PUBLISH decoded by the codec, else (type, body)."""
    first = _recv_exactly(sock, 1)[0]
    length, multiplier = 0, 1
    while True:
        byte = _recv_exactly(sock, 1)[0]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    body = _recv_exactly(sock, length) if length else b""
    return mc.decode(first, body) if first >> 4 == mc.PUBLISH else (first >> 4, body)


def test_a_reported_patch_990_deep_is_answered_400_on_the_same_connection(cloud, unique_name):
    """What the SDK cannot even serialise, a raw client sends: the broker answers, it does not drop the handler."""
    hub = Hub(cloud)
    before_tb = tracebacks(cloud)
    dev = unique_name("deep")
    cloud.hub.create_edge_device(dev)
    sock = _raw_connect(cloud, dev, keep_alive=60)
    sock.settimeout(10)
    try:
        sock.sendall(mc.packet(0x82, (1).to_bytes(2, "big") + mc._text("$iothub/twin/res/#") + b"\x00"))  # QoS 0
        assert read_packet(sock) == (mc.SUBACK, b"\x00\x01\x00")  # granted QoS 0
        payloads = [b'{"a":' * 990 + b"1" + b"}" * 990, b'{"a":' * 5000 + b"1" + b"}" * 5000, b'{"x": NaN}',
                    b'{"ok": 1}']
        for rid, payload in enumerate(payloads):
            sock.sendall(mc.publish(f"$iothub/twin/PATCH/properties/reported/?$rid={rid}", payload, 0))
            answer = read_packet(sock)
            assert isinstance(answer, mc.Publish), answer
            expected = "204" if payload == b'{"ok": 1}' else "400"
            assert answer.topic.startswith(f"$iothub/twin/res/{expected}/?$rid={rid}"), answer.topic
            if expected == "400":
                assert b"nested deeper" in answer.payload or b"NaN" in answer.payload or b"levels" in answer.payload
        assert hub.fleet_ok(dev)["properties"]["reported"]["ok"] == 1
    finally:
        sock.close()
    log = service_log(cloud)
    assert b"Unhandled exception in client_connected_cb" not in log
    assert tracebacks(cloud) == before_tb


def _read_until_closed(sock, timeout_s: float) -> tuple[bool, int]:
    """(whether the broker closed the connection within `timeout_s`, bytes received before)."""
    sock.settimeout(timeout_s)
    got = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False, got
        except OSError:  # reset by the broker
            return True, got
        if not data:
            return True, got
        got += len(data)
    return False, got


def _flood_twin_gets(cloud, dev: str, qos: int, count: int, wait_for: Callable[[], bool] | None = None) -> tuple[bool, int]:
    """Ask for the twin `count` times without acknowledging; (closed by the broker, bytes read after).

    With `wait_for`, nothing is read until it holds (polled for up to 30 s): the answers pile up
    unread, whatever the speed of this machine; then the socket is read until the broker closes it.
    """
    sock = _raw_connect(cloud, dev, keep_alive=60)
    try:
        sock.sendall(mc.packet(0x82, (1).to_bytes(2, "big") + mc._text("$iothub/twin/res/#") + bytes([qos])))
        for i in range(count):
            try:
                sock.sendall(mc.publish(f"$iothub/twin/GET/?$rid={i}", b"", 0))
            except OSError:  # closed by the broker while we were still asking
                return True, 0
        deadline = time.monotonic() + 30
        while wait_for is not None and not wait_for() and time.monotonic() < deadline:
            time.sleep(0.2)
        return _read_until_closed(sock, 20)
    finally:
        sock.close()


def refused_count(hub: Hub, kind: str) -> int:
    return hub.call("GET", "/api/hub/stats").json()["refused"].get(kind, 0)


def test_unacknowledged_qos1_messages_are_bounded_per_session(cloud, unique_name):
    hub = Hub(cloud)
    dev = unique_name("inflight")
    cloud.hub.create_edge_device(dev)
    before = refused_count(hub, "mqtt_inflight")
    requests_sent = limits.MQTT_MAX_INFLIGHT + 50
    closed, received = _flood_twin_gets(cloud, dev, qos=1, count=requests_sent)  # small answers, never acknowledged
    assert closed, "the broker kept a session whose unacknowledged messages passed the limit"
    after = refused_count(hub, "mqtt_inflight")
    assert after == before + 1, (before, after)
    print(f"closed after {received} bytes; mqtt_inflight refusals {before} -> {after}")
    # the same device connects again and works: nothing of the dropped session piles up
    client = sdk_client(cloud, dev)
    try:
        client.connect()
        assert client.get_twin()["desired"]["$version"] >= 1
    finally:
        client.shutdown()


def test_a_client_that_reads_nothing_is_closed_past_the_queued_bytes_limit(cloud, unique_name):
    hub = Hub(cloud)
    dev = unique_name("queued")
    cloud.hub.create_edge_device(dev)
    assert hub.call("PATCH", f"/twins/{dev}", {"properties": {"desired": {"pad": "p" * 30_000}}}).status_code == 200
    before = refused_count(hub, "mqtt_queued_bytes")
    count = 3 * 16 * limits.MQTT_MAX_QUEUED_BYTES // 30_000  # far more than the socket buffers and the limit hold
    # QoS 0 answers, read by no one until the broker counts the refusal: only the unread bytes grow
    closed, _ = _flood_twin_gets(cloud, dev, qos=0, count=count,
                                 wait_for=lambda: refused_count(hub, "mqtt_queued_bytes") > before)
    assert closed, "the broker kept writing to a client that read nothing"
    assert refused_count(hub, "mqtt_queued_bytes") == before + 1
    hub.fleet_ok(dev)


def _connect_as(cloud, client_id: str, device_id: str) -> bytes:
    """Send a CONNECT with `client_id` (in the username too) and a valid token for `device_id`; the broker's first bytes."""
    address = tls.hub_address(cloud.workspace)
    body = (b"\x00\x04MQTT\x04\xc2" + (30).to_bytes(2, "big") + mc._text(client_id)
            + mc._text(f"{address}/{client_id}/?api-version=2021-04-12")
            + mc._text(generate_sas_token(f"{address}/devices/{device_id}", device_key(cloud, device_id)).get_secret_value()))
    sock = tls.client_ssl_context(cloud.workspace).wrap_socket(socket.create_connection((address, 8883), 5),
                                                                server_hostname=address)
    try:
        sock.sendall(mc.packet(0x10, body))
        sock.settimeout(5)
        try:
            return sock.recv(4)
        except ConnectionError:
            return b""
    finally:
        sock.close()


def test_control_bytes_from_a_device_never_reach_the_log_raw(cloud, unique_name):
    dev = unique_name("ctl")
    cloud.hub.create_edge_device(dev)
    # a newline in the client id: refused in CONNACK (no such device), logged escaped on one line
    ack = _connect_as(cloud, f"{dev}\nFORGED-{dev} local cloud stopped cleanly", dev)
    assert ack[:2] == b"\x20\x02" and ack[3] != 0, ack
    # a NUL in a string field: MQTT 3.1.1 (MQTT-1.5.3-2) has the server close the connection, no CONNACK
    assert _connect_as(cloud, f"{dev}\x00FORGED-{dev}", dev) == b""
    for path in ("/devices/evil%0AFORGED", "/devices/evil%00FORGED"):
        r = requests.put(cloud.url + path, json={}, headers=Hub(cloud).headers, timeout=10)
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
    time.sleep(0.3)
    log = service_log(cloud)
    assert b"\x00" not in log, "a raw NUL byte reached service.log"
    lines = log.splitlines()
    assert not any(line.startswith(b"FORGED") for line in lines), "a client forged a log line"
    # the refused connection and the refused id are logged, escaped, on one line each
    assert f"{dev}\\nFORGED-{dev}".encode() in log
    # (the access line's path is the URL's: Python's URL parsing drops a newline, a NUL is escaped)
    assert re.search(rb"PUT /devices/evil(\\n)?FORGED 400", log) and b"PUT /devices/evil\\x00FORGED 400" in log
