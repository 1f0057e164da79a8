"""The hub's MQTT read loop under arbitrary bytes, by hypothesis, on a real local cloud on loopback.

Each example opens a TLS connection to port 8883 of the workspace's address, as a device would,
and sends what hypothesis drew: before CONNECT (anyone can), or after an accepted CONNECT (a
registered device gone bad), then a PINGREQ. The property: the broker either reads it all (the
PINGREQ is answered) or closes the connection, and no exception ever leaves its handler (asyncio's
"Unhandled exception in client_connected_cb" or a traceback in the service log). Where the
codec says the bytes end inside a packet, the broker may wait for the rest. A dedicated local
cloud: hostile twin patches must not reach the shared one. The codec alone, with many more
examples: tests/unit/test_mqtt_codec_properties.py.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mqtt_raw import (  # noqa: E402
    PINGREQ,
    PINGRESP_FIRST,
    connect_packet,
    connected,
    create_device,
    own_cloud,
    read_until_closed,
    subscribe_packet,
    tls_socket,
)

from helpers.localcloud.mqtt import codec as mc  # noqa: E402

pytestmark = pytest.mark.timeout(300)

DEVICE = "fuzz-dev"
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with own_cloud(tmp_path_factory.mktemp("mqtt-fuzz-ws")) as cloud:
        cloud.key = create_device(cloud, DEVICE)  # type: ignore[attr-defined]
        yield cloud


def codec_end(data: bytes) -> tuple[str, int]:
    """How the codec reads `data`: `eof` (whole packets), `incomplete` (ends inside one) or `protocol`,
    and how many PINGREQs it read before that."""

    async def run() -> tuple[str, int]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        pings = 0
        while not reader.at_eof():
            try:
                packet = await mc.read_packet(reader)
            except asyncio.IncompleteReadError:
                return "incomplete", pings
            except mc.ProtocolError:
                return "protocol", pings
            pings += isinstance(packet, mc.Simple) and packet.kind == mc.PINGREQ
        return "eof", pings

    return asyncio.run(run())


def json_doc(depth: int, leaf: str) -> bytes:
    return ('{"a":' * depth + leaf + "}" * depth).encode()


TWIN = ["$iothub/twin/GET/?$rid=1", "$iothub/twin/PATCH/properties/reported/?$rid=2",
        "$iothub/twin/PATCH/properties/reported/", f"devices/{DEVICE}/messages/events/",
        "$iothub/methods/res/200/?$rid=9", "$iothub/twin/res/200/?$rid=1", "devices/other/messages/events/"]
payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(json_doc, st.integers(1, 1500), st.sampled_from(["1", "NaN", "Infinity", "-Infinity", "1e999", '"x"', "[]"])),
    st.sampled_from([b"[]", b"null", b"{}", b'{"$version": 3}', b'{"a": null}', b"\xff\xfe"]),
)
publishes = st.builds(lambda topic, payload, qos, pid: mc.publish(topic, payload, qos, pid),
                      st.one_of(st.sampled_from(TWIN), st.text(max_size=30).filter(lambda t: "\x00" not in t)),
                      payloads, st.sampled_from([0, 1]), st.integers(1, 65535))
subscribes = st.builds(lambda pid, flt, q: subscribe_packet(pid, [(flt, q)]), st.integers(0, 65535),
                       st.sampled_from(["$iothub/twin/res/#", "$iothub/methods/POST/#", "#", "devices/other/#", "", "+/+"]),
                       st.integers(0, 3))
others = st.one_of(
    st.builds(mc.packet, st.integers(0, 255), st.binary(max_size=60)),
    st.sampled_from([mc.puback(1), mc.packet(0x62, b"\x00\x01"), mc.packet(0xE0, b""), mc.packet(0xA2, b"\x00\x01"),
                     mc.packet(0xB0, b"\x00\x01"), b"\x30\xff\xff\xff\x7f", b"\x30\xff\xff\xff\xff\x01"]),
)
after_connect = st.one_of(st.binary(max_size=300),
                          st.lists(st.one_of(publishes, subscribes, others), min_size=1, max_size=4).map(b"".join))


def check_example(hub, data: bytes, authenticated: bool) -> None:
    mark = hub.log_mark()
    expected, pings = codec_end(data + PINGREQ)
    sock = connected(hub, DEVICE, hub.key) if authenticated else tls_socket(hub)
    try:
        try:
            sock.sendall(data + PINGREQ)
        except OSError:  # the broker closed while we were still sending: a close is an answer
            end, packets = "closed", []
        else:  # malformed: read until the broker closes; whole packets: until our PINGREQ is answered
            packets, end = read_until_closed(sock, 3.0 if expected != "incomplete" else 0.1,
                                             stop_at_pingresp=pings if expected == "eof" else False)
    finally:
        sock.close()
    if expected == "protocol":
        assert end == "closed", f"malformed bytes {data[:80]!r}: the broker must close the connection, got {end}"
    elif expected == "eof":
        assert end in ("pingresp", "closed"), f"whole packets {data[:80]!r}: answered or closed, got {end} ({packets[:3]})"
    if end == "pingresp":
        assert packets[-1][0] == PINGRESP_FIRST
    if authenticated:  # the handler has finished once it logged the device's disconnection
        deadline = time.monotonic() + 5
        while f"{DEVICE} disconnected" not in hub.log_since(mark) and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(0.05)  # asyncio reports an exception out of a handler on its next loop iteration
    errors = hub.unexpected_since(mark)
    assert not errors, f"bytes {data[:120]!r} let an exception out of the broker's handler:\n" + "\n".join(errors[:5]) + \
        "\n" + hub.log_since(mark)[-3000:]


@FUZZ
@given(data=after_connect)
def test_bytes_after_connect_are_read_or_close_the_connection(hub, data):
    check_example(hub, data, authenticated=True)


@settings(FUZZ, max_examples=60)
@given(data=st.one_of(st.binary(max_size=200),
                      st.lists(st.one_of(publishes, subscribes, others), min_size=1, max_size=3).map(b"".join),
                      st.builds(lambda b, rest: b + rest, st.binary(min_size=1, max_size=40).map(
                          lambda b: mc.packet(mc.CONNECT << 4, b"\x00\x04MQTT\x04" + b)), st.binary(max_size=40))))
def test_bytes_before_connect_never_get_past_it(hub, data):
    check_example(hub, data, authenticated=False)


def test_the_broker_still_serves_and_its_log_is_clean(hub):
    """After the fuzzing: a device connects, reads its twin, and the whole log has no unhandled exception."""
    sock = connected(hub, DEVICE, hub.key)
    try:
        sock.sendall(subscribe_packet(1, [("$iothub/twin/res/#", 1)]) + mc.publish("$iothub/twin/GET/?$rid=77", b"", 0)
                     + PINGREQ)
        packets, end = read_until_closed(sock, 5.0, stop_at_pingresp=True)
        assert end == "pingresp"
    finally:
        sock.close()
    publishes_got = [mc.decode(first, body) for first, body in packets if first >> 4 == mc.PUBLISH]
    answer = next(p for p in publishes_got if p.topic.startswith("$iothub/twin/res/200/?$rid=77"))
    twin = json.loads(answer.payload)
    assert "desired" in twin and "reported" in twin
    assert not hub.unexpected_since(0), "\n".join(hub.unexpected_since(0)[:10])
    # and a CONNECT with a wrong key is refused, not dropped
    sock = tls_socket(hub)
    try:
        sock.sendall(connect_packet(hub, DEVICE, "d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5"))
        packets, _ = read_until_closed(sock, 5.0)
        assert packets and packets[0][0] == mc.CONNACK << 4 and packets[0][1][1] in (mc.BAD_CREDENTIALS, mc.NOT_AUTHORIZED)
    finally:
        sock.close()
