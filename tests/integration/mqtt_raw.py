"""A raw MQTT device for the fuzzing and hostile-device tests: TLS sockets that send exactly the bytes
they are given to the local hub's MQTT endpoint (what `azure-iot-device` never does wrong).

Also: a dedicated local cloud for a test module (hostile input must not reach the shared one), the
hub's service SDK clients for it, and the service log's unexpected errors since a mark.
"""
from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import parse_connection_string
from helpers.localcloud.common import tls
from helpers.localcloud.mqtt import codec as mc
from helpers.protocol.sas import generate_sas_token

PINGREQ = mc.packet(mc.PINGREQ << 4, b"")
PINGRESP_FIRST = mc.PINGRESP << 4
#: what the service log holds when a handler let an exception out (asyncio's, uvicorn's and ours)
UNEXPECTED = ("Unhandled exception", "Traceback (most recent call last)", "Exception in callback",
              "unhandled error on", "Exception in ASGI application", "handling its packets, closing")


@dataclass
class OwnCloud:
    """A local cloud started for one test module."""

    workspace: Path
    url: str
    pid: int
    info: dict[str, Any]

    @property
    def address(self) -> str:
        return tls.hub_address(self.workspace)

    @property
    def log(self) -> Path:
        return self.workspace / "localcloud" / "service.log"

    def log_mark(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def unexpected_since(self, mark: int) -> list[str]:
        """Lines of the service log written after `mark` that tell of an exception nobody handled."""
        with self.log.open("rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
        return [ln for ln in text.splitlines() if any(u in ln for u in UNEXPECTED)]

    def log_since(self, mark: int) -> str:
        with self.log.open("rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def credentials(self) -> dict[str, str]:
        return json.loads((self.workspace / "localcloud" / "credentials.json").read_text())

    def service_token(self) -> str:
        parts = parse_connection_string(self.credentials()["service_connection_string"])
        return generate_sas_token(parts["HostName"], parts["SharedAccessKey"], "iothubowner").get_secret_value()

    def registry(self) -> Any:
        """`IoTHubRegistryManager` (azure-iot-hub) on this hub's HTTPS endpoint, trusting its CA."""
        from azure.iot.hub import IoTHubRegistryManager

        from helpers.localcloud.service import hub_credentials

        creds = hub_credentials(self.workspace)
        rm = IoTHubRegistryManager.from_connection_string(creds["service_connection_string"])
        rm.protocol.config.connection.verify = creds["ca_file"]
        return rm


@contextmanager
def own_cloud(workspace: Path) -> Iterator[OwnCloud]:
    """Start a local cloud in `workspace`; stop it (SIGTERM, by pid) at the end."""
    from helpers.localcloud import ensure_running, stop

    info = ensure_running(workspace)
    try:
        yield OwnCloud(workspace=workspace, url=info["url"], pid=info["pid"], info=info)
    finally:
        stop(workspace)


def create_device(cloud: OwnCloud, device_id: str) -> str:
    """Register `device_id` (SAS) with the service SDK; its primary key."""
    rm = cloud.registry()
    return rm.create_device_with_sas(device_id, None, None, "enabled").authentication.symmetric_key.primary_key


def connect_packet(cloud: OwnCloud, device_id: str, key: str, keep_alive: int = 60, clean: bool = True) -> bytes:
    """CONNECT as the device SDK sends it: username `{host}/{id}/?api-version=`, a SAS token as password."""
    address = cloud.address
    flags = 0xC0 | (0x02 if clean else 0)  # username + password (+ clean session)
    body = (b"\x00\x04MQTT\x04" + bytes([flags]) + keep_alive.to_bytes(2, "big") + mc._text(device_id)
            + mc._text(f"{address}/{device_id}/?api-version=2021-04-12")
            + mc._text(generate_sas_token(f"{address}/devices/{device_id}", key).get_secret_value()))
    return mc.packet(mc.CONNECT << 4, body)


def tls_socket(cloud: OwnCloud, timeout_s: float = 5.0) -> ssl.SSLSocket:
    address = cloud.address
    sock = socket.create_connection((address, 8883), timeout_s)
    return tls.client_ssl_context(cloud.workspace).wrap_socket(sock, server_hostname=address)


def connected(cloud: OwnCloud, device_id: str, key: str, keep_alive: int = 60, clean: bool = True) -> ssl.SSLSocket:
    """A TLS socket past CONNECT/CONNACK (accepted) for `device_id`."""
    sock = tls_socket(cloud)
    sock.sendall(connect_packet(cloud, device_id, key, keep_alive, clean))
    got = read_exactly(sock, 4)
    if got[:1] != b"\x20" or got[3:4] != b"\x00":
        sock.close()
        raise AssertionError(f"CONNACK not accepted for {device_id}: {got!r}")
    return sock


def read_exactly(sock: ssl.SSLSocket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_until_closed(sock: ssl.SSLSocket, timeout_s: float, stop_at_pingresp: bool | int = False) -> tuple[list[tuple[int, bytes]], str]:
    """The packets the broker sends within `timeout_s` and how it ended: `closed`, `pingresp` or `timeout`.

    Packets are `(first byte, body)`; reading stops at the first PINGRESP when `stop_at_pingresp`
    is True, at the n-th when it is a number n.
    """
    wanted = int(stop_at_pingresp)
    seen = 0
    deadline = time.monotonic() + timeout_s
    data = b""
    packets: list[tuple[int, bytes]] = []
    while True:
        # split what arrived into whole packets
        while True:
            frame = split_frame(data)
            if frame is None:
                break
            first, body, used = frame
            packets.append((first, body))
            data = data[used:]
            if first == PINGRESP_FIRST:
                seen += 1
                if wanted and seen >= wanted:
                    return packets, "pingresp"
        left = deadline - time.monotonic()
        if left <= 0:
            return packets, "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return packets, "timeout"
        except (ConnectionError, ssl.SSLError, OSError):
            return packets, "closed"
        if not chunk:
            return packets, "closed"
        data += chunk


def split_frame(data: bytes) -> tuple[int, bytes, int] | None:
    """`(first byte, body, bytes used)` of the first whole packet in `data`, None when incomplete."""
    if len(data) < 2:
        return None
    length, multiplier, i = 0, 1, 1
    while True:
        if i >= len(data) or i > 4:
            return None
        byte = data[i]
        length += (byte & 0x7F) * multiplier
        i += 1
        if not byte & 0x80:
            break
        multiplier *= 128
    if len(data) < i + length:
        return None
    return data[0], data[i:i + length], i + length


def twin_topic_status(topic: str) -> int | None:
    """The status of a `$iothub/twin/res/{status}/?$rid=` topic."""
    if not topic.startswith("$iothub/twin/res/"):
        return None
    return int(topic[len("$iothub/twin/res/"):].split("/", 1)[0])


def decode_publish(first: int, body: bytes) -> mc.Publish:
    """A PUBLISH the broker sent (the codec reads client packets; a PUBLISH is the same both ways)."""
    return mc.decode(first, body)  # type: ignore[return-value]


def subscribe_packet(packet_id: int, topics: list[tuple[str, int]]) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(mc._text(t) + bytes([q]) for t, q in topics)
    return mc.packet((mc.SUBSCRIBE << 4) | 0x02, body)
