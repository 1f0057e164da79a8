"""Limits of the hub's REST API, driven as a hostile client would: twin and configuration writes, ids, queries, bodies.

Every bad write is refused with a 4xx naming the limit, nothing is written, and the fleet-wide
calls (`GET /twins/{id}`, `SELECT * FROM devices`) keep answering 200; no refusal leaves a
traceback in `service.log`.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from helpers.config import parse_connection_string
from helpers.localcloud.common import limits
from helpers.protocol.manifest import build_manifest, module_spec
from helpers.protocol.sas import generate_sas_token

pytestmark = pytest.mark.timeout(180)


def nested(depth: int, leaf: Any = 1, key: str = "a") -> dict[str, Any]:
    """`{"a": {"a": ... leaf}}` with `depth` objects below the root (the root is level 0)."""
    doc: Any = leaf
    for _ in range(depth + 1):
        doc = {key: doc}
    return doc


def deep_text(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


class Hub:
    """The hub's REST API with the service's SAS token (what `IoTHubRegistryManager` sends)."""

    def __init__(self, cloud):
        creds = json.loads((cloud.workspace / "localcloud" / "credentials.json").read_text())
        parts = parse_connection_string(creds["service_connection_string"])
        token = generate_sas_token(parts["HostName"], parts["SharedAccessKey"], "iothubowner").get_secret_value()
        self.url, self.headers = cloud.url, {"Authorization": token}

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None, **kw: Any) -> requests.Response:
        headers = dict(self.headers)
        if raw is not None:
            headers["content-type"] = "application/json"
        return requests.request(method, self.url + path, headers=headers, json=body, data=raw, timeout=60, **kw)

    def fleet_ok(self, device_id: str) -> dict[str, Any]:
        """The fleet-wide reads still answer 200; the device's twin."""
        r = self.call("GET", f"/twins/{device_id}")
        assert r.status_code == 200, r.text
        q = self.call("POST", "/devices/query", {"query": "SELECT * FROM devices"})
        assert q.status_code == 200, q.text
        return r.json()


def tracebacks(cloud) -> int:
    return (cloud.workspace / "localcloud" / "service.log").read_bytes().count(b"Traceback")


@pytest.fixture()
def hub(cloud) -> Iterator[Hub]:
    before = tracebacks(cloud)
    yield Hub(cloud)
    assert tracebacks(cloud) == before, "a refusal left a traceback in service.log"


