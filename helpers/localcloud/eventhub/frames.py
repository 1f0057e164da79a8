"""Outgoing AMQP frames with every performative field present, as Event Hubs sends them.

AMQP 1.0 lets a sender leave out trailing null fields of a performative (proton does), but
`azure-eventhub`'s pure-Python AMQP stack (`azure/eventhub/_pyamqp`, the default transport)
reads performative fields by position: `_connection._incoming_open` reads `frame[9]`,
`session._incoming_begin` `frame[7]`, `link._incoming_attach` `frame[13]`, and a transfer's
payload is expected at index 11 (`receiver._incoming_transfer`). Azure's service always sends
every field, so that client never meets a short list. This module pads each outgoing frame's
performative list to its full field count with AMQP nulls (0x40), leaving everything else
(values, payloads, SASL layer framing) as proton encoded it. It decodes no AMQP value.
"""
from __future__ import annotations

import struct
from collections.abc import Callable

#: performative descriptor code -> number of fields (AMQP 1.0 part 2.7, and the SASL frames of part 5.3)
FIELD_COUNTS = {
    0x10: 10,  # open
    0x11: 8,   # begin
    0x12: 14,  # attach
    0x13: 11,  # flow
    0x14: 11,  # transfer
    0x15: 6,   # disposition
    0x16: 3,   # detach
    0x17: 1,   # end
    0x18: 1,   # close
    0x40: 1,   # sasl-mechanisms
    0x41: 3,   # sasl-init
    0x42: 1,   # sasl-challenge
    0x43: 1,   # sasl-response
    0x44: 2,   # sasl-outcome
}
NULL = b"\x40"
PROTOCOL_HEADER = b"AMQP"


class FrameError(ValueError):
    """The byte stream is not AMQP frames (a bug in the encoder upstream, never client input)."""


def pad_frame(frame: bytes) -> bytes:
    """`frame` (one whole frame) with its performative list padded to the full field count."""
    doff = frame[4] * 4
    body = frame[doff:]
    if len(body) < 4 or body[0] != 0x00 or body[1] != 0x53:  # empty (heartbeat) frame, or a ulong descriptor
        return frame
    code, ctor = body[2], body[3]
    want = FIELD_COUNTS.get(code)
    if want is None:
        return frame
    if ctor == 0x45:  # list0
        count, elements_at, end = 0, 4, 4
    elif ctor == 0xC0:  # list8: size, count
        size, count = body[4], body[5]
        elements_at, end = 6, 5 + size
    elif ctor == 0xD0:  # list32
        size, count = struct.unpack(">II", body[4:12])
        elements_at, end = 12, 8 + size
    else:
        raise FrameError(f"performative 0x{code:02x} is not a list (constructor 0x{ctor:02x})")
    if count >= want:
        return frame
    elements = body[elements_at:end] + NULL * (want - count)
    if len(elements) + 1 <= 0xFF:
        lst = bytes([0xC0, len(elements) + 1, want]) + elements
    else:
        lst = b"\xd0" + struct.pack(">II", len(elements) + 4, want) + elements
    new_body = body[:3] + lst + body[end:]  # body[end:]: a transfer's payload
    return struct.pack(">I", doff + len(new_body)) + frame[4:doff] + new_body


class FramePadder:
    """Splits an outgoing byte stream into protocol headers and frames, padding each frame.

    Args:
        rewrite: applied to each whole frame before padding (`sasl.offer_cbs`); None: none.
    """

    def __init__(self, rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self._buf = bytearray()
        self._rewrite = rewrite

    def feed(self, data: bytes) -> bytes:
        """The bytes ready to send after `data`: whole headers and (padded) frames; the rest is kept."""
        self._buf += data
        out = bytearray()
        while True:
            if len(self._buf) >= 4 and self._buf[:4] == PROTOCOL_HEADER:
                if len(self._buf) < 8:
                    break
                out += self._buf[:8]
                del self._buf[:8]
                continue
            if len(self._buf) < 8:
                break
            size = struct.unpack(">I", self._buf[:4])[0]
            if size < 8:
                raise FrameError(f"frame size {size} is below the 8-byte frame header")
            if len(self._buf) < size:
                break
            frame = bytes(self._buf[:size])
            out += pad_frame(self._rewrite(frame) if self._rewrite is not None else frame)
            del self._buf[:size]
        return bytes(out)


__all__ = ["FIELD_COUNTS", "FrameError", "FramePadder", "pad_frame"]
