"""SAS tokens name this hub: a token signed for another host is refused, through real requests."""
from __future__ import annotations

import pytest
import requests

from helpers.config import parse_connection_string
from helpers.endpoints import read_credentials
from helpers.protocol.sas import generate_sas_token

pytestmark = pytest.mark.timeout(60)

OTHER_HOSTS = ("other-hub.azure-devices.net", "127.0.0.1:1", "127.0.0.1")


def _get(url: str, token) -> requests.Response:
    return requests.get(url, headers={"Authorization": token.get_secret_value()}, timeout=5)


def _owner(cloud) -> tuple[str, str]:
    parts = parse_connection_string(read_credentials(cloud.workspace)["service_connection_string"])
    return parts["HostName"], parts["SharedAccessKey"]


def test_service_token_for_another_host_is_refused(cloud, unique_name):
    host, key = _owner(cloud)
    dev = unique_name("sas")
    cloud.hub.create_edge_device(dev)
    url = f"{cloud.url}/devices/{dev}"
    assert _get(url, generate_sas_token(host, key, "iothubowner")).status_code == 200
    assert _get(url, generate_sas_token(host.upper() + "/", key, "iothubowner")).status_code == 200  # host names ignore case
    for other in OTHER_HOSTS:
        r = _get(url, generate_sas_token(other, key, "iothubowner"))
        assert r.status_code == 401, (other, r.text)
        assert r.json()["field"] == "Authorization" and host in r.json()["error"], r.text
    # a host that merely starts with ours is another host
    assert _get(url, generate_sas_token(host + "0", key, "iothubowner")).status_code == 401


def test_device_token_for_another_host_is_refused(cloud, unique_name):
    host, _ = _owner(cloud)
    dev = unique_name("sas")
    cloud.hub.create_edge_device(dev)
    key = parse_connection_string(cloud.hub.connection_string(dev))["SharedAccessKey"]
    url = f"{cloud.url}/twins/{dev}"
    assert _get(url, generate_sas_token(f"{host}/devices/{dev}", key)).status_code == 200
    for other in OTHER_HOSTS:
        r = _get(url, generate_sas_token(f"{other}/devices/{dev}", key))
        assert r.status_code == 401, (other, r.text)
        assert host in r.json()["error"], r.text
    r = _get(url, generate_sas_token(f"{host}/devices/{dev}", key))
    assert r.status_code == 200 and r.json()["deviceId"] == dev


def test_health_tells_a_device_nothing_about_the_machine(cloud, unique_name):
    host, key = _owner(cloud)
    dev = unique_name("sas")
    cloud.hub.create_edge_device(dev)
    dev_key = parse_connection_string(cloud.hub.connection_string(dev))["SharedAccessKey"]
    r = _get(f"{cloud.url}/api/health", generate_sas_token(f"{host}/devices/{dev}", dev_key))
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert "pid" not in r.json() and "workspace" not in r.json() and str(cloud.workspace) not in r.text, r.text
    # the owner (service token) still sees which process answers (service.status() relies on it)
    owner = _get(f"{cloud.url}/api/health", generate_sas_token(host, key, "iothubowner")).json()
    assert owner["pid"] == cloud.pid and owner["workspace"] == str(cloud.workspace)
