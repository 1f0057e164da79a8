"""The local hub through the real service: identities, twins, deployments, device auth, status."""
from __future__ import annotations

import time

import pytest
import requests

from helpers.config import Secret
from helpers.errors import BackendNotFound, Conflict, Forbidden, NotFound, ServiceError, Unauthorized
from helpers.hub import Hub, get_hub
from helpers.hub.device_client import DeviceClient
from helpers.hub.local import LocalHub
from helpers.hub.manifest import build_manifest, module_spec
from helpers.hub.sas import generate_sas_token


def manifest(image: str = "edgeloop-device:1", name: str = "collector") -> dict:
    return build_manifest([module_spec(name, image)])


def report_applied(client: DeviceClient, version: str, code: int = 200, module_state: str = "running") -> None:
    client.report({"edgeAgent": {"lastDesiredVersion": version, "lastDesiredStatus": {"code": code, "description": ""},
                                 "heartbeat": "2026-01-01T00:00:00Z", "runtime": "process",
                                 "modules": {"collector": {"runtimeStatus": module_state, "exitCode": 0, "restartCount": 0,
                                                           "hostPort": 49120, "image": "edgeloop-device:1",
                                                           "telemetry": {"uploaded": 3}}}}})


def test_get_hub_registry(cloud):
    hub = get_hub("local", workspace=cloud.workspace)
    assert isinstance(hub, LocalHub) and isinstance(hub, Hub)
    with pytest.raises(BackendNotFound, match=r"valid: \['azure', 'local'\]"):
        get_hub("nope", workspace=cloud.workspace)


def test_device_identity_and_connection_string(cloud, unique_name):
    hub = cloud.hub
    dev = unique_name("cam")
    d = hub.create_edge_device(dev, tags={"site": "lab"})
    assert d.device_id == dev and d.edge and d.tags == {"site": "lab"} and d.connection_state == "Disconnected"
    assert hub.create_edge_device(dev).device_id == dev  # exist_ok
    with pytest.raises(Conflict):
        hub.create_edge_device(dev, exist_ok=False)
    assert dev in [x.device_id for x in hub.list_devices()]
    cs = hub.connection_string(dev)
    value = cs.get_secret_value()
    assert isinstance(cs, Secret) and value.split("SharedAccessKey=")[1] not in repr(cs) + str(cs)
    assert value.startswith(f"HostName=127.0.0.1:{cloud.info['port']};DeviceId={dev};SharedAccessKey=")
    hub.delete_device(dev)
    with pytest.raises(NotFound):
        hub.get_device(dev)
    with pytest.raises(NotFound):
        hub.delete_device(dev)


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
    assert t3.desired == {"interval": 5}
    with pytest.raises(Conflict) as exc:
        hub.update_desired(dev, {"interval": 6}, etag=t2.etag)  # stale etag -> 412
    assert exc.value.status == 412
    assert hub.get_twin(dev).desired == {"interval": 5}


def test_device_client_own_twin_only(cloud, unique_name):
    hub = cloud.hub
    a, b = unique_name("cam"), unique_name("cam")
    hub.create_edge_device(a)
    hub.create_edge_device(b)
    ca = DeviceClient.from_connection_string(hub.connection_string(a))
    assert ca.get_twin()["deviceId"] == a
    assert ca.get_deployment() is None
    ca.report({"edgeAgent": {"runtime": "process"}, "x": 1})
    ca.report({"x": None})
    assert hub.get_twin(a).reported == {"edgeAgent": {"runtime": "process"}}
    # device A's valid token on device B's twin, deployment or reported properties: 403
    token = generate_sas_token(f"{ca.host}/devices/{a}", ca._key).get_secret_value()
    for method, path in (("GET", f"/twins/{b}"), ("GET", f"/devices/{b}/deployment"),
                         ("PATCH", f"/devices/{b}/twin/properties/reported"), ("GET", "/devices")):
        r = requests.request(method, cloud.url + path, headers={"Authorization": token}, json={"x": 1}, timeout=5)
        assert r.status_code == 403, path
        assert r.json()["success"] is False and r.json()["field"]
    # A signing for B with A's key: the signature does not match B's key: 401
    with pytest.raises(Unauthorized):
        DeviceClient(ca.host, b, ca._key, url=cloud.url).get_twin()
    # forged key: 401
    forged = DeviceClient(ca.host, a, Secret("QUJDREVGR0hJSktMTU5PUA=="), url=cloud.url)
    with pytest.raises(Unauthorized):
        forged.get_twin()


