"""Cloud-to-device messages: `azure-iot-hub` sends over AMQP, `azure-iot-device` receives over MQTT.

The unmodified service SDK (`IoTHubRegistryManager.send_c2d_message`, uamqp: SASL MSSBCBS, a
service token on `$cbs`, a sender link to `/messages/devicebound`) talks to port 5671 of the
stand-in's hub address; it trusts the workspace CA through OpenSSL's `SSL_CERT_FILE`, as a user of
the stand-in would set it. `helpers.hub.c2d.send_c2d_message` sets the CA on its own client
instead. The device receives with `on_message_received` (MQTT `devicebound`), messages wait
while it is offline, each is delivered once (completed on PUBACK), and IoT Hub's refusals (no
such device, 50 waiting, expired, wrong key) reach the sender. The live variant sends through a
real hub (`-m azure`, skipped without IOTHUB_CONNECTION_STRING).
"""
from __future__ import annotations

import os
import queue
import re
import time
import uuid
from typing import Any

import pytest

pytest.importorskip("uamqp")
pytest.importorskip("azure.iot.device")

from azure.iot.device import IoTHubDeviceClient  # noqa: E402
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402

from helpers.config import Secret  # noqa: E402
from helpers.endpoints import local_hub  # noqa: E402
from helpers.errors import ServiceError  # noqa: E402
from helpers.hub.c2d import C2DSender, send_c2d_message  # noqa: E402
from helpers.localcloud.mqtt.devicebound import MAX_QUEUED  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def _order(message_id: str | None) -> tuple[int, str]:
    """Sort key of a message id: its trailing number (`tag-2`, `17`), then the id itself."""
    tail = re.search(r"(\d+)$", message_id or "")
    return (int(tail.group(1)) if tail else -1, message_id or "")


class Device:
    """A device connected with `azure-iot-device`, collecting what it receives."""

    def __init__(self, cloud: Any, device_id: str):
        ep = local_hub(cloud.workspace)
        self.client = IoTHubDeviceClient.create_from_connection_string(
            cloud.hub.connection_string(device_id).get_secret_value(), server_verification_cert=ep.ca_file.read_text())
        self.got: queue.Queue = queue.Queue()
        self.client.on_message_received = self.got.put
        self.client.connect()

    def receive(self, n: int, timeout_s: float = 20.0) -> list[Any]:
        """Up to `n` messages in the order of their `message_id`: the SDK calls `on_message_received` on a
        pool of 4 threads (`sync_handler_manager`), so the order the handler sees is not the order on the wire."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            try:
                out.append(self.got.get(timeout=max(0.05, deadline - time.monotonic())))
            except queue.Empty:
                break
        return sorted(out, key=lambda m: _order(m.message_id))

    def close(self) -> None:
        self.client.shutdown()


@pytest.fixture()
def sdk_registry(cloud, monkeypatch):
    """The unmodified `IoTHubRegistryManager` on the stand-in's service connection string (CA via SSL_CERT_FILE)."""
    ep = local_hub(cloud.workspace)
    monkeypatch.setenv("SSL_CERT_FILE", str(ep.ca_file))
    registry = IoTHubRegistryManager.from_connection_string(ep.connection_string.get_secret_value())
    yield registry
    registry.amqp_svc_client.disconnect_sync()


