"""The loop's `Hub` (IoTHub on the azure-iot-hub SDK) against the local stand-in: identities, twins,
deployments on IoT Hub's evaluation cycle, device status from what `$edgeAgent` reports (over
MQTT, with the `azure-iot-device` SDK), device-scoped REST access, and the backend registry."""
from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from waiting import wait_for

from helpers.config import Secret
from helpers.errors import BackendNotFound, ConfigError, Conflict, NotFound, ServiceError
from helpers.hub import Hub, get_hub
from helpers.hub.iothub import IoTHub
from helpers.protocol.manifest import build_manifest, module_spec
from helpers.protocol.sas import generate_sas_token


def manifest(image: str = "edgeloop-device:1", name: str = "collector") -> dict:
    return build_manifest([module_spec(name, image)])


def edge_agent(cloud, dev: str) -> Any:
    """The device's `$edgeAgent` over MQTT with the device SDK (what an edge agent connects as), connected."""
    from azure.iot.device import IoTHubModuleClient

    client = IoTHubModuleClient.create_from_connection_string(
        cloud.hub.connection_string(dev, "$edgeAgent").get_secret_value(),
        server_verification_cert=open(cloud.hub.ca_file).read(), connection_retry=False)
    client.connect()
    return client


def report_applied(client: Any, version: str, code: int = 200, module_state: str = "running") -> None:
    """Report in Azure edgeAgent's schema on the `$edgeAgent` module twin (acknowledged when it returns)."""
    client.patch_twin_reported_properties({
        "schemaVersion": "1.1", "lastDesiredVersion": int(version), "lastDesiredStatus": {"code": code, "description": ""},
        "runtime": {"type": "docker"},
        "modules": {"collector": {"runtimeStatus": module_state, "exitCode": 0, "restartCount": 0, "hostPort": 49120,
                                  "settings": {"image": "edgeloop-device:1"}}}})


def applied(hub: IoTHub, dev: str, name: str) -> bool:
    return hub.device_status(dev).configurations.get(name) == "Applied"


def test_get_hub_is_one_class_for_local_and_azure(cloud, monkeypatch):
    hub = get_hub("local", workspace=cloud.workspace)
    assert type(hub) is IoTHub and isinstance(hub, Hub)
    assert hub.ca_file and hub.host.startswith(hub.device_host + ":")
    # an Azure connection string builds the same class (no call is made until it is used)
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING",
                       "HostName=example-hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=ZmFrZS1rZXktZm9yLXRlc3RzLW9ubHk=")
    monkeypatch.delenv("EDGELOOP_HUB", raising=False)
    azure = get_hub(workspace=cloud.workspace)  # a set IOTHUB_CONNECTION_STRING selects Azure by default
    assert type(azure) is type(hub) and azure.host == "example-hub.azure-devices.net" and azure.ca_file is None
    monkeypatch.setenv("EDGELOOP_HUB", "local")
    assert get_hub(workspace=cloud.workspace).host == hub.host
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", "")
    with pytest.raises(ConfigError, match="IOTHUB_CONNECTION_STRING"):
        get_hub("azure", workspace=cloud.workspace)
    with pytest.raises(ConfigError, match="service connection string"):
        IoTHub("HostName=h;DeviceId=d;SharedAccessKey=ZmFrZQ==")
    with pytest.raises(BackendNotFound, match=r"valid: \['azure', 'local'\]"):
        get_hub("nope", workspace=cloud.workspace)


def test_device_identity_and_connection_string(cloud, unique_name):
    hub = cloud.hub
    dev = unique_name("cam")
    d = hub.create_edge_device(dev, tags={"site": "lab"})
    assert d.device_id == dev and d.edge and d.tags == {"site": "lab"} and d.connection_state == "Disconnected"
    assert hub.list_modules(dev) == ["$edgeAgent", "$edgeHub"]
    assert hub.create_edge_device(dev).device_id == dev  # exist_ok
    with pytest.raises(Conflict) as exc:
        hub.create_edge_device(dev, exist_ok=False)
    assert exc.value.error_code == "DeviceAlreadyExists"
    assert dev in [x.device_id for x in hub.list_devices()]
    cs = hub.connection_string(dev)
    value = cs.get_secret_value()
    assert isinstance(cs, Secret) and value.split("SharedAccessKey=")[1] not in repr(cs) + str(cs)
    # devices connect to the hub's address on port 8883: no port in their HostName
    assert value.startswith(f"HostName={hub.device_host};DeviceId={dev};SharedAccessKey=")
    agent_cs = hub.connection_string(dev, "$edgeAgent").get_secret_value()
    assert ";ModuleId=$edgeAgent;SharedAccessKey=" in agent_cs and agent_cs.split("SharedAccessKey=")[1] != value.split("SharedAccessKey=")[1]
    hub.delete_device(dev)
    with pytest.raises(NotFound):
        hub.get_device(dev)
    with pytest.raises(NotFound):
        hub.delete_device(dev)


