"""The local hub's MQTT endpoint driven by the unmodified `azure-iot-device` SDK (and raw paho).

Each client connects to port 8883 of the workspace's loopback address over TLS with the
workspace CA, exactly as it would connect to IoT Hub. Raw paho clients play a misbehaving
device for the identity-isolation checks.
"""
from __future__ import annotations

import functools
import json
import socket
import ssl
import threading
import time
from typing import Any

import pytest
import requests

pytest.importorskip("azure.iot.device")

import waiting
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse  # noqa: E402
from azure.iot.device.exceptions import ClientError, CredentialError  # noqa: E402

from helpers.config import parse_connection_string  # noqa: E402
from helpers.localcloud.common import tls  # noqa: E402
from helpers.localcloud.mqtt.store import read_messages  # noqa: E402
from helpers.protocol.sas import generate_sas_token, new_key  # noqa: E402

wait_for = functools.partial(waiting.wait_for, interval=0.05)

pytestmark = pytest.mark.timeout(120)


def device_key(cloud, device_id: str) -> str:
    return parse_connection_string(cloud.hub.connection_string(device_id))["SharedAccessKey"]


def device_cs(cloud, device_id: str, key: str | None = None) -> str:
    """The device connection string as the SDK needs it: the hub's bare loopback address as HostName."""
    address = tls.hub_address(cloud.workspace)
    return f"HostName={address};DeviceId={device_id};SharedAccessKey={key or device_key(cloud, device_id)}"


def sdk_client(cloud, device_id: str, key: str | None = None, **kw: Any) -> IoTHubDeviceClient:
    ca = tls.ca_file(cloud.workspace).read_text()
    return IoTHubDeviceClient.create_from_connection_string(device_cs(cloud, device_id, key),
                                                            server_verification_cert=ca, **kw)


def service_post(cloud, path: str, body: dict[str, Any]) -> requests.Response:
    creds = json.loads((cloud.workspace / "localcloud" / "credentials.json").read_text())
    parts = parse_connection_string(creds["service_connection_string"])
    token = generate_sas_token(parts["HostName"], parts["SharedAccessKey"], "iothubowner")
    return requests.post(cloud.url + path, json=body, headers={"Authorization": token.get_secret_value()}, timeout=60)


