"""The built-in endpoint's pure parts against `azure-eventhub`'s own encoders: frame padding, selectors, CBS tokens."""
from __future__ import annotations

import datetime as dt
import struct
import time

import pytest

pytest.importorskip("azure.eventhub")
pytest.importorskip("proton")

from azure.eventhub._pyamqp._decode import decode_frame  # noqa: E402  (the client's own frame decoder)
from azure.eventhub._pyamqp.utils import generate_sas_token  # noqa: E402  (the client's own token signer)
from azure.eventhub._utils import event_position_selector  # noqa: E402

from helpers.config import Secret  # noqa: E402
from helpers.errors import Unauthorized  # noqa: E402
from helpers.localcloud.eventhub.auth import TokenChecker  # noqa: E402
from helpers.localcloud.eventhub.frames import FramePadder, pad_frame  # noqa: E402
from helpers.localcloud.eventhub.wire import BadRequest, parse_selector  # noqa: E402


def _frame(code: int, elements: bytes, count: int, payload: bytes = b"") -> bytes:
    body = bytes([0x00, 0x53, code, 0xC0, len(elements) + 1, count]) + elements + payload
    return struct.pack(">I", 8 + len(body)) + bytes([2, 0, 0, 0]) + body


def test_short_performatives_are_padded_to_what_the_client_indexes():
    # open with container-id "c" only (what proton sends when the rest is null)
    open_frame = _frame(0x10, b"\xa1\x01c", 1)
    padded = pad_frame(open_frame)
    code, fields = decode_frame(memoryview(padded)[8:])
    assert code == 0x10 and len(fields) == 10 and fields[0] == b"c" and fields[9] is None
    # a transfer of 3 fields and a payload: the payload lands at index 11, where the receiver reads it
    transfer = _frame(0x14, b"\x43\x43\xa0\x01t", 3, payload=b"\x00\x53\x75\xa0\x02hi")
    code, fields = decode_frame(memoryview(pad_frame(transfer))[8:])
    assert code == 0x14 and len(fields) == 12 and bytes(fields[11]) == b"\x00\x53\x75\xa0\x02hi"


def test_padder_splits_a_stream_into_headers_and_frames():
    header = b"AMQP\x00\x01\x00\x00"
    heartbeat = struct.pack(">I", 8) + bytes([2, 0, 0, 0])
    stream = header + _frame(0x17, b"", 0) + heartbeat
    padder = FramePadder()
    out = padder.feed(stream[:5]) + padder.feed(stream[5:13]) + padder.feed(stream[13:])
    assert out.startswith(header) and out.endswith(heartbeat)
    _, fields = decode_frame(memoryview(out[8:-8])[8:])
    assert fields == [None]  # end with its one (null) field


def test_selectors_the_client_sends():
    assert parse_selector(event_position_selector("-1").decode()).value == -1
    assert parse_selector(event_position_selector("@latest").decode()).latest
    seq = parse_selector(event_position_selector(42, inclusive=True).decode())
    assert (seq.field, seq.op, seq.value) == ("seq", ">=", 42)
    when = parse_selector(event_position_selector(dt.datetime(2026, 1, 2, tzinfo=dt.UTC)).decode())
    assert when.field == "enqueued" and when.value == 1767312000000
    assert parse_selector(None).latest
    with pytest.raises(BadRequest, match="not understood"):
        parse_selector("amqp.annotation.x-opt-offset < '5'")


def test_cbs_tokens_signed_as_the_client_signs():
    key = "c2VydmljZS1rZXk="
    checker = TokenChecker(("127.1.2.3",), "edgeloop-127-1-2-3", "iothubowner", Secret(key))
    audience = "sb://127.1.2.3/edgeloop-127-1-2-3/ConsumerGroups/$Default"
    grant = checker.check(generate_sas_token(audience, "iothubowner", key), "servicebus.windows.net:sastoken")
    assert grant.covers("edgeloop-127-1-2-3/ConsumerGroups/$Default/Partitions/0")
    assert not grant.covers("edgeloop-127-1-2-3/ConsumerGroups/other/Partitions/0")
    with pytest.raises(Unauthorized, match="signature does not match"):
        checker.check(generate_sas_token(audience, "iothubowner", "d3Jvbmc="))
    with pytest.raises(Unauthorized, match="EntityPath"):
        checker.check(generate_sas_token("sb://127.1.2.3/other", "iothubowner", key))
    with pytest.raises(Unauthorized, match="expired"):
        checker.check(generate_sas_token(audience, "iothubowner", key, int(time.time()) - 10))
    with pytest.raises(Unauthorized, match="token type"):
        checker.check("Bearer x", "jwt")