def test_no_or_wrong_credential_is_401(cloud):
    for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "SharedAccessSignature sr=h&sig=AAAA&se=9999999999&skn=iothubowner"}):
        r = requests.get(f"{cloud.url}/devices", headers=headers, timeout=5)
        assert r.status_code == 401, headers
        assert r.json()["field"] == "Authorization" and r.json()["success"] is False
    assert requests.get(f"{cloud.url}/openapi.json", timeout=5).status_code == 401
    r = requests.get(f"{cloud.url}/openapi.json", headers={"x-api-key": cloud.studio.api_key.get_secret_value()}, timeout=5)
    assert r.status_code == 200 and "/configurations/{name}" in r.json()["paths"]


def test_bad_json_and_manifest_are_400(cloud, unique_name):
    hub = cloud.hub
    dev = unique_name("cam")
    hub.create_edge_device(dev)
    headers = hub._headers()
    r = requests.patch(f"{cloud.url}/twins/{dev}", data=b"{not json", headers=headers, timeout=5)
    assert r.status_code == 400 and r.json()["field"] == "body"
    with pytest.raises(ServiceError) as exc:
        hub.set_modules(dev, {"$edgeAgent": {"properties.desired": {}}})
    assert exc.value.status == 400 and "$edgeHub" in str(exc.value)
    with pytest.raises(ServiceError) as exc:
        hub.create_deployment(unique_name("dep"), manifest(), "tags.env='prod' AND")
    assert exc.value.status == 400 and exc.value.field == "targetCondition"
    with pytest.raises(NotFound):
        hub.set_modules(unique_name("ghost"), manifest())
    assert hub.effective_deployment(dev) is None  # nothing was written


def test_set_modules_and_deployment_precedence(cloud, unique_name):
    hub = cloud.hub
    site = unique_name("site")
    d1, d2, d3 = (unique_name("cam") for _ in range(3))
    hub.create_edge_device(d1, tags={"site": site, "env": "prod"})
    hub.create_edge_device(d2, tags={"site": site, "env": "dev"})
    hub.create_edge_device(d3, tags={"site": "elsewhere"})
    hub.set_modules(d1, manifest("own:1"))
    eff = hub.effective_deployment(d1)
    assert eff["source"] == "device" and eff["version"] == "device:1"

    low = unique_name("low")
    high = unique_name("high")
    hub.create_deployment(low, manifest("low:1"), f"tags.site='{site}'", priority=1)
    hub.create_deployment(high, manifest("high:1"), f"tags.site='{site}' AND (tags.env='prod' OR deviceId='{d3}')", priority=5)
    # a deployment targeting d1 overrides its own content; the higher priority wins
    assert hub.effective_deployment(d1)["source"] == high
    assert hub.effective_deployment(d2)["source"] == low
    assert hub.effective_deployment(d3) is None
    # a tie goes to the newest
    tie = unique_name("tie")
    hub.create_deployment(tie, manifest("tie:1"), f"tags.site='{site}'", priority=1)
    assert hub.effective_deployment(d2)["source"] == tie
    with pytest.raises(Conflict):
        hub.create_deployment(tie, manifest("tie:2"), "*")
    # device-level content returns once no deployment targets the device
    for name in (low, high, tie):
        hub.delete_deployment(name)
    assert hub.effective_deployment(d1)["source"] == "device"
    with pytest.raises(NotFound):
        hub.delete_deployment(low)


