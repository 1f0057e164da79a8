"""SASL MSSBCBS beside ANONYMOUS (proton's own engines on both ends), and cloud-to-device topics and tokens
read back by the vendors' own code (`azure-iot-device`'s topic parser, `azure-iot-hub`'s uamqp token)."""
from __future__ import annotations

import base64
import time

import pytest

pytest.importorskip("proton")
pytest.importorskip("azure.iot.device")

from azure.iot.device import Message  # noqa: E402
from azure.iot.device.iothub.pipeline.mqtt_topic_iothub import extract_message_properties_from_topic  # noqa: E402
from proton import SASL, Connection, Data, Described, Transport, symbol, ulong  # noqa: E402

from helpers.config import Secret  # noqa: E402
from helpers.errors import Unauthorized  # noqa: E402
from helpers.localcloud.eventhub.devicebound import ServiceTokenChecker, is_devicebound, is_hub_token  # noqa: E402
from helpers.localcloud.eventhub.frames import FramePadder  # noqa: E402
from helpers.localcloud.eventhub.sasl import SaslInbound, _split, offer_cbs  # noqa: E402
from helpers.localcloud.mqtt.devicebound import DeviceboundMessage  # noqa: E402
from helpers.protocol.sas import new_key  # noqa: E402


def _sasl_init(mechanism: str) -> bytes:
    """The client's SASL header and `sasl-init` frame (uamqp sends `MSSBCBS` with no response), encoded by proton."""
    data = Data()
    data.put_object(Described(ulong(0x41), [symbol(mechanism), None, "127.0.0.9"]))
    body = data.encode()
    return b"AMQP\x03\x01\x00\x00" + (8 + len(body)).to_bytes(4, "big") + b"\x02\x01\x00\x00" + body


def _server() -> Transport:
    server = Transport(Transport.SERVER)
    server.sasl().allowed_mechs("ANONYMOUS")  # as the endpoint's
    server.bind(Connection())
    return server


def test_the_server_offers_mssbcbs_beside_anonymous():
    server = _server()
    server.push(b"AMQP\x03\x01\x00\x00")
    out = FramePadder(rewrite=offer_cbs).feed(bytes(server.peek(server.pending())))
    _, perf = _split(out[8:])
    assert perf.descriptor == 0x40 and [str(m) for m in perf.value[0].elements] == ["ANONYMOUS", "MSSBCBS"]


@pytest.mark.parametrize("mechanism", ["MSSBCBS", "ANONYMOUS"])
def test_uamqp_and_pyamqp_mechanisms_both_pass_sasl(mechanism):
    server = _server()
    server.push(SaslInbound().feed(_sasl_init(mechanism)))
    server.peek(server.pending())
    assert server.sasl().outcome == SASL.OK


def test_an_unknown_mechanism_is_still_refused():
    server = _server()
    server.push(SaslInbound().feed(_sasl_init("PLAIN")))
    server.peek(server.pending())
    assert server.sasl().outcome != SASL.OK


def test_sasl_inbound_splits_frames_across_reads_and_then_passes_everything():
    stream = _sasl_init("MSSBCBS") + b"AMQP\x00\x01\x00\x00" + b"\x00\x00\x00\x05" + b"rest"
    expected = SaslInbound().feed(stream)
    assert b"ANONYMOUS" in expected and b"MSSBCBS" not in expected
    assert expected.endswith(b"AMQP\x00\x01\x00\x00\x00\x00\x00\x05rest")  # after the AMQP header: untouched
    one_by_one = SaslInbound()
    assert b"".join(one_by_one.feed(stream[i:i + 1]) for i in range(len(stream))) == expected


def test_devicebound_topic_is_what_the_device_sdk_reads():
    msg = DeviceboundMessage(7, "pi-1", b"{}", {"message_id": "m/1", "correlation_id": "c&1", "content_type": "application/json",
                                               "content_encoding": "utf-8", "to": "/devices/pi-1/messages/devicebound"},
                             {"kind": "blink = 3/s", "empty": ""})
    topic = msg.topic()
    assert topic.startswith("devices/pi-1/messages/devicebound/") and topic.count("/") == 4
    got = Message(b"{}")
    extract_message_properties_from_topic(topic, got)
    assert (got.message_id, got.correlation_id, got.content_type, got.content_encoding) == \
        ("m/1", "c&1", "application/json", "utf-8")
    assert got.custom_properties == {"kind": "blink = 3/s", "empty": ""}


def test_service_tokens_as_azure_iot_hub_signs_them():
    from azure.iot.hub.iothub_amqp_client import IoTHubAmqpClientSharedAccessKeyAuth

    key = new_key()
    host = "127.0.0.9:8443"
    client = IoTHubAmqpClientSharedAccessKeyAuth(host, "iothubowner", key)  # builds its token as it sends it
    try:
        token = client.amqp_client._auth.token.decode()
    finally:
        client.disconnect_sync()
    assert is_hub_token(token) and not is_hub_token("SharedAccessSignature sr=sb%3A%2F%2Fh%2Fe&sig=x&se=1&skn=p")
    checker = ServiceTokenChecker((host, "127.0.0.9"), "iothubowner", Secret(key, "k"))
    assert checker.check(token, "servicebus.windows.net:sastoken").path == "messages/devicebound"
    other = ServiceTokenChecker((host,), "iothubowner", Secret(base64.b64encode(b"x" * 32).decode(), "k"))
    with pytest.raises(Unauthorized, match="signature"):
        other.check(token)
    with pytest.raises(Unauthorized, match="expired"):
        checker.check(token, now=time.time() + 7200)
    with pytest.raises(Unauthorized, match="not this hub"):
        ServiceTokenChecker(("127.0.0.8:8443",), "iothubowner", Secret(key, "k")).check(token)
    assert is_devicebound("amqps://127.0.0.9:8443/messages/devicebound", (host,))
    assert is_devicebound("/messages/devicebound", (host,))
    assert not is_devicebound("amqps://elsewhere/messages/devicebound", (host,))
    assert not is_devicebound("/messages/events", (host,))