def test_x509_device_keeps_its_key_owner_only(cloud, unique_name):
    import os
    import stat

    from helpers.localcloud.common.tls import thumbprint

    hub = cloud.hub
    dev = unique_name("x509")
    d = hub.create_edge_device(dev, auth="x509")
    assert d.auth == "selfSigned" and d.edge
    cert, key = hub.device_certificate(dev)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and stat.S_IMODE(os.stat(key.parent).st_mode) == 0o700
    assert hub.connection_string(dev).get_secret_value().endswith(f"DeviceId={dev};x509=true")
    from azure.iot.hub import IoTHubRegistryManager  # the hub holds the certificate's thumbprint

    ident = hub._sdk("get", lambda: hub._registry.get_device(dev))
    assert ident.authentication.x509_thumbprint.primary_thumbprint == thumbprint(cert.read_bytes())
    assert IoTHubRegistryManager  # imported: the SDK is the client


def test_twin_tags_desired_versions_and_etag(cloud, unique_name):
    hub = cloud.hub
    dev = unique_name("cam")
    hub.create_edge_device(dev)
    t0 = hub.get_twin(dev)
    t1 = hub.update_tags(dev, {"env": "prod", "site": "lab"})
    assert t1.tags == {"env": "prod", "site": "lab"} and t1.version == t0.version + 1 and t1.etag != t0.etag
    t2 = hub.update_tags(dev, {"site": None})
    assert t2.tags == {"env": "prod"}
    t3 = hub.update_desired(dev, {"interval": 5}, etag=t2.etag)
    assert t3.desired == {"interval": 5} and t3.desired_version == t2.desired_version + 1
    with pytest.raises(Conflict) as exc:
        hub.update_desired(dev, {"interval": 6}, etag=t2.etag)  # stale etag -> 412
    assert exc.value.status == 412 and exc.value.error_code == "PreconditionFailed"
    assert hub.get_twin(dev).desired == {"interval": 5}


def test_device_token_reaches_its_own_device_only(cloud, unique_name):
    """The REST API with a device's token (the device-scoped identity API an edge device uses)."""
    from helpers.config import parse_connection_string

    hub = cloud.hub
    a, b = unique_name("cam"), unique_name("cam")
    hub.create_edge_device(a)
    hub.create_edge_device(b)
    parts = parse_connection_string(hub.connection_string(a))
    host, key = parts["HostName"], parts["SharedAccessKey"]

    def call(method: str, path: str, token_device: str = a, token_key: str = key) -> requests.Response:
        token = generate_sas_token(f"{host}/devices/{token_device}", token_key).get_secret_value()
        return requests.request(method, cloud.url + path, headers={"Authorization": token}, json={}, timeout=5)

    assert call("GET", f"/devices/{a}/modules/$edgeAgent").status_code == 200  # its own module identities
    assert call("GET", f"/twins/{a}").json()["deviceId"] == a
    # device A's valid token on device B's twin and identities, or on the registry: 403
    for method, path in (("GET", f"/twins/{b}"), ("GET", f"/devices/{b}/modules/$edgeAgent"),
                         ("PUT", f"/devices/{b}/modules/x"), ("GET", "/devices")):
        r = call(method, path)
        assert r.status_code == 403, path
        assert r.json()["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;")
    assert call("GET", f"/twins/{b}", token_device=b).status_code == 401  # A signing for B with A's key
    assert call("GET", f"/twins/{a}", token_key="QUJDREVGR0hJSktMTU5PUA==").status_code == 401  # forged key


def test_no_or_wrong_credential_is_401(cloud):
    for headers in ({}, {"Authorization": "Bearer x"},
                    {"Authorization": "SharedAccessSignature sr=h&sig=AAAA&se=9999999999&skn=iothubowner"}):
        r = requests.get(f"{cloud.url}/devices", headers=headers, timeout=5)
        assert r.status_code == 401, headers
        assert r.json()["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;") and r.headers["iothub-errorcode"]
    assert requests.get(f"{cloud.url}/openapi.json", timeout=5).status_code == 401
    r = requests.get(f"{cloud.url}/openapi.json", headers={"x-api-key": cloud.studio.api_key.get_secret_value()}, timeout=5)
    assert r.status_code == 200 and "/configurations/{name}" in r.json()["paths"]