def test_sdk_messages_wait_for_an_offline_device_and_arrive_once(cloud, sdk_registry, unique_name):
    dev = unique_name("c2d")
    cloud.hub.create_edge_device(dev, edge=False)
    tag = uuid.uuid4().hex[:8]
    sdk_registry.send_c2d_message(dev, f'{{"n": 1, "tag": "{tag}"}}',
                                  {"contentType": "application/json", "contentEncoding": "utf-8", "messageId": f"{tag}-1",
                                   "correlationId": "corr/1", "kind": "blink & wait"})
    sdk_registry.send_c2d_message(dev, b"\x00\x01raw", {"messageId": f"{tag}-2"})
    device = Device(cloud, dev)
    try:
        first, second = device.receive(2)
        assert first.data == f'{{"n": 1, "tag": "{tag}"}}'.encode() and first.message_id == f"{tag}-1"
        assert (first.content_type, first.content_encoding, first.correlation_id) == ("application/json", "utf-8", "corr/1")
        assert first.custom_properties == {"kind": "blink & wait"}
        assert second.data == b"\x00\x01raw" and second.message_id == f"{tag}-2" and second.custom_properties == {}
        # online now: the next one arrives at once
        sdk_registry.send_c2d_message(dev, "three", {"messageId": f"{tag}-3"})
        (third,) = device.receive(1)
        assert third.data == b"three"
    finally:
        device.close()
    again = Device(cloud, dev)  # completed on PUBACK: nothing is delivered twice
    try:
        assert again.receive(1, timeout_s=2.0) == []
    finally:
        again.close()


def test_hub_client_sends_with_its_own_ca_and_the_hub_refuses_what_iot_hub_refuses(cloud, unique_name, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the CA reaches this client only, not through the process
    dev = unique_name("c2dq")
    cloud.hub.create_edge_device(dev, edge=False)
    with pytest.raises(ServiceError, match="refused"):
        send_c2d_message(cloud.hub, unique_name("nobody"), "x")
    past_ms = int((time.time() - 60) * 1000)
    with pytest.raises(ServiceError, match="refused"):
        send_c2d_message(cloud.hub, dev, "late", {"expiryTimeUtc": past_ms})
    with C2DSender(cloud.hub) as sender:
        for n in range(MAX_QUEUED):
            sender.send(dev, f"m{n}", {"messageId": str(n)})
        with pytest.raises(ServiceError, match="50 messages wait"):
            sender.send(dev, "one too many")
    device = Device(cloud, dev)
    try:
        got = device.receive(MAX_QUEUED + 1, timeout_s=20.0)
        assert [m.data.decode() for m in got] == [f"m{n}" for n in range(MAX_QUEUED)]
    finally:
        device.close()
    # a message that expires while the device is offline is never delivered
    other = unique_name("c2dx")
    cloud.hub.create_edge_device(other, edge=False)
    send_c2d_message(cloud.hub, other, "short-lived", {"expiryTimeUtc": int((time.time() + 1.0) * 1000)})
    send_c2d_message(cloud.hub, other, "kept")
    time.sleep(1.5)
    device = Device(cloud, other)
    try:
        assert [m.data for m in device.receive(2, timeout_s=5.0)] == [b"kept"]
    finally:
        device.close()
    bad = Secret(local_hub(cloud.workspace).connection_string.get_secret_value().rsplit("SharedAccessKey=", 1)[0]
                 + "SharedAccessKey=" + "A" * 43 + "=", "cs")
    with pytest.raises(ServiceError, match="cannot send"):
        send_c2d_message(None, other, "x", connection_string=bad, ca_file=local_hub(cloud.workspace).ca_file)


@pytest.mark.azure
@pytest.mark.live
@pytest.mark.timeout(300)
def test_live_azure_c2d_round_trip(tmp_path):
    if not os.environ.get("IOTHUB_CONNECTION_STRING"):
        pytest.skip("IOTHUB_CONNECTION_STRING (the hub's iothubowner connection string) is not set")
    from helpers.hub import get_hub

    hub = get_hub("azure", workspace=tmp_path)
    dev = f"edgeloop-c2d-{uuid.uuid4().hex[:8]}"
    hub.create_edge_device(dev, edge=False)
    try:
        send_c2d_message(hub, dev, "live", {"messageId": "live-1"})
        client = IoTHubDeviceClient.create_from_connection_string(hub.connection_string(dev).get_secret_value())
        got: queue.Queue = queue.Queue()
        client.on_message_received = got.put
        client.connect()
        try:
            msg = got.get(timeout=60)
            assert msg.data == b"live" and msg.message_id == "live-1"
        finally:
            client.shutdown()
    finally:
        hub.delete_device(dev)
