"""A device knows its hub by a connection string and a CA file: the endpoint, and what the fleet passes."""
from __future__ import annotations

import json

import certifi
import pytest

from helpers.device.fleet import hub_args
from helpers.device.hub_link import HubEndpoint
from helpers.errors import ConfigError

KEY = "c2VjcmV0c2VjcmV0c2VjcmV0"  # fake test key


def test_azure_is_https_hostname_with_the_system_cas():
    ep = HubEndpoint.for_connection_string(f"HostName=lab.azure-devices.net;DeviceId=d1;SharedAccessKey={KEY}")
    assert (ep.host, ep.rest_url, ep.rest_host, ep.ca_file) == (
        "lab.azure-devices.net", "https://lab.azure-devices.net", "lab.azure-devices.net", None)
    assert ep.verify == certifi.where() == ep.ca_bundle_path()


def test_stand_in_is_its_ca_file_and_rest_url(tmp_path, monkeypatch):
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    ep = HubEndpoint.for_connection_string(f"HostName=127.0.5.1;DeviceId=d1;SharedAccessKey={KEY}",
                                           ca_file="ca.pem", rest_url="https://127.0.5.1:8443/")
    assert (ep.host, ep.rest_url, ep.rest_host) == ("127.0.5.1", "https://127.0.5.1:8443", "127.0.5.1:8443")
    # absolute: a module started in another folder (or a container) reads the same file
    assert ep.ca_bundle_path() == str(tmp_path / "ca.pem") == ep.verify
    assert ep.ca_pem().startswith("-----BEGIN")


def test_a_missing_ca_file_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="--ca-file .* is not a file"):
        HubEndpoint.for_connection_string(f"HostName=h;DeviceId=d1;SharedAccessKey={KEY}", ca_file=tmp_path / "no.pem")


def _fake_local_cloud(ws, address="127.0.5.1", port=8443):
    cloud = ws / "localcloud"
    (cloud / "tls").mkdir(parents=True)
    (cloud / "tls" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (cloud / "service.json").write_text(json.dumps({"hub_address": address, "hub_port": port}))
    (cloud / "credentials.json").write_text(json.dumps({
        "service_connection_string": f"HostName={address}:{port};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}",
        "studio_api_key": "ei_fake"}))


def test_fleet_passes_the_stand_ins_ca_and_rest_url_to_its_devices_only(tmp_path):
    device_cs = f"HostName=127.0.5.1;DeviceId=d1;SharedAccessKey={KEY}"
    assert hub_args(device_cs, tmp_path) == []  # no local cloud in this workspace: Azure
    _fake_local_cloud(tmp_path)
    assert hub_args(device_cs, tmp_path) == [
        "--ca-file", str(tmp_path / "localcloud" / "tls" / "ca.pem"), "--rest-url", "https://127.0.5.1:8443"]
    assert hub_args(f"HostName=lab.azure-devices.net;DeviceId=d1;SharedAccessKey={KEY}", tmp_path) == []