@pytest.fixture()
def client_factory(cloud):
    made: list[IoTHubDeviceClient] = []

    def make(device_id: str, **kw: Any) -> IoTHubDeviceClient:
        c = sdk_client(cloud, device_id, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.shutdown()


def test_twin_get_patch_desired_push_methods_and_messages(cloud, unique_name, client_factory):
    dev = unique_name("mq")
    cloud.hub.create_edge_device(dev)
    cloud.hub.update_desired(dev, {"interval": 5})
    client = client_factory(dev)
    client.connect()

    twin = client.get_twin()
    assert twin["desired"]["interval"] == 5 and twin["desired"]["$version"] >= 2
    client.patch_twin_reported_properties({"fw": {"version": "1.2"}, "temp": 21})
    client.patch_twin_reported_properties({"temp": None, "fw": {"channel": "beta"}})
    reported = client.get_twin()["reported"]
    assert reported["fw"] == {"version": "1.2", "channel": "beta"} and "temp" not in reported
    assert cloud.hub.get_twin(dev).reported["fw"]["channel"] == "beta"  # the service sees the device's write

    patches: list[dict[str, Any]] = []
    client.on_twin_desired_properties_patch_received = patches.append
    cloud.hub.update_desired(dev, {"interval": 7, "mode": "fast"})
    got = wait_for(lambda: patches, what="the desired patch")
    assert got[0]["interval"] == 7 and got[0]["mode"] == "fast" and "$version" in got[0]

    def on_method(req):
        status = 200 if req.name == "echo" else 404
        client.send_method_response(MethodResponse.create_from_method_request(req, status, {"got": req.payload}))

    client.on_method_request_received = on_method
    time.sleep(0.3)  # the SDK subscribes in the background once a handler is set
    resp = service_post(cloud, f"/twins/{dev}/methods", {"methodName": "echo", "payload": {"n": 1},
                                                          "responseTimeoutInSeconds": 10})
    assert resp.status_code == 200 and resp.json() == {"status": 200, "payload": {"got": {"n": 1}}}
    resp = service_post(cloud, f"/twins/{dev}/methods", {"methodName": "nope", "responseTimeoutInSeconds": 10})
    assert resp.json()["status"] == 404

    msg = Message(json.dumps({"apples": 3}), message_id="m-1", content_encoding="utf-8", content_type="application/json")
    msg.custom_properties["kind"] = "counts"
    client.send_message(msg)
    stored = read_messages(cloud.workspace, device_id=dev)
    assert len(stored) == 1
    assert stored[0]["json"] == {"apples": 3} and stored[0]["properties"] == {"kind": "counts"}
    assert stored[0]["systemProperties"]["mid"] == "m-1" and stored[0]["systemProperties"]["ct"] == "application/json"


def test_method_offline_and_timeout(cloud, unique_name, client_factory):
    dev = unique_name("mq")
    cloud.hub.create_edge_device(dev)
    resp = service_post(cloud, f"/twins/{dev}/methods", {"methodName": "ping", "responseTimeoutInSeconds": 5})
    assert resp.status_code == 404 and "DeviceNotOnline" in resp.json()["Message"]

    client = client_factory(dev)
    client.connect()
    client.on_method_request_received = lambda req: None  # never answers
    time.sleep(0.3)
    t0 = time.monotonic()
    resp = service_post(cloud, f"/twins/{dev}/methods", {"methodName": "ping", "responseTimeoutInSeconds": 5})
    assert resp.status_code == 504 and "GatewayTimeout" in resp.json()["Message"]
    assert 4.5 <= time.monotonic() - t0 < 20
    bad = service_post(cloud, f"/twins/{dev}/methods", {"methodName": "ping", "responseTimeoutInSeconds": 1})
    assert bad.status_code == 400 and "responseTimeoutInSeconds" in bad.json()["Message"]


def test_wrong_key_and_unknown_device_are_refused(cloud, unique_name):
    dev = unique_name("mq")
    cloud.hub.create_edge_device(dev)
    for client in (sdk_client(cloud, dev, key=new_key(), connection_retry=False),
                   sdk_client(cloud, unique_name("ghost"), key=new_key(), connection_retry=False)):
        try:
            with pytest.raises((CredentialError, ClientError)):
                client.connect()
        finally:
            client.shutdown()


# ---------------------------------------------------------------- raw paho: a misbehaving device
def paho_client(cloud, device_id: str, key: str, host: str | None = None, module_id: str | None = None):
    import paho.mqtt.client as mqtt

    address = tls.hub_address(cloud.workspace)
    client_id = device_id if module_id is None else f"{device_id}/{module_id}"
    resource = f"{host or address}/devices/{device_id}" + (f"/modules/{module_id}" if module_id else "")
    c = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    c.username_pw_set(f"{address}/{client_id}/?api-version=2021-04-12",
                      generate_sas_token(resource, key).get_secret_value())
    c.tls_set_context(tls.client_ssl_context(cloud.workspace))
    c.events: list[tuple[str, Any]] = []  # type: ignore[attr-defined]
    c.on_connect = lambda cl, ud, flags, rc: c.events.append(("connack", rc))
    c.on_subscribe = lambda cl, ud, mid, granted: c.events.append(("suback", list(granted)))
    c.on_message = lambda cl, ud, m: c.events.append(("message", (m.topic, m.payload)))
    c.on_disconnect = lambda cl, ud, rc: c.events.append(("disconnect", rc))
    c.connect(address, 8883, keepalive=30)
    c.loop_start()
    return c


def events(c, kind: str) -> list[Any]:
    return [v for k, v in c.events if k == kind]


def test_token_for_another_host_is_refused(cloud, unique_name):
    dev = unique_name("mq")
    cloud.hub.create_edge_device(dev)
    c = paho_client(cloud, dev, device_key(cloud, dev), host="other-hub.azure-devices.net")
    try:
        assert wait_for(lambda: events(c, "connack"), what="CONNACK") == [5]  # not authorised
    finally:
        c.loop_stop()


def test_identity_isolation(cloud, unique_name, client_factory):
    a, b = unique_name("iso-a"), unique_name("iso-b")
    cloud.hub.create_edge_device(a)
    cloud.hub.create_edge_device(b)
    cloud.hub.update_desired(b, {"secret": "b-only"})
    victim = client_factory(b)
    victim.connect()
    answered = threading.Event()

    def on_method(req):
        answered.set()
        victim.send_method_response(MethodResponse.create_from_method_request(req, 200, {"from": "b"}))

    victim.on_method_request_received = on_method
    time.sleep(0.3)

    attacker = paho_client(cloud, a, device_key(cloud, a))
    try:
        assert wait_for(lambda: events(attacker, "connack"), what="CONNACK") == [0]
        # subscribing to B's topics fails; its own twin topics are granted
        attacker.subscribe([(f"devices/{b}/messages/devicebound/#", 1), (f"devices/{b}/#", 1), ("#", 1),
                            ("$iothub/twin/res/#", 1), ("$iothub/methods/POST/#", 1)])
        assert wait_for(lambda: events(attacker, "suback"), what="SUBACK")[0] == [128, 128, 128, 1, 1]
        # a twin GET on A's connection returns A's twin, never B's
        attacker.publish("$iothub/twin/GET/?$rid=1", b"", qos=1)
        topic, payload = wait_for(lambda: events(attacker, "message"), what="twin response")[0]
        assert topic.startswith("$iothub/twin/res/200/") and b"b-only" not in payload
        # B's method call is never delivered to A, and A cannot answer it
        result: dict[str, Any] = {}
        caller = threading.Thread(target=lambda: result.update(service_post(
            cloud, f"/twins/{b}/methods", {"methodName": "who", "responseTimeoutInSeconds": 10}).json()))
        caller.start()
        for rid in range(1, 20):  # the broker's request ids are small hex numbers: try them all
            attacker.publish(f"$iothub/methods/res/200/?$rid={rid:x}", json.dumps({"from": "a"}), qos=1)
        caller.join(30)
        assert result == {"status": 200, "payload": {"from": "b"}} and answered.is_set()
        assert not [m for m in events(attacker, "message") if m[0].startswith("$iothub/methods/POST/")]
        # publishing telemetry as B closes A's connection and stores nothing
        attacker.publish(f"devices/{b}/messages/events/", b'{"forged": true}', qos=1)
        wait_for(lambda: events(attacker, "disconnect"), what="the broker closing the connection")
        time.sleep(0.3)
        assert read_messages(cloud.workspace, device_id=b) == []
    finally:
        attacker.loop_stop()


def test_port_taken_fails_with_a_clear_error(tmp_path):
    from helpers.errors import ConfigError
    from helpers.localcloud.common.db import Store
    from helpers.localcloud.mqtt.broker import MqttBroker
    from helpers.localcloud.mqtt.store import HubState

    address = tls.hub_address(tmp_path)
    with socket.socket() as taken:
        taken.bind((address, 0))
        taken.listen()
        port = taken.getsockname()[1]
        store = Store(tmp_path / "state.db")
        broker = MqttBroker(HubState(store, address), tls.server_ssl_context(tmp_path, address), address, port)
        with pytest.raises(ConfigError, match=f"port {port} on {address} is taken"):
            broker.start()
        store.close()


def test_reconnect_after_kill_9_keeps_every_acknowledged_write(fresh_cloud, unique_name):
    """kill -9 of the stand-in: the SDK reconnects by itself, nothing it saw acknowledged is lost,
    and its persistent session (subscriptions) survives, so desired patches still arrive."""
    import os
    import signal

    from helpers.localcloud import ensure_running
    from helpers.localcloud.service import _pid_alive

    cloud = fresh_cloud
    dev = unique_name("kill")
    cloud.hub.create_edge_device(dev)
    client = sdk_client(cloud, dev)
    try:
        client.connect()
        patches: list[dict[str, Any]] = []
        client.on_twin_desired_properties_patch_received = patches.append
        for i in range(5):
            client.patch_twin_reported_properties({"n": i, f"k{i}": i})  # returns once the hub acknowledged
            client.send_message(Message(json.dumps({"i": i})))
        time.sleep(0.3)

        os.kill(cloud.pid, signal.SIGKILL)
        wait_for(lambda: not _pid_alive(cloud.pid), what="the service to die")
        wait_for(lambda: not client.connected, what="the client to notice")
        ensure_running(cloud.workspace)
        cloud.refresh()
        wait_for(lambda: client.connected, timeout=60, what="the SDK to reconnect by itself")

        client.patch_twin_reported_properties({"after": True})
        reported = client.get_twin()["reported"]
        assert reported["n"] == 4 and all(reported[f"k{i}"] == i for i in range(5)) and reported["after"] is True
        assert [m["json"]["i"] for m in read_messages(cloud.workspace, device_id=dev)] == [0, 1, 2, 3, 4]
        cloud.hub.update_desired(dev, {"after_restart": 1})
        # (after a reconnection the SDK itself GETs the twin and may hand the whole desired document
        # to the handler as an artificial patch: look for the hub's own push)
        got = wait_for(lambda: [p for p in patches if p.get("after_restart") == 1],
                       what="a desired patch on the resumed session")
        assert got[0]["$version"] >= 2
    finally:
        client.shutdown()


def test_x509_self_signed_device_connects_by_thumbprint(cloud, unique_name):
    from azure.iot.device import X509

    from helpers.hub.x509 import make_device_certificate

    dev, other = unique_name("x509"), unique_name("x509-other")
    cloud.hub.create_edge_device(dev, auth="x509")
    cert, key = cloud.hub.device_certificate(dev)
    ca = tls.ca_file(cloud.workspace).read_text()
    address = tls.hub_address(cloud.workspace)
    client = IoTHubDeviceClient.create_from_x509_certificate(X509(str(cert), str(key)), hostname=address,
                                                             device_id=dev, server_verification_cert=ca)
    try:
        client.connect()
        client.patch_twin_reported_properties({"auth": "x509"})
        assert client.get_twin()["reported"]["auth"] == "x509"
    finally:
        client.shutdown()
    # a certificate the TLS layer accepts but whose thumbprint is not the registered one is refused
    cloud.hub.create_edge_device(other, auth="x509")
    rogue_cert, rogue_key, _ = make_device_certificate(f"{other}-rogue", cloud.workspace / "hub" / "x509")
    rogue = IoTHubDeviceClient.create_from_x509_certificate(X509(str(rogue_cert), str(rogue_key)), hostname=address,
                                                            device_id=other, server_verification_cert=ca,
                                                            connection_retry=False)
    try:
        with pytest.raises((CredentialError, ClientError)):
            rogue.connect()
    finally:
        rogue.shutdown()
    # and an X.509 device cannot connect as another device with its own certificate
    thief = IoTHubDeviceClient.create_from_x509_certificate(X509(str(cert), str(key)), hostname=address,
                                                            device_id=other, server_verification_cert=ca,
                                                            connection_retry=False)
    try:
        with pytest.raises((CredentialError, ClientError)):
            thief.connect()
    finally:
        thief.shutdown()


def test_module_identities_are_isolated(cloud, unique_name):
    """A module connects only as itself, and publishes only on its own topics."""
    dev = unique_name("mod")
    cloud.hub.create_edge_device(dev)
    cloud.hub.create_module(dev, "collector")
    cloud.hub.create_module(dev, "runner")
    key = parse_connection_string(cloud.hub.connection_string(dev, "collector"))["SharedAccessKey"]
    # the collector's key cannot sign for the runner (a token for the runner's resource, the wrong key)
    thief = paho_client(cloud, dev, key, module_id="runner")
    try:
        assert wait_for(lambda: events(thief, "connack"), what="CONNACK")[0] in (4, 5)
    finally:
        thief.loop_stop()
    own = paho_client(cloud, dev, key, module_id="collector")
    try:
        assert wait_for(lambda: events(own, "connack"), what="CONNACK") == [0]
        own.subscribe([(f"devices/{dev}/modules/runner/inputs/#", 1), (f"devices/{dev}/messages/devicebound/#", 1),
                       (f"devices/{dev}/modules/collector/inputs/#", 1)])
        assert wait_for(lambda: events(own, "suback"), what="SUBACK")[0] == [128, 128, 1]
        own.publish(f"devices/{dev}/modules/collector/messages/events/", b'{"ok": 1}', qos=1).wait_for_publish(10)
        assert [m["json"] for m in read_messages(cloud.workspace, device_id=dev, module_id="collector")] == [{"ok": 1}]
        own.publish(f"devices/{dev}/modules/runner/messages/events/", b'{"forged": 1}', qos=1)
        wait_for(lambda: events(own, "disconnect"), what="the broker closing the connection")
        assert read_messages(cloud.workspace, device_id=dev, module_id="runner") == []
    finally:
        own.loop_stop()


def _raw_connect(cloud, dev: str, keep_alive: int) -> ssl.SSLSocket:
    """A bare TLS socket that sends MQTT CONNECT itself (what the SDK never does wrong)."""
    from helpers.localcloud.mqtt import codec as mc

    address = tls.hub_address(cloud.workspace)
    key = device_key(cloud, dev)
    body = (b"\x00\x04MQTT\x04\xc2" + keep_alive.to_bytes(2, "big")  # level 4, username+password+clean session
            + mc._text(dev) + mc._text(f"{address}/{dev}/?api-version=2021-04-12")
            + mc._text(generate_sas_token(f"{address}/devices/{dev}", key).get_secret_value()))
    sock = tls.client_ssl_context(cloud.workspace).wrap_socket(socket.create_connection((address, 8883), 5),
                                                                server_hostname=address)
    sock.sendall(mc.packet(0x10, body))
    assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK accepted
    return sock


def test_keep_alive_and_qos2_close_the_connection(cloud, unique_name):
    from helpers.localcloud.mqtt import codec as mc

    dev = unique_name("ka")
    cloud.hub.create_edge_device(dev)
    sock = _raw_connect(cloud, dev, keep_alive=1)
    try:
        sock.sendall(mc.packet(0xC0, b""))  # PINGREQ
        assert sock.recv(2) == b"\xd0\x00"  # PINGRESP
        sock.settimeout(5)
        t0 = time.monotonic()
        assert sock.recv(1) == b""  # silent past 1.5 x keep-alive: the broker closes
        assert 1.0 <= time.monotonic() - t0 < 4.5
    finally:
        sock.close()
    sock = _raw_connect(cloud, dev, keep_alive=30)
    try:  # QoS 2, which IoT Hub does not support
        sock.sendall(mc.publish(f"devices/{dev}/messages/events/", b"{}", qos=2, packet_id=7))
        sock.settimeout(5)
        assert sock.recv(1) == b""
        assert read_messages(cloud.workspace, device_id=dev) == []
    finally:
        sock.close()


def test_module_client_from_the_iot_edge_environment(cloud, unique_name, monkeypatch):
    """What a module runs on a simulated device: `create_from_edge_environment()` with the IoT Edge
    simulator's variables, then twin, desired push, a method on the module, and messages."""
    from azure.iot.device import IoTHubModuleClient

    dev = unique_name("env")
    cloud.hub.create_edge_device(dev)
    cloud.hub.create_module(dev, "runner")
    cs = cloud.hub.connection_string(dev, "runner").get_secret_value() + f";GatewayHostName={tls.hub_address(cloud.workspace)}"
    monkeypatch.setenv("EdgeHubConnectionString", cs)
    monkeypatch.setenv("EdgeModuleCACertificateFile", str(tls.ca_file(cloud.workspace)))
    client = IoTHubModuleClient.create_from_edge_environment()
    try:
        client.connect()
        patches: list[dict[str, Any]] = []
        client.on_twin_desired_properties_patch_received = patches.append
        client.on_method_request_received = lambda req: client.send_method_response(
            MethodResponse.create_from_method_request(req, 200, {"model_version": 3}))
        client.patch_twin_reported_properties({"model_version": 3, "detections_per_class": {"apple": 2}})
        assert cloud.hub.get_module_twin(dev, "runner").reported["model_version"] == 3
        cloud.hub.update_module_desired(dev, "runner", {"threshold": 0.4})
        assert wait_for(lambda: [p for p in patches if p.get("threshold") == 0.4], what="the module's desired patch")
        time.sleep(0.3)
        assert cloud.hub.invoke_method(dev, "info", module_id="runner") == (200, {"model_version": 3})
        msg = Message(json.dumps({"window_frames": 10}), content_type="application/json", content_encoding="utf-8")
        msg.custom_properties["type"] = "telemetry"
        client.send_message(msg)
        stored = read_messages(cloud.workspace, device_id=dev, module_id="runner")
        assert [(m["json"], m["properties"]) for m in stored] == [({"window_frames": 10}, {"type": "telemetry"})]
    finally:
        client.shutdown()