def test_bad_input_is_400_with_the_reason(cloud, unique_name):
    hub = cloud.hub
    dev = unique_name("cam")
    hub.create_edge_device(dev)
    with pytest.raises(ServiceError) as exc:
        hub.set_modules(dev, {"$edgeAgent": {"properties.desired": {}}})
    assert exc.value.status == 400 and "$edgeHub" in str(exc.value) and exc.value.error_code == "ArgumentInvalid"
    with pytest.raises(ServiceError) as exc:
        hub.create_deployment(unique_name("dep"), manifest(), "tags.env='prod' AND")
    assert exc.value.status == 400 and "targetCondition" in str(exc.value)
    with pytest.raises(NotFound):
        hub.set_modules(unique_name("ghost"), manifest())
    assert hub.deployed_content(dev) is None  # nothing was written
    plain = unique_name("leaf")
    hub.create_edge_device(plain, edge=False)
    with pytest.raises(ServiceError, match="not an IoT Edge device"):
        hub.set_modules(plain, manifest())


def test_set_modules_and_deployment_precedence(cloud, unique_name):
    hub = cloud.hub
    site = unique_name("site")
    d1, d2, d3 = (unique_name("cam") for _ in range(3))
    hub.create_edge_device(d1, tags={"site": site, "env": "prod"})
    hub.create_edge_device(d2, tags={"site": site, "env": "dev"})
    hub.create_edge_device(d3, tags={"site": "elsewhere"})
    hub.set_modules(d1, manifest("own:1"))  # written into the module twins at once
    content = hub.deployed_content(d1)
    assert content["$edgeAgent"]["properties.desired"]["modules"]["collector"]["settings"]["image"] == "own:1"
    assert hub.device_status(d1).deployment == "device"

    low, high = unique_name("low"), unique_name("high")
    hub.create_deployment(low, manifest("low:1"), f"tags.site='{site}'", priority=1)
    hub.create_deployment(high, manifest("high:1"), f"tags.site='{site}' AND (tags.env='prod' OR deviceId='{d3}')", priority=5)
    # the hub's next evaluation: the higher priority wins and overwrites d1's own content
    wait_for(lambda: applied(hub, d1, high) and applied(hub, d2, low), what="deployments applied")
    assert hub.device_status(d1).configurations == {low: "Targeted", high: "Applied"}
    image = lambda d: hub.deployed_content(d)["$edgeAgent"]["properties.desired"]["modules"]["collector"]["settings"]["image"]  # noqa: E731
    assert image(d1) == "high:1" and image(d2) == "low:1"
    assert hub.deployed_content(d3) is None and hub.device_status(d3).configurations == {}
    # a tie goes to the newest
    tie = unique_name("tie")
    hub.create_deployment(tie, manifest("tie:1"), f"tags.site='{site}'", priority=1)
    wait_for(lambda: applied(hub, d2, tie), what="the newer deployment of equal priority applied")
    with pytest.raises(Conflict):
        hub.create_deployment(tie, manifest("tie:2"), "*")
    # deleting the deployments leaves the modules running what they last received (as on Azure)
    for name in (low, tie, high):  # an order in which no evaluation in between changes a winner
        hub.delete_deployment(name)
    wait_for(lambda: hub.device_status(d1).configurations == {}, what="markers cleared")
    assert image(d1) == "high:1" and image(d2) == "tie:1"
    with pytest.raises(NotFound):
        hub.delete_deployment(low)
    hub.set_modules(d1, manifest("own:2"))  # and the device's own content applies again when set
    assert image(d1) == "own:2"


