"""Conformance: every `azure-iot-hub` SDK call the project makes, against the local stand-in and,
when IOTHUB_CONNECTION_STRING is set, against a real Azure IoT Hub (the same tests, marked `azure`).

    .venv/bin/pytest tests/integration/test_hub_conformance.py                    # the stand-in
    IOTHUB_CONNECTION_STRING='HostName=<hub>.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=...' \\
        .venv/bin/pytest tests/integration/test_hub_conformance.py -m azure      # a real hub

Against Azure the tests create devices and configurations named `edgeloop-conf-*` and delete
them at the end; the hub needs no devices of its own, and applying a deployment there can take
minutes (IoT Hub evaluates configurations on its own schedule), so those waits are long.

The SDK is the only client here: `IoTHubRegistryManager` and `IoTHubConfigurationManager`
from their connection string, trusting the stand-in's CA on their own connection settings.
"""
from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import waiting
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import (
    Configuration,
    ConfigurationContent,
    ConfigurationMetrics,
    ConfigurationQueriesTestInput,
    QuerySpecification,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

from helpers.protocol.manifest import build_manifest, module_spec

wait_for = functools.partial(waiting.wait_for, interval=0.5)

pytestmark = pytest.mark.timeout(900)

AZURE_CS = os.environ.get("IOTHUB_CONNECTION_STRING", "")
THUMB_A, THUMB_B = "A" * 40, "B" * 40


@dataclass
class Target:
    """A hub under test: the SDK's two managers, and how long the hub takes to apply a deployment."""

    kind: str
    registry: IoTHubRegistryManager
    configs: IoTHubConfigurationManager
    apply_timeout_s: float
    connection_string: str
    ca_file: str | None
    workspace: Any = None

    def managers(self) -> tuple[IoTHubRegistryManager, IoTHubConfigurationManager]:
        return self.registry, self.configs


def sdk_managers(cs: str, ca_file: str | None) -> tuple[IoTHubRegistryManager, IoTHubConfigurationManager]:
    registry = IoTHubRegistryManager.from_connection_string(cs)
    configs = IoTHubConfigurationManager.from_connection_string(cs)
    if ca_file:
        for protocol in (registry.protocol, configs.protocol):
            protocol.config.connection.verify = ca_file  # this client only
    return registry, configs


@pytest.fixture(params=["local", pytest.param("azure", marks=[pytest.mark.azure, pytest.mark.live])])
def target(request) -> Target:
    if request.param == "azure":
        if not AZURE_CS:
            pytest.skip("IOTHUB_CONNECTION_STRING is not set: the conformance suite against a real Azure IoT Hub needs an "
                        "iothubowner connection string")
        registry, configs = sdk_managers(AZURE_CS, None)
        return Target("azure", registry, configs, 600.0, AZURE_CS, None)
    cloud = request.getfixturevalue("cloud")
    from helpers.localcloud.service import hub_credentials

    creds = hub_credentials(cloud.workspace)
    registry, configs = sdk_managers(creds["service_connection_string"], creds["ca_file"])
    return Target("local", registry, configs, 20.0, creds["service_connection_string"], creds["ca_file"], cloud.workspace)


@pytest.fixture()
def names(target) -> Iterator[Callable[[str], str]]:
    """Unique ids; every device and configuration made with them is deleted at the end."""
    made: list[str] = []
    tag = uuid.uuid4().hex[:6]

    def make(prefix: str) -> str:
        made.append(f"edgeloop-conf-{prefix}-{tag}-{len(made)}")
        return made[-1]

    yield make
    for name in made:
        for delete in (target.registry.delete_device, target.configs.delete_configuration):
            try:
                delete(name)
            except HttpOperationError as exc:
                assert exc.response.status_code == 404, exc.response.text


def status_of(exc: HttpOperationError) -> tuple[int, str]:
    """(HTTP status, IoT Hub error code) of the SDK's own exception."""
    body = exc.response.json()
    return exc.response.status_code, body["Message"].split(";", 1)[0].removeprefix("ErrorCode:")


def manifest(image: str = "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5") -> dict[str, Any]:
    return build_manifest([module_spec("collector", image)])


# ------------------------------------------------------------------ identities
def test_device_identities_with_each_authentication(target, names):
    rm = target.registry
    sas, x509, ca, leaf = names("sas"), names("x509"), names("ca"), names("leaf")
    d = rm.create_device_with_sas(sas, None, None, "enabled", iot_edge=True)
    assert d.device_id == sas and d.authentication.type == "sas" and d.capabilities.iot_edge
    assert d.authentication.symmetric_key.primary_key and d.etag  # the hub generated the keys
    d = rm.create_device_with_x509(x509, THUMB_A, THUMB_B, "enabled", iot_edge=True)
    assert d.authentication.type == "selfSigned"
    assert (d.authentication.x509_thumbprint.primary_thumbprint, d.authentication.x509_thumbprint.secondary_thumbprint) == (THUMB_A, THUMB_B)
    assert rm.create_device_with_certificate_authority(ca, "enabled").authentication.type == "certificateAuthority"
    assert rm.create_device_with_sas(leaf, None, None, "enabled").capabilities.iot_edge is False
    with pytest.raises(HttpOperationError) as exc:
        rm.create_device_with_sas(sas, None, None, "enabled")
    assert status_of(exc.value) == (409, "DeviceAlreadyExists")
    got = rm.get_device(sas)
    updated = rm.update_device_with_sas(sas, got.etag, got.authentication.symmetric_key.primary_key,
                                        got.authentication.symmetric_key.secondary_key, "disabled", iot_edge=True)
    assert updated.status == "disabled" and updated.etag != got.etag
    with pytest.raises(HttpOperationError) as exc:  # the etag it was read with is stale now
        rm.update_device_with_sas(sas, got.etag, None, None, "enabled", iot_edge=True)
    assert status_of(exc.value)[0] == 412
    listed = {x.device_id for x in rm.get_devices(1000)}
    assert {sas, x509, ca, leaf} <= listed or target.kind == "azure"  # Azure lists at most 1000 of many
    cert = rm.get_device(x509)
    rotated = rm.update_device_with_x509(x509, cert.etag, THUMB_B, THUMB_A, "enabled", iot_edge=True)
    assert rotated.authentication.x509_thumbprint.primary_thumbprint == THUMB_B  # certificate rotation
    rm.delete_device(leaf)
    with pytest.raises(HttpOperationError) as exc:
        rm.get_device(leaf)
    assert status_of(exc.value) == (404, "DeviceNotFound")
    stats = rm.get_device_registry_statistics()
    assert stats.total_device_count >= 3 and stats.disabled_device_count >= 1
    assert rm.get_service_statistics().connected_device_count >= 0


def test_modules_of_an_edge_device(target, names):
    rm = target.registry
    dev = names("mod")
    rm.create_device_with_sas(dev, None, None, "enabled", iot_edge=True)
    system = {m.module_id for m in rm.get_modules(dev)}
    assert {"$edgeAgent", "$edgeHub"} <= system
    m = rm.create_module_with_sas(dev, "collector", None, None, None)
    assert m.module_id == "collector" and m.authentication.symmetric_key.primary_key
    assert rm.get_module(dev, "collector").etag == m.etag
    with pytest.raises(HttpOperationError) as exc:
        rm.create_module_with_sas(dev, "collector", None, None, None)
    assert status_of(exc.value) == (409, "ModuleAlreadyExistsOnDevice")
    key = "c2VsZi1jaG9zZW4tbW9kdWxlLWtleS0wMTIzNDU2Nzg5"  # a 33-byte key the caller chose (base64)
    renewed = rm.update_module_with_sas(dev, "collector", None, m.etag, key, key)
    assert renewed.authentication.symmetric_key.primary_key == key and renewed.etag != m.etag
    with pytest.raises(HttpOperationError) as exc:
        rm.update_module_with_sas(dev, "collector", None, m.etag, key, key)  # stale etag
    assert status_of(exc.value)[0] == 412
    cert_module = rm.create_module_with_x509(dev, "camera", None, THUMB_A, THUMB_B)
    assert cert_module.authentication.type == "selfSigned"
    assert cert_module.authentication.x509_thumbprint.primary_thumbprint == THUMB_A
    rm.delete_module(dev, "collector")
    with pytest.raises(HttpOperationError) as exc:
        rm.get_module(dev, "collector")
    assert status_of(exc.value)[0] == 404


# ------------------------------------------------------------------ twins
def test_device_twin_tags_desired_versions_and_etags(target, names):
    rm = target.registry
    dev = names("twin")
    rm.create_device_with_sas(dev, None, None, "enabled", iot_edge=True)
    t0 = rm.get_twin(dev)
    t1 = rm.update_twin(dev, Twin(tags={"site": "lab", "env": "prod"}, properties=TwinProperties(desired={"rate": 2})), t0.etag)
    assert t1.tags == {"site": "lab", "env": "prod"} and t1.properties.desired["rate"] == 2
    assert t1.properties.desired["$version"] == t0.properties.desired["$version"] + 1 and t1.etag != t0.etag
    with pytest.raises(HttpOperationError) as exc:
        rm.update_twin(dev, Twin(tags={"site": "x"}), t0.etag)
    assert status_of(exc.value)[0] == 412
    t2 = rm.update_twin(dev, Twin(tags={"env": None}), "*")  # merge patch: null deletes
    assert t2.tags == {"site": "lab"}
    t3 = rm.replace_twin(dev, Twin(tags={"only": "this"}, properties=TwinProperties(desired={"a": 1})), t2.etag)
    assert t3.tags == {"only": "this"} and {k: v for k, v in t3.properties.desired.items() if not k.startswith("$")} == {"a": 1}


def test_module_twins_with_etags(target, names):
    rm = target.registry
    dev = names("mtwin")
    rm.create_device_with_sas(dev, None, None, "enabled", iot_edge=True)
    rm.create_module_with_sas(dev, "runner", None, None, None)
    t0 = rm.get_module_twin(dev, "runner")
    assert t0.module_id == "runner" and t0.device_id == dev
    t1 = rm.update_module_twin(dev, "runner", Twin(properties=TwinProperties(desired={"threshold": 0.5})), t0.etag)
    assert t1.properties.desired["threshold"] == 0.5 and t1.properties.desired["$version"] == t0.properties.desired["$version"] + 1
    with pytest.raises(HttpOperationError) as exc:
        rm.update_module_twin(dev, "runner", Twin(properties=TwinProperties(desired={"threshold": 0.9})), t0.etag)
    assert status_of(exc.value)[0] == 412
    t2 = rm.replace_module_twin(dev, "runner", Twin(properties=TwinProperties(desired={"other": True})), t1.etag)
    assert {k: v for k, v in t2.properties.desired.items() if not k.startswith("$")} == {"other": True}
    agent = rm.get_module_twin(dev, "$edgeAgent")
    assert agent.module_id == "$edgeAgent" and agent.etag


# ------------------------------------------------------------------ IoT Edge content and deployments
def test_apply_configuration_content_writes_the_module_twins(target, names):
    rm, cm = target.managers()
    dev = names("apply")
    rm.create_device_with_sas(dev, None, None, "enabled", iot_edge=True)
    content = manifest()
    cm.apply_configuration_on_edge_device(dev, ConfigurationContent(modules_content=content))
    agent = rm.get_module_twin(dev, "$edgeAgent").properties.desired
    hub = rm.get_module_twin(dev, "$edgeHub").properties.desired
    assert agent["modules"]["collector"]["settings"]["image"] == content["$edgeAgent"]["properties.desired"]["modules"]["collector"]["settings"]["image"]
    assert hub["schemaVersion"] == content["$edgeHub"]["properties.desired"]["schemaVersion"]
    with pytest.raises(HttpOperationError) as exc:
        cm.apply_configuration_on_edge_device(dev, ConfigurationContent(modules_content={"$edgeAgent": {}}))
    assert status_of(exc.value)[0] == 400


def test_configurations_metrics_and_test_queries(target, names):
    rm, cm = target.managers()
    site = names("site")
    devs = [names("dep"), names("dep")]
    for d in devs:
        rm.create_device_with_sas(d, None, None, "enabled", iot_edge=True)
        rm.update_twin(d, Twin(tags={"site": site}), "*")
    name = names("cfg")
    # custom metrics count over the whole hub: the query names its deployment, as Azure's examples do
    ok_query = ("SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND "
                f"configurations.[[{name}]].status = 'Applied' AND properties.reported.lastDesiredStatus.code = 200")
    config = Configuration(id=name, schema_version="1.0", labels={"stage": "conformance"}, priority=3,
                           target_condition=f"tags.site='{site}'", content=ConfigurationContent(modules_content=manifest()),
                           metrics=ConfigurationMetrics(queries={"ok": ok_query}))
    created = cm.create_configuration(config)
    assert created.id == name and created.priority == 3 and created.etag and created.labels == {"stage": "conformance"}
    with pytest.raises(HttpOperationError) as exc:
        cm.create_configuration(config)
    assert status_of(exc.value)[0] == 409
    assert name in {c.id for c in cm.get_configurations()}
    # the hub applies it on its own schedule; then the system metrics count both devices
    got = wait_for(lambda: (lambda c: c if (c.system_metrics.results or {}).get("appliedCount") == 2 else None)(
        cm.get_configuration(name)), target.apply_timeout_s, "appliedCount == 2")
    assert got.system_metrics.results["targetedCount"] == 2 and got.metrics.queries == {"ok": ok_query}
    assert got.metrics.results["ok"] == 0  # no edge agent has reported yet
    agent = rm.get_module_twin(devs[0], "$edgeAgent").properties.desired
    assert agent["modules"]["collector"]["settings"]["image"].endswith("simulated-temperature-sensor:1.5")
    # condition, priority and labels change with the etag; the content cannot
    got.priority, got.system_metrics = 4, None
    updated = cm.update_configuration(got, got.etag)
    assert updated.priority == 4 and updated.etag != got.etag
    with pytest.raises(HttpOperationError) as exc:
        cm.update_configuration(got, got.etag)
    assert status_of(exc.value)[0] == 412
    res = cm.test_configuration_queries(ConfigurationQueriesTestInput(
        target_condition="tags.site=", custom_metric_queries={"good": ok_query, "bad": "SELECT * FROM"}))
    assert res.target_condition_error and res.custom_metric_query_errors["bad"] and not res.custom_metric_query_errors["good"]
    cm.delete_configuration(name)
    with pytest.raises(HttpOperationError) as exc:
        cm.get_configuration(name)
    assert status_of(exc.value)[0] == 404
    # deleting a deployment leaves what it put on the devices
    assert "collector" in rm.get_module_twin(devs[0], "$edgeAgent").properties.desired["modules"]


def test_custom_metric_counts_what_the_edge_agent_reports(target, names):
    """The $edgeAgent module identity reports (as edgeAgent does, over MQTT with the device SDK)
    and the deployment's metrics count it: system `reportedSuccessfulCount` and a custom query."""
    from azure.iot.device import IoTHubModuleClient

    rm, cm = target.managers()
    site, dev, name = names("site"), names("agent"), names("cfg")
    rm.create_device_with_sas(dev, None, None, "enabled", iot_edge=True)
    rm.update_twin(dev, Twin(tags={"site": site}), "*")
    ok_query = ("SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND "
                f"configurations.[[{name}]].status = 'Applied' AND properties.reported.lastDesiredStatus.code = 200")
    cm.create_configuration(Configuration(id=name, priority=1, target_condition=f"tags.site='{site}'",
                                          content=ConfigurationContent(modules_content=manifest()),
                                          metrics=ConfigurationMetrics(queries={"ok": ok_query})))
    wait_for(lambda: (cm.get_configuration(name).system_metrics.results or {}).get("appliedCount") == 1,
             target.apply_timeout_s, "applied")
    version = rm.get_module_twin(dev, "$edgeAgent").properties.desired["$version"]
    key = rm.get_module(dev, "$edgeAgent").authentication.symmetric_key.primary_key
    host = target.connection_string.split("HostName=", 1)[1].split(";", 1)[0].rsplit(":", 1)[0] if target.kind == "local" \
        else target.connection_string.split("HostName=", 1)[1].split(";", 1)[0]
    kw = {"server_verification_cert": open(target.ca_file).read()} if target.ca_file else {}
    client = IoTHubModuleClient.create_from_connection_string(
        f"HostName={host};DeviceId={dev};ModuleId=$edgeAgent;SharedAccessKey={key}", **kw)
    try:
        client.connect()
        client.patch_twin_reported_properties({"lastDesiredVersion": version, "lastDesiredStatus": {"code": 200, "description": ""}})
    finally:
        client.shutdown()
    got = wait_for(lambda: (lambda c: c if c.metrics.results.get("ok") == 1 else None)(cm.get_configuration(name)),
                   target.apply_timeout_s, "the custom metric counts the report")
    assert got.system_metrics.results["reportedSuccessfulCount"] == 1 and got.system_metrics.results["reportedFailedCount"] == 0


# ------------------------------------------------------------------ queries
def test_queries_with_continuation_counts_and_groups(target, names):
    rm = target.registry
    site = names("q")
    devs = [names("q") for _ in range(5)]
    for i, d in enumerate(devs):
        rm.create_device_with_sas(d, None, None, "enabled", iot_edge=True)
        rm.update_twin(d, Twin(tags={"site": site, "shelf": "top" if i < 2 else "bottom"}), "*")
    spec = QuerySpecification(query=f"SELECT * FROM devices WHERE tags.site = '{site}'")
    seen, token, pages = [], None, 0
    while True:
        res = rm.query_iot_hub(spec, token, 2)
        pages += 1
        seen += [t.device_id for t in res.items]
        token = res.continuation_token
        if not token:
            break
    assert sorted(seen) == sorted(devs) and pages == 3 and res.type == "twin"
    counts = rm.protocol.query.get_twins(QuerySpecification(
        query=f"SELECT tags.shelf AS shelf, COUNT() AS n FROM devices WHERE tags.site = '{site}' GROUP BY tags.shelf"), raw=True)
    assert sorted((r["shelf"], r["n"]) for r in counts.response.json()) == [("bottom", 3), ("top", 2)]
    assert counts.headers["x-ms-item-type"] == "raw"
    modules = rm.query_iot_hub(QuerySpecification(
        query=f"SELECT * FROM devices.modules WHERE moduleId = '$edgeAgent' AND deviceId IN ['{devs[0]}', '{devs[1]}']"))
    assert sorted(t.device_id for t in modules.items) == sorted(devs[:2]) and {t.module_id for t in modules.items} == {"$edgeAgent"}
    with pytest.raises(HttpOperationError) as exc:
        rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE"))
    assert status_of(exc.value)[0] == 400


# ------------------------------------------------------------------ errors and throttling through our client
def test_errors_are_the_sdks_own_and_wrapped_once(target, names):
    from helpers.errors import Conflict, NotFound
    from helpers.hub.iothub import IoTHub

    with pytest.raises(HttpOperationError) as exc:
        target.registry.get_twin(names("ghost"))
    assert status_of(exc.value) == (404, "DeviceNotFound")
    hub = IoTHub(target.connection_string, ca_file=target.ca_file, workspace=target.workspace)
    with pytest.raises(NotFound) as err:
        hub.get_twin(names("ghost"))
    assert err.value.status == 404 and err.value.error_code == "DeviceNotFound" and "DeviceNotFound" in str(err.value)
    dev = names("dup")
    hub.create_edge_device(dev)
    with pytest.raises(Conflict) as err:
        hub.create_edge_device(dev, exist_ok=False)
    assert err.value.error_code == "DeviceAlreadyExists"


def test_throttling_answers_429_and_the_client_backs_off(tmp_path):
    """The stand-in only: a hub configured for 4 requests/s (burst 2) answers 429 + Retry-After;
    the SDK's transport waits and retries, so the calls succeed; without retries the error is ours."""
    import requests

    from helpers import localcloud
    from helpers.errors import ServiceUnavailable
    from helpers.hub.iothub import IoTHub
    from helpers.localcloud.service import hub_credentials

    ws = tmp_path / "ws"
    localcloud.ensure_running(ws, hub_settings={"throttle_rps": 4, "throttle_burst": 2})
    try:
        hub = IoTHub.local(ws)
        for i in range(8):
            hub.create_edge_device(f"thr-{i}")
        assert len(hub.list_devices()) == 8
        creds = hub_credentials(ws)
        from helpers.config import parse_connection_string
        from helpers.protocol.sas import generate_sas_token

        parts = parse_connection_string(creds["service_connection_string"])
        token = generate_sas_token(parts["HostName"], parts["SharedAccessKey"], "iothubowner").get_secret_value()
        stats = requests.get(f"{localcloud.status(ws)['url']}/api/hub/stats", headers={"Authorization": token}, timeout=5).json()
        assert stats["throttled"] >= 1 and stats["throttle"] == {"rate": 4.0, "burst": 2}
        impatient = IoTHub.local(ws, retries=0)
        with pytest.raises(ServiceUnavailable) as err:
            for _ in range(10):
                impatient.get_twin("thr-0")
        assert err.value.status == 429 and err.value.error_code == "ThrottlingException"
    finally:
        localcloud.stop(ws)


def test_a_deployment_recreated_under_its_name_waits_for_the_hub(tmp_path):
    """The stand-in only (Azure's marks are not observable this fast): a rollback deletes and
    re-creates a deployment under the same name; until the hub evaluates it, the device is not
    marked Applied, so a rollout cannot mistake the old content's report for the new one's."""
    from helpers import localcloud
    from helpers.hub.iothub import IoTHub

    ws = tmp_path / "ws"
    localcloud.ensure_running(ws, hub_settings={"deployment_timing": "3,300"})
    try:
        hub = IoTHub.local(ws)
        hub.create_edge_device("pi-rb", tags={"lab": "rb"})
        hub.create_deployment("fruit", manifest("runner:bad"), "tags.lab='rb'")
        wait_for(lambda: hub.device_status("pi-rb").configurations.get("fruit") == "Applied", 20, "first version applied")
        hub.delete_deployment("fruit")
        assert hub.device_status("pi-rb").configurations == {}  # marks gone at once; content stays
        assert "runner:bad" in str(hub.deployed_content("pi-rb"))
        hub.create_deployment("fruit", manifest("runner:good"), "tags.lab='rb'")
        assert hub.device_status("pi-rb").configurations == {}  # not applied before the hub's evaluation (3 s)
        wait_for(lambda: hub.device_status("pi-rb").configurations.get("fruit") == "Applied", 20, "second version applied")
        assert "runner:good" in str(hub.deployed_content("pi-rb"))
    finally:
        localcloud.stop(ws)