def refused(r: requests.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    message = r.json()["Message"]
    for w in words:
        assert w in message, (w, message)


def test_twin_writes_are_refused_over_iot_hubs_limits_and_nothing_is_written(cloud, hub, unique_name):
    dev = unique_name("lim")
    cloud.hub.create_edge_device(dev)
    assert hub.call("PATCH", f"/twins/{dev}", {"tags": {"site": "a"}, "properties": {"desired": {"rate": 2}}}).status_code == 200
    # IoT Hub's own example of the deepest valid document: ten nested objects below the section
    assert hub.call("PATCH", f"/twins/{dev}", {"tags": {"deep": nested(9)}}).status_code == 200
    assert hub.call("PATCH", f"/twins/{dev}", {"tags": {"deep": None}}).status_code == 200
    before = hub.fleet_ok(dev)  # every refused write below leaves the twin as it is here, etag included
    cases = [
        ("PATCH", {"tags": {"deep": nested(10)}}, None, 400, ("10 levels",)),
        ("PUT", {"properties": {"desired": nested(11)}}, None, 400, ("10 levels",)),
        ("PATCH", {"tags": {"blob": "x" * 9000}}, None, 413, ("8 KB", "tags")),
        ("PATCH", {"properties": {"desired": {f"k{i}": i for i in range(100_000)}}}, None, 413, ("32 KB", "desired")),
        ("PATCH", None, b'{"properties": {"desired": {"x": NaN}}}', 400, ("NaN",)),
        ("PATCH", None, b'{"tags": {"x": -Infinity}}', 400, ("Infinity",)),
        ("PATCH", None, ('{"tags":' + deep_text(300) + "}").encode(), 400, ("nested deeper",)),
        ("PATCH", None, ('{"tags":' + deep_text(100_000) + "}").encode(), 400, ("nested deeper",)),
    ]
    for method, body, raw, status, words in cases:
        refused(hub.call(method, f"/twins/{dev}", body, raw=raw), status, *words)
        twin = hub.fleet_ok(dev)
        assert twin["tags"] == before["tags"] and twin["etag"] == before["etag"], "a refused write changed the twin"
        assert twin["properties"]["desired"]["$version"] == before["properties"]["desired"]["$version"]
    # the same rules on a module twin
    refused(hub.call("PATCH", f"/twins/{dev}/modules/$edgeHub", {"properties": {"desired": nested(12)}}), 400, "10 levels")
    refused(hub.call("PATCH", f"/twins/{dev}/modules/$edgeHub", None, raw=b'{"properties":{"desired":{"x":NaN}}}'), 400, "NaN")
    assert hub.call("GET", f"/twins/{dev}/modules/$edgeHub").status_code == 200
    stats = hub.call("GET", "/api/hub/stats").json()["refused"]
    assert stats.get("twin_depth", 0) >= 3 and stats.get("twin_tags_size", 0) >= 1 and stats.get("json_nonfinite", 0) >= 2
    print(f"refusals so far: {stats}")


def test_configuration_content_is_held_to_the_twin_limits(cloud, hub, unique_name):
    dev = unique_name("cfg")
    cloud.hub.create_edge_device(dev)
    good = build_manifest([module_spec("collector", "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5")])
    bad = [({**good, "collector": {"properties.desired": nested(11)}}, 400, "10 levels"),
           ({**good, "collector": {"properties.desired": {"blob": "y" * 40_000}}}, 413, "32 KB")]
    for content, status, words in bad:
        name = unique_name("cfgbad")
        r = hub.call("PUT", f"/configurations/{name}", {"id": name, "content": {"modulesContent": content},
                                                        "targetCondition": f"deviceId='{dev}'", "priority": 1})
        refused(r, status, words)
        assert hub.call("GET", f"/configurations/{name}").status_code == 404  # nothing saved
        refused(hub.call("POST", f"/devices/{dev}/applyConfigurationContent", {"modulesContent": content}), status, words)
    nan = json.dumps({"modulesContent": good}).replace('"schemaVersion": "1.1"', '"schemaVersion": "1.1", "x": NaN', 1)
    refused(hub.call("POST", f"/devices/{dev}/applyConfigurationContent", None, raw=nan.encode()), 400, "NaN")
    hub.fleet_ok(dev)
    assert hub.call("GET", f"/twins/{dev}/modules/$edgeAgent").json()["properties"]["desired"].get("modules") is None


def test_ids_follow_iot_hubs_characters_whole(cloud, hub, unique_name):
    log = cloud.workspace / "localcloud" / "service.log"
    for bad in ("x%0A", "x%00", "a%0Db", "a%20b", "a%2Fb", "%C3%A9", "x" * 129):
        r = hub.call("PUT", f"/devices/{bad}", {"capabilities": {"iotEdge": True}})
        assert r.status_code in (400, 404), (bad, r.status_code, r.text[:200])
    assert hub.call("GET", "/devices/x%0A").status_code == 404
    dev = unique_name("id")
    # every character IoT Hub allows in an id
    for good in (f"{dev}-:.+%_#*?!(),=@;$'", f"{dev}A9"):
        r = hub.call("PUT", f"/devices/{quote(good, safe='')}", {"capabilities": {"iotEdge": True}})
        assert r.status_code == 200, (good, r.text[:200])
    refused(hub.call("PUT", f"/devices/{dev}A9/modules/m%0A", {}), 400, "moduleId")
    refused(hub.call("PUT", "/configurations/bad%0A", {"content": {"modulesContent": {}}, "targetCondition": "*"}), 400, "id")
    assert b"\x00" not in log.read_bytes(), "a raw NUL byte reached service.log"


def test_queries_are_bounded_and_parsed_off_the_loop(cloud, hub, unique_name):
    dev = unique_name("q")
    cloud.hub.create_edge_device(dev)
    long_query = "SELECT * FROM devices WHERE " + " OR ".join(f"tags.k{i} = {i}" for i in range(40_000))  # ~160k tokens
    refused(hub.call("POST", "/devices/query", {"query": long_query}), 400, str(limits.MAX_QUERY_CHARS))
    refused(hub.call("POST", "/configurations/testQueries", {"targetCondition": long_query[29:]}), 400,
            str(limits.MAX_QUERY_CHARS))
    name = unique_name("longcond")
    good = build_manifest([module_spec("collector", "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5")])
    refused(hub.call("PUT", f"/configurations/{name}", {"content": {"modulesContent": good}, "targetCondition": long_query[29:]}),
            400, str(limits.MAX_QUERY_CHARS))
    # the longest query allowed is answered
    fits = "SELECT * FROM devices WHERE tags.k0 = 0"
    for i in range(1, 10_000):
        term = f" OR tags.k{i} = {i}"
        if len(fits) + len(term) > limits.MAX_QUERY_CHARS:
            break
        fits += term
    assert limits.MAX_QUERY_CHARS - 20 < len(fits) <= limits.MAX_QUERY_CHARS
    assert hub.call("POST", "/devices/query", {"query": fits}).status_code == 200
    # testQueries with a list where objects belong: 400, not 500
    for body in ([], ["deviceId='x'"], {"customMetricQueries": ["SELECT deviceId FROM devices"]}, {"targetCondition": ["x"]}):
        r = hub.call("POST", "/configurations/testQueries", body)
        assert r.status_code == 400, (body, r.status_code, r.text[:200])
    hub.fleet_ok(dev)


def test_bodies_are_bounded_when_chunked_and_deep_json_is_400(cloud, hub):
    limit = int(cloud.info.get("max_body_mb", 20) * 1e6)

    def chunks() -> Iterator[bytes]:
        piece = b" " * 1_000_000
        for _ in range(limit // len(piece) + 2):
            yield piece

    r = requests.post(cloud.url + "/devices/query", data=chunks(), headers={**hub.headers, "content-type": "application/json"},
                      timeout=60)
    refused(r, 413, "MB limit")
    r = requests.post(cloud.url + "/api/training/files", data=chunks(), timeout=60,
                      headers={"x-api-key": cloud.studio.api_key.get_secret_value(),
                               "content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "MB limit" in r.json()["error"], r.text[:200]
    for path in ("/devices/query", "/configurations/testQueries"):
        refused(hub.call("POST", path, None, raw=("[" * 50_000 + "]" * 50_000).encode()), 400, "nested deeper")
    assert hub.call("GET", "/statistics/devices").status_code == 200