def test_deployment_metrics_and_device_status(cloud, unique_name):
    hub = cloud.hub
    site = unique_name("site")
    devs = [unique_name("cam") for _ in range(3)]
    for d in devs:
        hub.create_edge_device(d, tags={"site": site})
    name = unique_name("collect")
    dep = hub.create_deployment(name, manifest(), f"tags.site='{site}'", priority=10, labels={"stage": "collect"})
    assert dep.metrics["targetedCount"] == 3 and dep.labels == {"stage": "collect"} and dep.priority == 10
    wait_for(lambda: hub.get_deployment(name).metrics["appliedCount"] == 3, what="applied to 3")
    version = str(hub.get_module_twin(devs[0], "$edgeAgent").desired_version)
    assert hub.deployed_content(devs[0])["$edgeAgent"]
    clients = [edge_agent(cloud, d) for d in devs[:2]]
    try:
        report_applied(clients[0], version)
        report_applied(clients[1], version, code=200, module_state="failed")

        s0 = hub.device_status(devs[0])
        assert s0.connected and s0.last_desired_status == 200 and s0.deployment == name and s0.source == "moduleTwin"
        assert s0.desired_version == s0.reported_version == version
        m = s0.modules["collector"]
        assert m.runtime_status == "running" and m.host_port == 49120 and m.image == "edgeloop-device:1"
    finally:
        for c in clients:
            c.shutdown()
    # never reported + pending deployment: offline, 406
    s2 = hub.device_status(devs[2])
    assert not s2.connected and s2.last_desired_status == 406 and "pending" in s2.last_desired_description
    # a higher-priority deployment on one device: the first one no longer applies there
    other = unique_name("other")
    hub.create_deployment(other, manifest("other:1"), f"deviceId='{devs[0]}'", priority=20)
    wait_for(lambda: hub.get_deployment(name).metrics["appliedCount"] == 2, what="applied to 2")
    assert hub.get_deployment(name).metrics["targetedCount"] == 3
    s0 = hub.device_status(devs[0])
    assert s0.deployment == other and s0.last_desired_status is None and "pending" in s0.last_desired_description
    hub.update_deployment(other, priority=0)
    wait_for(lambda: hub.device_status(devs[0]).deployment == name, what="the first deployment back")
    for n in (name, other):
        hub.delete_deployment(n)


def test_device_status_reads_the_edge_agent_module_twin(cloud, unique_name):
    """Azure's edgeAgent reports on the $edgeAgent module twin; that report wins over the device twin's."""
    from helpers.localcloud.common.db import Store
    from helpers.localcloud.hub import store as hub_store

    hub = cloud.hub
    dev = unique_name("cam")
    hub.create_edge_device(dev)
    runner = build_manifest([module_spec("runner", "edgeloop-device:2", host_port=49130, version="2.0")])
    hub.set_modules(dev, runner)
    desired = hub.get_module_twin(dev, "$edgeAgent").desired_version
    # what edgeAgent (or issue 14's MQTT agent) writes, through the hub's store
    report = {"schemaVersion": "1.1", "lastDesiredVersion": desired, "lastDesiredStatus": {"code": 200, "description": ""},
              "runtime": {"type": "docker"}, "systemModules": {"edgeAgent": {"runtimeStatus": "running"}},
              "modules": {"runner": {"runtimeStatus": "running", "exitCode": 0, "restartCount": 2, "statusDescription": "running",
                                     "lastStartTimeUtc": "2026-01-01T00:00:01Z", "lastExitTimeUtc": "2026-01-01T00:00:00Z",
                                     "version": "2.0", "status": "running", "restartPolicy": "always", "type": "docker",
                                     "settings": {"image": "edgeloop-device:2", "createOptions":
                                                  '{"HostConfig":{"PortBindings":{"4912/tcp":[{"HostPort":"49130"}]}}}'}}}}
    store = Store(cloud.workspace / "localcloud" / "state.db")
    try:
        with store.tx() as conn:
            # an old report on the device twin (as the earlier HTTP agent wrote) loses to the module twin's
            hub_store.patch_device_reported(conn, dev, {"edgeAgent": {"lastDesiredVersion": "old", "modules": {}}})
            hub_store.patch_module_reported(conn, dev, "$edgeAgent", report)
            hub_store.create_module(conn, dev, "runner", managed_by="IotEdge")
            hub_store.patch_module_reported(conn, dev, "runner", {"model": {"version": 2}, "detections": {"apple": 4}})
    finally:
        store.close()
    st = hub.device_status(dev)
    assert st.source == "moduleTwin" and st.reported_version == st.desired_version == str(desired)
    assert st.last_desired_status == 200 and st.connected
    m = st.modules["runner"]
    assert (m.runtime_status, m.exit_code, m.restart_count, m.version, m.image, m.host_port) == \
        ("running", 0, 2, "2.0", "edgeloop-device:2", 49130)
    assert m.start_time == "2026-01-01T00:00:01Z" and m.last_exit_time == "2026-01-01T00:00:00Z"
    assert m.status_description == "running" and m.telemetry == {"model": {"version": 2}, "detections": {"apple": 4}}


