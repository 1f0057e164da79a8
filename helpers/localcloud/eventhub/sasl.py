"""SASL `MSSBCBS` (IoT Hub's and Service Bus's "authenticate later on $cbs") beside `ANONYMOUS`.

`uamqp`, the AMQP stack of `azure-iot-hub` (cloud-to-device messages), asks for the SASL
mechanism `MSSBCBS` and gives up when the server does not offer it; `azure-eventhub`'s stack
asks for `ANONYMOUS`. Both mean the same: no credential in SASL, a CBS token on `$cbs` next.
Proton's built-in SASL serves `ANONYMOUS` only, so the server offers both names (the
outgoing `sasl-mechanisms` frame gets `MSSBCBS` added) and a client's `sasl-init` choosing
`MSSBCBS` reaches proton as `ANONYMOUS`. Both frames are decoded and encoded by proton's own
codec (`proton.Data`); the rest of the stream passes untouched, and once the client sends its
AMQP protocol header (the SASL layer is over) nothing more is looked at.
"""
from __future__ import annotations

import struct
from typing import Any

from proton import UNDESCRIBED, Array, Data, Described, symbol, ulong

from helpers.localcloud.eventhub.frames import PROTOCOL_HEADER

CBS_MECHANISM = "MSSBCBS"
ANONYMOUS = "ANONYMOUS"
SASL_FRAME = 1  # frame type of the SASL layer (AMQP 1.0 part 5.3.1)
SASL_MECHANISMS = 0x40
SASL_INIT = 0x41


def _split(frame: bytes) -> tuple[bytes, Any] | None:
    """(frame header, decoded performative) of a SASL frame, else None."""
    if len(frame) < 8:
        return None
    doff = frame[4] * 4
    if frame[5] != SASL_FRAME or len(frame) <= doff:
        return None
    data = Data()
    data.decode(frame[doff:])
    data.rewind()
    if not data.next():
        return None
    obj = data.get_object()
    if not isinstance(obj, Described):
        return None
    return frame[4:doff], obj


def _frame(header_rest: bytes, performative: Described) -> bytes:
    data = Data()
    data.put_object(performative)
    body = data.encode()
    return struct.pack(">I", 4 + len(header_rest) + len(body)) + header_rest + body


def offer_cbs(frame: bytes) -> bytes:
    """An outgoing frame, with `MSSBCBS` added to a `sasl-mechanisms` frame's list."""
    parts = _split(frame)
    if parts is None or parts[1].descriptor != SASL_MECHANISMS:
        return frame
    header_rest, perf = parts
    offered = perf.value[0] if perf.value else []
    names = [str(m) for m in (offered.elements if isinstance(offered, Array) else
                              offered if isinstance(offered, (list, tuple)) else [offered])]
    if CBS_MECHANISM not in names:
        names.append(CBS_MECHANISM)
    mechanisms = Array(UNDESCRIBED, Data.SYMBOL, *[symbol(n) for n in names])
    return _frame(header_rest, Described(ulong(SASL_MECHANISMS), [mechanisms]))


def init_as_anonymous(frame: bytes) -> bytes:
    """An incoming frame, with a `sasl-init` choosing `MSSBCBS` turned into one choosing `ANONYMOUS`."""
    parts = _split(frame)
    if parts is None or parts[1].descriptor != SASL_INIT:
        return frame
    header_rest, perf = parts
    fields = list(perf.value)
    if not fields or str(fields[0]) != CBS_MECHANISM:
        return frame
    fields[0] = symbol(ANONYMOUS)
    return _frame(header_rest, Described(ulong(SASL_INIT), fields))


class SaslInbound:
    """The client's bytes until its SASL layer is over, `sasl-init` frames passed through `init_as_anonymous`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The bytes to push into proton after `data` (incomplete frames are kept for the next call)."""
        if self.done:
            return data
        self._buf += data
        out = bytearray()
        while not self.done:
            if self._buf[:4] == PROTOCOL_HEADER:
                if len(self._buf) < 8:
                    break
                header = bytes(self._buf[:8])
                del self._buf[:8]
                out += header
                self.done = header[4] != 3  # protocol id 3 opens the SASL layer; 0 (AMQP) or 2 (TLS) follow it
                continue
            if len(self._buf) < 8:
                break
            size = struct.unpack(">I", self._buf[:4])[0]
            if size < 8:  # not a frame: proton reads it and answers with its framing error
                self.done = True
                break
            if len(self._buf) < size:
                break
            out += init_as_anonymous(bytes(self._buf[:size]))
            del self._buf[:size]
        if self.done:
            out += self._buf
            self._buf.clear()
        return bytes(out)


__all__ = ["CBS_MECHANISM", "SaslInbound", "init_as_anonymous", "offer_cbs"]