def test_deployment_metrics_and_device_status(cloud, unique_name):
    hub = cloud.hub
    site = unique_name("site")
    devs = [unique_name("cam") for _ in range(3)]
    for d in devs:
        hub.create_edge_device(d, tags={"site": site})
    name = unique_name("collect")
    dep = hub.create_deployment(name, manifest(), f"tags.site='{site}'", priority=10, labels={"stage": "collect"})
    assert dep.metrics == {"targeted": 3, "applied": 3, "reportingSuccess": 0, "reportingFailure": 0}
    clients = [DeviceClient.from_connection_string(hub.connection_string(d)) for d in devs]
    version = clients[0].get_deployment()["version"]
    assert clients[0].get_deployment()["modulesContent"]["$edgeAgent"]
    report_applied(clients[0], version)
    report_applied(clients[1], version, code=200, module_state="failed")
    dep = next(d for d in hub.list_deployments() if d.name == name)
    assert dep.metrics == {"targeted": 3, "applied": 3, "reportingSuccess": 1, "reportingFailure": 1}
    assert dep.labels == {"stage": "collect"} and dep.priority == 10

    s0 = hub.device_status(devs[0])
    assert s0.connected and s0.last_desired_status == 200 and s0.deployment == name
    assert s0.desired_version == s0.reported_version == version
    m = s0.modules["collector"]
    assert m.runtime_status == "running" and m.host_port == 49120 and m.telemetry == {"uploaded": 3}
    assert hub.get_device(devs[0]).connection_state == "Connected"
    # never reported + pending deployment: offline, 406
    s2 = hub.device_status(devs[2])
    assert not s2.connected and s2.last_desired_status == 406 and "pending" in s2.last_desired_description
    # a higher-priority deployment on one device: the first one no longer applies there
    other = unique_name("other")
    hub.create_deployment(other, manifest("other:1"), f"deviceId='{devs[0]}'", priority=20)
    dep = hub.get_deployment(name)
    assert dep.metrics["targeted"] == 3 and dep.metrics["applied"] == 2
    s0 = hub.device_status(devs[0])
    assert s0.deployment == other and s0.last_desired_status is None and "pending" in s0.last_desired_description
    hub.update_deployment(other, priority=0)
    assert hub.device_status(devs[0]).deployment == name
    for n in (name, other):
        hub.delete_deployment(n)


def test_connected_window(cloud, unique_name, monkeypatch):
    from helpers.localcloud import hub_api

    hub = cloud.hub
    dev = unique_name("cam")
    hub.create_edge_device(dev)
    client = DeviceClient.from_connection_string(hub.connection_string(dev))
    client.report({"edgeAgent": {"heartbeat": "now"}})
    assert hub.device_status(dev).connected
    # the window is the service's: check the rule on the JSON it computes
    row = {"device_id": dev, "reported": "{}", "last_report_at": time.time() - hub_api.CONNECTED_WINDOW_S - 1}
    assert hub_api.status_json(row, None)["connected"] is False


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
    monkeypatch.setenv("EDGELOOP_HUB", "local")
    assert isinstance(get_hub(workspace=cloud.workspace), LocalHub)


def test_device_url_from_environment(cloud, unique_name, monkeypatch):
    dev = unique_name("cam")
    cloud.hub.create_edge_device(dev)
    # the device reaches the hub by another address than its HostName (a container network's
    # alias, say); its tokens still name the hub's HostName
    alias = cloud.url.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("EDGELOOP_HUB_URL", alias)
    client = DeviceClient.from_connection_string(cloud.hub.connection_string(dev))
    assert client.url == alias and client.get_twin()["deviceId"] == dev
    from helpers.errors import ConfigError

    with pytest.raises(ConfigError, match="DeviceId"):
        DeviceClient.from_connection_string(cloud.hub.connection_string_service)


def test_remove_deployments_clears_an_earlier_runs_lab_deployments(cloud, unique_name):
    """A rerun of the workshop: the old at-scale deployment for the lab hides the device's own
    content until `remove_deployments` removes it; deployments for other targets stay."""
    from helpers.deploy import remove_deployments

    hub = cloud.hub
    lab = unique_name("lab")
    dev = unique_name("cam")
    hub.create_edge_device(dev, tags={"lab": lab})
    hub.create_deployment(unique_name("fruit-v2"), manifest("runner:2", "runner"), f"tags.lab='{lab}'", priority=12)
    other = unique_name("other")
    hub.create_deployment(other, manifest("other:1"), f"tags.lab='{lab}-b'", priority=1)
    hub.set_modules(dev, manifest("collector:1"))
    assert hub.effective_deployment(dev)["source"] != "device"
    removed = remove_deployments(hub, f"tags.lab='{lab}'")
    assert len(removed) == 1 and removed[0].startswith("fruit-v2")
    assert hub.effective_deployment(dev)["source"] == "device"
    assert other in [d.name for d in hub.list_deployments()]
    assert remove_deployments(hub, f"tags.lab='{lab}'") == []
