"""IoT Hub's built-in Event Hubs-compatible endpoint of the local hub, read with the unmodified `azure-eventhub`.

A device (and a module) send telemetry with `azure-iot-device` over MQTT, as on Azure;
`EventHubConsumerClient` reads it back over AMQP on port 5671 of the workspace's hub address
with the Event Hubs-compatible connection string and the workspace CA, as it reads Azure's
(CBS put-token, `$management`, receiver links with the selector filter). The live variant
reads a real hub's endpoint (`-m azure`, skipped without IOTHUB_CONNECTION_STRING and
IOTHUB_EVENTHUB_CONNECTION_STRING).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import uuid
from typing import Any

import pytest

pytest.importorskip("azure.eventhub")
pytest.importorskip("azure.iot.device")

from azure.eventhub import EventHubConsumerClient  # noqa: E402
from azure.eventhub.exceptions import AuthenticationError  # noqa: E402
from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message  # noqa: E402

from helpers.endpoints import local_eventhub  # noqa: E402
from helpers.errors import ConfigError, ServiceError, Unauthorized  # noqa: E402
from helpers.hub.telemetry import read_telemetry  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _message(n: int, tag: str) -> Message:
    msg = Message(json.dumps({"n": n, "tag": tag}), message_id=f"{tag}-{n}", content_encoding="utf-8",
                  content_type="application/json")
    msg.custom_properties["kind"] = "counts"
    msg.custom_properties["n"] = str(n)
    return msg


@pytest.fixture()
def device(cloud, unique_name):
    """A registered device connected with `azure-iot-device` (MQTT, workspace CA); yields (id, client)."""
    dev = unique_name("eh")
    cloud.hub.create_edge_device(dev)
    ca = local_eventhub(cloud.workspace).ca_file.read_text()
    client = IoTHubDeviceClient.create_from_connection_string(cloud.hub.connection_string(dev).get_secret_value(),
                                                              server_verification_cert=ca)
    client.connect()
    yield dev, client
    client.shutdown()


def _consumer(eh, **kw: Any) -> EventHubConsumerClient:
    return EventHubConsumerClient.from_connection_string(eh.connection_string.get_secret_value(), "$Default",
                                                         connection_verify=str(eh.ca_file), **kw)


def test_device_and_module_telemetry_arrive_with_iothub_annotations(cloud, device):
    dev, client = device
    eh = local_eventhub(cloud.workspace)
    tag = uuid.uuid4().hex[:8]
    for n in range(3):
        client.send_message(_message(n, tag))
    cloud.hub.create_module(dev, "counter")
    module = IoTHubModuleClient.create_from_connection_string(
        cloud.hub.connection_string(dev, "counter").get_secret_value(), server_verification_cert=eh.ca_file.read_text())
    try:
        module.connect()
        module.send_message(Message(b"\x00\x01raw", message_id=f"{tag}-module"))
    finally:
        module.shutdown()

    consumer = _consumer(eh)
    got: list[tuple[str, Any]] = []
    done = threading.Event()

    def on_event(ctx, event) -> None:
        if event.system_properties.get(b"iothub-connection-device-id") == dev.encode():
            got.append((ctx.partition_id, event))
            if len(got) >= 4:
                done.set()

    with consumer:
        props = consumer.get_eventhub_properties()
        assert props["eventhub_name"] == eh.name and props["partition_ids"] == ["0", "1", "2", "3"]
        worker = threading.Thread(target=consumer.receive, kwargs={"on_event": on_event, "starting_position": "-1"})
        worker.start()
        try:
            assert done.wait(60), f"only {len(got)} of 4 events arrived"
        finally:
            consumer.close()
            worker.join(30)
    assert not worker.is_alive()

    partitions = {p for p, _ in got}
    assert len(partitions) == 1  # a device's (and its modules') messages share a partition, in order
    events = [e for _, e in got]
    for n, event in enumerate(events[:3]):
        sp = event.system_properties
        assert json.loads(event.body_as_str()) == {"n": n, "tag": tag}
        assert event.properties == {b"kind": b"counts", b"n": str(n).encode()}
        assert event.content_type == "application/json" and sp[b"content-encoding"] == b"utf-8"
        assert sp[b"message-id"] == f"{tag}-{n}".encode() and event.message_id == f"{tag}-{n}"
        assert sp[b"iothub-connection-device-id"] == dev.encode() and b"iothub-connection-module-id" not in sp
        assert sp[b"iothub-message-source"] == b"Telemetry"
        assert isinstance(sp[b"iothub-enqueuedtime"], int) and sp[b"x-opt-enqueued-time"] == sp[b"iothub-enqueuedtime"]
        assert abs(event.enqueued_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    seqs = [e.sequence_number for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[-1] - seqs[0] == 3  # contiguous in the partition
    assert [int(e.offset) for e in events] == sorted(int(e.offset) for e in events)
    raw = events[3]
    assert raw.system_properties[b"iothub-connection-module-id"] == b"counter"
    body = raw.body
    assert (body if isinstance(body, bytes) else b"".join(body)) == b"\x00\x01raw"  # a Data section: bytes as sent

    with _consumer(eh) as c:
        info = c.get_partition_properties(got[0][0])
    assert info["last_enqueued_sequence_number"] >= seqs[-1] and not info["is_empty"]
    assert info["beginning_sequence_number"] == 0


def test_helper_reads_with_offsets_sequence_numbers_and_times(cloud, device):
    dev, client = device
    eh = local_eventhub(cloud.workspace)
    tag = uuid.uuid4().hex[:8]
    for n in range(4):
        client.send_message(_message(n, tag))
    everything = read_telemetry(eh.connection_string, eh.ca_file, device_id=dev, max_events=4, timeout_s=60)
    assert [t.json["n"] for t in everything] == [0, 1, 2, 3]
    first = everything[0]
    assert first.device_id == dev and first.module_id is None and first.properties == {"kind": "counts", "n": "0"}
    assert first.message_id == f"{tag}-0" and first.content_type == "application/json" and first.content_encoding == "utf-8"
    pid = first.partition_id
    second = everything[1]

    by_seq = read_telemetry(eh.connection_string, eh.ca_file, partition_id=pid, device_id=dev,
                            starting_position={pid: second.sequence_number}, max_events=2, timeout_s=30)
    assert [t.json["n"] for t in by_seq] == [2, 3]  # after sequence number (exclusive)
    by_offset = read_telemetry(eh.connection_string, eh.ca_file, partition_id=pid, device_id=dev,
                               starting_position=second.offset, inclusive=True, max_events=3, timeout_s=30)
    assert [t.json["n"] for t in by_offset] == [1, 2, 3]  # from offset (inclusive)
    by_time = read_telemetry(eh.connection_string, eh.ca_file, partition_id=pid, device_id=dev,
                             starting_position=everything[3].enqueued_time, inclusive=True, max_events=1, timeout_s=30)
    assert by_time[0].json["n"] == 3

    # @latest: only what is sent after the receiver attached (messages are sent until one arrives)
    result: list[Any] = []
    reader = threading.Thread(target=lambda: result.extend(read_telemetry(
        eh.connection_string, eh.ca_file, partition_id=pid, device_id=dev, starting_position="@latest",
        max_events=1, timeout_s=60)))
    reader.start()
    n = 100
    while reader.is_alive() and n < 160:
        client.send_message(_message(n, tag))
        n += 1
        reader.join(0.5)
    reader.join(60)
    assert result and result[0].json["n"] >= 100  # none of the earlier messages


def test_read_is_bounded_and_wrong_credentials_are_refused(cloud):
    eh = local_eventhub(cloud.workspace)
    out = read_telemetry(eh.connection_string, eh.ca_file, device_id="nobody-sends-" + uuid.uuid4().hex, timeout_s=2)
    assert out == []  # returned by itself after timeout_s, with no event for that device
    assert not [t for t in threading.enumerate() if t.name == "read-telemetry"]  # its receiver thread ended

    cs = eh.connection_string.get_secret_value()
    key = cs.split("SharedAccessKey=", 1)[1].split(";", 1)[0]
    wrong = cs.replace(key, "d3Jvbmcta2V5LW9mLXRoZS1yaWdodC1sZW5ndGgtMTIzNDU=")
    with EventHubConsumerClient.from_connection_string(wrong, "$Default", connection_verify=str(eh.ca_file),
                                                       retry_total=0) as bad:
        with pytest.raises(AuthenticationError, match="signature does not match"):
            bad.get_partition_ids()
    with pytest.raises(Unauthorized, match="refused the credential"):
        read_telemetry(wrong, eh.ca_file, timeout_s=5, retries=0)
    with pytest.raises(ServiceError, match="consumer group"):
        read_telemetry(cs, eh.ca_file, consumer_group="nope", timeout_s=5, retries=0)
    with pytest.raises(ConfigError, match="does not exist"):
        read_telemetry(cs, eh.ca_file.with_name("missing.pem"), timeout_s=1)


def test_port_clash_is_reported_and_the_rest_serves(tmp_path):
    from helpers.localcloud import ensure_running, stop
    from helpers.localcloud.common import tls

    ws = tmp_path / "ws"
    address = tls.hub_address(ws)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind((address, 5671))
        blocker.listen(1)
        info = ensure_running(ws)
        try:
            assert info["running"] and "5671" in info["eventhub_error"] and "taken" in info["eventhub_error"]
            with pytest.raises(ConfigError, match="did not start"):
                local_eventhub(ws)
            log = (ws / "localcloud" / "service.log").read_text()
            assert "Event Hubs-compatible endpoint" in log and "taken by another process" in log
        finally:
            stop(ws)
    finally:
        blocker.close()


@pytest.mark.azure
@pytest.mark.live
@pytest.mark.timeout(600)
def test_live_azure_builtin_endpoint(tmp_path):
    hub_cs = os.environ.get("IOTHUB_CONNECTION_STRING", "")
    eh_cs = os.environ.get("IOTHUB_EVENTHUB_CONNECTION_STRING", "")
    if not hub_cs or not eh_cs:
        pytest.skip("IOTHUB_CONNECTION_STRING and IOTHUB_EVENTHUB_CONNECTION_STRING (the hub's Built-in endpoints > "
                    "Event Hub-compatible endpoint, iothubowner) are not both set")
    from helpers.hub import get_hub

    hub = get_hub("azure", workspace=tmp_path, connection_string=hub_cs)
    dev = f"edgeloop-eh-{uuid.uuid4().hex[:8]}"
    hub.create_edge_device(dev)
    try:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
        client = IoTHubDeviceClient.create_from_connection_string(hub.connection_string(dev).get_secret_value())
        client.connect()
        try:
            client.send_message(_message(7, "live"))
        finally:
            client.shutdown()
        got = read_telemetry(eh_cs, None, device_id=dev, starting_position=start, max_events=1, timeout_s=120)
        assert got and got[0].json == {"n": 7, "tag": "live"} and got[0].properties["kind"] == "counts"
        assert got[0].message_id == "live-7" and got[0].content_type == "application/json"
    finally:
        hub.delete_device(dev)