def test_backend_registry_errors(tmp_path, monkeypatch, cloud):
    from helpers.errors import MissingExtra
    from helpers.hub import HUB_BACKENDS, register_hub

    monkeypatch.setitem(HUB_BACKENDS, "ghost", "helpers.hub.no_such_backend:GhostHub")
    with pytest.raises(BackendNotFound, match="no_such_backend"):
        get_hub("ghost", workspace=cloud.workspace)
    (tmp_path / "needs_sdk_backend.py").write_text("import azure_sdk_that_is_not_installed\nclass Hub: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register_hub("needs-sdk", "needs_sdk_backend:Hub")
    try:
        with pytest.raises(MissingExtra, match="azure_sdk_that_is_not_installed"):
            get_hub("needs-sdk", workspace=cloud.workspace)
    finally:
        HUB_BACKENDS.pop("needs-sdk")


def test_remove_deployments_clears_an_earlier_runs_lab_deployments(cloud, unique_name):
    """A rerun of the workshop: the old at-scale deployment for the lab would overwrite the
    device's own content until `remove_deployments` removes it; deployments for other targets stay."""
    from helpers.deploy import remove_deployments

    hub = cloud.hub
    lab = unique_name("lab")
    dev = unique_name("cam")
    hub.create_edge_device(dev, tags={"lab": lab})
    old = unique_name("fruit-v2")
    hub.create_deployment(old, manifest("runner:2", "runner"), f"tags.lab='{lab}'", priority=12)
    other = unique_name("other")
    hub.create_deployment(other, manifest("other:1"), f"tags.lab='{lab}-b'", priority=1)
    wait_for(lambda: applied(hub, dev, old), what="the old deployment applied")
    removed = remove_deployments(hub, f"tags.lab='{lab}'")
    assert removed == [old]
    wait_for(lambda: hub.device_status(dev).configurations == {}, what="the removal evaluated")
    hub.set_modules(dev, manifest("collector:1"))
    time.sleep(1.5)  # at least one more evaluation cycle: nothing overwrites the device's content now
    assert hub.device_status(dev).deployment == "device"
    assert other in [d.name for d in hub.list_deployments()]
    assert remove_deployments(hub, f"tags.lab='{lab}'") == []


def test_azure_paced_evaluation_and_the_configuration_limit(tmp_path):
    """With Azure's timing a new deployment is not applied at once: the rollout says it waits for
    the hub. IoT Hub allows 100 configurations; the 101st is refused with the reason."""
    from helpers import localcloud
    from helpers.deploy.rollout import check_device

    ws = tmp_path / "ws"
    localcloud.ensure_running(ws, hub_settings={"deployment_timing": "azure"})
    try:
        hub = IoTHub.local(ws)
        hub.create_edge_device("pi-slow", tags={"lab": "slow"})
        dep = hub.create_deployment("slow-1", manifest("runner:1", "runner"), "tags.lab='slow'", priority=1)
        assert dep.metrics["targetedCount"] == 1 and dep.metrics["appliedCount"] == 0
        status = hub.device_status("pi-slow")
        assert status.configurations == {} and status.desired_version is None
        check = check_device(status, {"runner": {}}, deployment="slow-1")
        assert check.state == "pending" and check.reason.startswith("waiting for the hub to apply deployment 'slow-1'")
        for i in range(2, 101):
            hub.create_deployment(f"slow-{i}", manifest(f"runner:{i}", "runner"), "tags.lab='nowhere'")
        with pytest.raises(Conflict) as exc:
            hub.create_deployment("slow-101", manifest(), "tags.lab='nowhere'")
        assert exc.value.error_code == "ConfigurationCountLimitExceeded" and "100" in str(exc.value)
    finally:
        localcloud.stop(ws)


def test_client_follows_the_stand_in_to_a_new_port(fresh_cloud):
    """The stand-in restarts and its old HTTPS port is taken: the same `IoTHub` re-reads the
    workspace's credentials once and carries on; a stopped stand-in is ServiceUnavailable."""
    import socket

    from helpers import localcloud
    from helpers.errors import ServiceUnavailable

    hub = IoTHub.local(fresh_cloud.workspace, timeout=3, retries=1)  # the blocker below never answers: keep waits short
    hub.create_edge_device("pi-move", tags={"site": "lab"})
    old = localcloud.status(fresh_cloud.workspace)
    localcloud.stop(fresh_cloud.workspace)
    with pytest.raises(ServiceUnavailable, match="localcloud start"):
        hub.get_twin("pi-move")
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind((old["hub_address"], old["hub_port"]))
    blocker.listen()
    try:
        info = localcloud.ensure_running(fresh_cloud.workspace)
        assert info["hub_port"] != old["hub_port"] and info["hub_address"] == old["hub_address"]
        assert hub.get_twin("pi-move").tags == {"site": "lab"} and hub.host == f"{info['hub_address']}:{info['hub_port']}"
    finally:
        blocker.close()
