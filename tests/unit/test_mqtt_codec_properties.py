"""Properties of the MQTT codec (`helpers.localcloud.mqtt.codec`), by hypothesis.

Any byte string a peer sends either reads as packets or ends with `ProtocolError` (malformed:
the broker closes the connection) or `IncompleteReadError` (the peer closed mid-packet); nothing
else ever leaves the reader. What the broker writes reads back as what it meant. The broker's
read loop on a real connection: `tests/integration/test_mqtt_fuzz.py`.
"""
from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers.localcloud.mqtt import codec as mc

MANY = settings(max_examples=1500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

_loop = asyncio.new_event_loop()


def read_all(data: bytes, max_size: int = mc.MAX_PACKET) -> tuple[list[mc.Packet], str]:
    """Every packet `read_packet` reads from `data` then end of stream, and how reading ended."""

    async def run() -> tuple[list[mc.Packet], str]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        packets: list[mc.Packet] = []
        while True:
            if reader.at_eof():  # every byte read, at a packet boundary
                return packets, "eof"
            try:
                packets.append(await mc.read_packet(reader, max_size))
            except asyncio.IncompleteReadError:  # the stream ended inside a packet
                return packets, "incomplete"
            except mc.ProtocolError as exc:
                assert str(exc), "a ProtocolError names what is wrong"
                return packets, "protocol"

    return _loop.run_until_complete(run())


def is_packet(p: object) -> bool:
    return isinstance(p, mc.Connect | mc.Publish | mc.Subscribe | mc.Unsubscribe | mc.Simple)


# a valid UTF-8 MQTT string: no U+0000, no surrogates
mqtt_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
frames = st.builds(mc.packet, st.integers(0, 255), st.binary(max_size=80))


@MANY
@given(st.binary(max_size=600))
@example(b"\x30\xff\xff\xff\xff\x01")  # remaining length longer than 4 bytes
@example(b"\x30\xff\xff\xff\x7f")  # 256 MB announced
@example(b"\x10\x00")  # CONNECT without a body
@example(b"\x82\x02\x00\x01")  # SUBSCRIBE without a topic filter
@example(b"\x36\x03\x00\x01a")  # PUBLISH with QoS 3
def test_any_bytes_read_as_packets_or_end_in_a_protocol_error(data):
    packets, end = read_all(data)
    assert end in ("eof", "incomplete", "protocol")
    assert all(is_packet(p) for p in packets)


@MANY
@given(st.lists(frames, max_size=4))
def test_well_framed_packets_of_any_content_decode_or_are_refused(chunks):
    data = b"".join(chunks)
    packets, end = read_all(data)
    assert end in ("eof", "protocol")  # whole frames: never a partial read
    assert all(is_packet(p) for p in packets)
    if end == "eof":
        assert len(packets) == len(chunks)


@MANY
@given(st.integers(0, 255), st.binary(max_size=200))
def test_decode_raises_only_protocol_error(first, body):
    try:
        packet = mc.decode(first, body)
    except mc.ProtocolError:
        return
    assert is_packet(packet)
    if isinstance(packet, mc.Simple):
        assert packet.kind == first >> 4
    elif isinstance(packet, mc.Publish):
        assert first >> 4 == mc.PUBLISH and packet.qos == (first >> 1) & 3


@SOME
@given(st.integers(0, 268_435_455))
def test_remaining_length_reads_back(n):
    header = bytes([mc.PUBLISH << 4]) + mc._length(n)
    assert 1 <= len(header) - 1 <= 4
    packets, end = read_all(header, max_size=n - 1 if n else 0)
    if n == 0:  # an empty PUBLISH body: too short for its topic
        assert end == "protocol"
    else:  # the announced length, read back, is over a limit one below it
        assert end == "protocol" and packets == []
        with pytest.raises(mc.ProtocolError, match=f"packet of {n} bytes"):
            _loop.run_until_complete(_read_one(header, n - 1))


async def _read_one(data: bytes, max_size: int) -> mc.Packet:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await mc.read_packet(reader, max_size)


@MANY
@given(mqtt_text, st.binary(max_size=300), st.sampled_from([0, 1]), st.integers(1, 65535), st.booleans())
def test_publish_round_trips(topic, payload, qos, packet_id, dup):
    packets, end = read_all(mc.publish(topic, payload, qos, packet_id, dup=dup))
    assert end == "eof"
    assert packets == [mc.Publish(topic, payload, qos, packet_id if qos else None, dup, False)]


@SOME
@given(st.lists(st.tuples(mqtt_text, st.integers(0, 2)), min_size=1, max_size=5), st.integers(0, 65535))
def test_subscribe_round_trips(topics, packet_id):
    body = struct.pack("!H", packet_id) + b"".join(mc._text(t) + bytes([q]) for t, q in topics)
    packets, end = read_all(mc.packet((mc.SUBSCRIBE << 4) | 0x02, body))
    assert end == "eof" and packets == [mc.Subscribe(packet_id, list(topics))]


@SOME
@given(mqtt_text, st.one_of(st.none(), mqtt_text), st.one_of(st.none(), st.binary(max_size=60)),
       st.integers(0, 65535), st.booleans())
def test_connect_round_trips(client_id, username, password, keep_alive, clean):
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0) | (0x02 if clean else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", keep_alive) + mc._text(client_id)
    body += (mc._text(username) if username is not None else b"")
    body += (struct.pack("!H", len(password)) + password if password is not None else b"")
    packets, end = read_all(mc.packet(mc.CONNECT << 4, body))
    assert end == "eof"
    assert packets == [mc.Connect(client_id, username, password, keep_alive, clean, 4, False)]


@SOME
@given(mqtt_text, mqtt_text)
def test_a_nul_or_broken_utf8_in_a_string_field_is_refused(a, b):
    for bad in ((a + "\x00" + b).encode(), a.encode() + b"\xff" + b.encode()):
        packets, end = read_all(mc.packet(mc.PUBLISH << 4, struct.pack("!H", len(bad)) + bad + b"x"))
        assert (packets, end) == ([], "protocol")


@SOME
@given(st.text(alphabet="ab/+#", max_size=12), st.text(alphabet="ab/", max_size=12))
def test_topic_filters_match_as_mqtt_says(flt, topic):
    got = mc.topic_matches(flt, topic)
    if flt == topic and "+" not in flt and "#" not in flt:
        assert got
    if "+" not in flt and "#" not in flt and flt != topic:
        assert not got
    if flt == "#":
        assert got
