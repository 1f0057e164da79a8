"""The local cloud process: CLI, idempotent start, clean stop, durability across kill -9, limits."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from helpers import localcloud
from helpers.errors import ServiceUnavailable
from helpers.geometry import BBox
from helpers.hub.local import LocalHub
from helpers.protocol.manifest import build_manifest, module_spec
from helpers.studio.local import LocalStudio

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "helpers.localcloud", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout or proc.stderr)


def device_client(hub, device_id: str):
    """The device's SDK client (MQTT on port 8883 of the hub's address, the workspace CA trusted), connected."""
    from azure.iot.device import IoTHubDeviceClient

    client = IoTHubDeviceClient.create_from_connection_string(
        hub.connection_string(device_id).get_secret_value(), server_verification_cert=open(hub.ca_file).read(),
        connection_retry=False)
    client.connect()
    return client


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_cli_start_status_stop(tmp_path):
    ws = tmp_path / "ws"
    rc, first = cli("start", "--workspace", str(ws))
    try:
        assert rc == 0 and first["started"] is True and first["url"].startswith("http://127.0.0.1:")
        rc, second = cli("start", "--workspace", str(ws))
        assert rc == 0 and second["started"] is False and second["pid"] == first["pid"]
        rc, st = cli("status", "--workspace", str(ws))
        assert rc == 0 and st["running"] and st["pid"] == first["pid"]
        d = ws / "localcloud"
        assert stat.S_IMODE((d / "credentials.json").stat().st_mode) == 0o600
        creds = json.loads((d / "credentials.json").read_text())
        # the service connection string names the hub's HTTPS endpoint on the workspace's own address
        assert creds["service_connection_string"].startswith(
            f"HostName={first['hub_address']}:{first['hub_port']};SharedAccessKeyName=iothubowner;SharedAccessKey=")
        assert first["hub_url"] == f"https://{first['hub_address']}:{first['hub_port']}" and first["hub_address"] != "127.0.0.1"
        rc, hub_creds = cli("credentials", "--workspace", str(ws))
        assert rc == 0 and hub_creds["service_connection_string"] == creds["service_connection_string"]
        assert hub_creds["ca_file"] == str(d / "tls" / "ca.pem") and stat.S_IMODE(os.stat(hub_creds["ca_file"]).st_mode) == 0o600
        assert len(creds["studio_api_key"]) == 35 and creds["studio_api_key"].startswith("ei_")
        service = json.loads((d / "service.json").read_text())
        assert {"url", "pid", "host", "port", "started_at"} <= set(service)
        mode = __import__("sqlite3").connect(d / "state.db").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        rc, stopped = cli("stop", "--workspace", str(ws))
    assert rc == 0 and stopped["stopped"] and stopped["clean"] and not stopped["running"]
    assert not alive(first["pid"])
    assert json.loads((ws / "localcloud" / "service.json").read_text())["running"] is False
    rc, st = cli("status", "--workspace", str(ws))
    assert rc == 3 and st["running"] is False
    rc, again = cli("stop", "--workspace", str(ws))
    assert rc == 0 and again["stopped"] is False


def test_concurrent_ensure_running_starts_one(tmp_path):
    ws = tmp_path / "ws"
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(localcloud.ensure_running(ws))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert len({r["pid"] for r in results}) == 1 and sum(r["started"] for r in results) == 1
    finally:
        localcloud.stop(ws)


def test_kill9_keeps_acknowledged_writes_and_port(fresh_cloud, make_jpeg):
    hub, studio = fresh_cloud.hub, fresh_cloud.studio
    hub.create_edge_device("cam-1", tags={"site": "lab"})
    hub.set_modules("cam-1", build_manifest([module_spec("collector", "edgeloop-device:1")]))
    hub.create_deployment("collect", build_manifest([module_spec("collector", "edgeloop-device:2")]), "tags.site='lab'")
    device = device_client(hub, "cam-1")
    try:
        device.patch_twin_reported_properties({"edgeAgent": {"lastDesiredVersion": "x"}})  # returns once acknowledged
    finally:
        device.shutdown()
    res = studio.upload([(f"k{i}.jpg", make_jpeg(700 + i)) for i in range(5)], boxes={"k0.jpg": [BBox("apple", 1, 1, 5, 5)]})
    snap = studio.snapshot()
    port = fresh_cloud.info["port"]

    os.kill(fresh_cloud.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while alive(fresh_cloud.pid) and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(ServiceUnavailable, match="localcloud start"):
        LocalHub(fresh_cloud.workspace, url=fresh_cloud.url, timeout=2).list_devices()
    assert localcloud.status(fresh_cloud.workspace)["running"] is False

    info = localcloud.ensure_running(fresh_cloud.workspace)
    assert info["started"] and info["port"] == port and info["pid"] != fresh_cloud.pid
    fresh_cloud.refresh()
    hub, studio = fresh_cloud.hub, fresh_cloud.studio
    assert hub.get_twin("cam-1").tags == {"site": "lab"}
    assert hub.get_twin("cam-1").reported == {"edgeAgent": {"lastDesiredVersion": "x"}}
    assert [d.name for d in hub.list_deployments()] == ["collect"]
    device = device_client(hub, "cam-1")  # the old connection string still works
    try:
        assert device.get_twin()["reported"]["edgeAgent"] == {"lastDesiredVersion": "x"}
    finally:
        device.shutdown()
    assert sorted(s.id for s in studio.samples()) == sorted(r.sample_id for r in res)
    assert studio.get_image(res[3].sample_id) == make_jpeg(703)
    assert studio.get_snapshot(snap.id).items == snap.items


def test_restart_on_new_port_device_follows_service_json(fresh_cloud):
    hub = fresh_cloud.hub
    hub.create_edge_device("cam-9")
    cs = hub.connection_string("cam-9")
    old_port = fresh_cloud.info["port"]
    localcloud.stop(fresh_cloud.workspace)
    import socket

    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", old_port))  # another program listens there now: the service moves
    blocker.listen()
    try:
        info = localcloud.ensure_running(fresh_cloud.workspace)
        assert info["port"] != old_port
        creds = json.loads((fresh_cloud.workspace / "localcloud" / "credentials.json").read_text())
        assert f"HostName={info['hub_address']}:{info['hub_port']};" in creds["service_connection_string"]
        # the device's connection string names the hub's address, whose MQTT port (8883) does not move
        hub = LocalHub(fresh_cloud.workspace)
        assert hub.connection_string("cam-9").get_secret_value() == cs.get_secret_value()
        device = device_client(hub, "cam-9")
        try:
            device.patch_twin_reported_properties({"alive": True})
        finally:
            device.shutdown()
        assert hub.get_twin("cam-9").reported == {"alive": True}
    finally:
        blocker.close()


def test_body_limit_413(tmp_path, make_jpeg):
    ws = tmp_path / "ws"
    localcloud.ensure_running(ws, max_body_mb=0.2)
    try:
        studio = LocalStudio(ws)
        big = os.urandom(150_000)
        r = requests.post(f"{studio.url}/api/training/files", headers={"x-api-key": studio.api_key.get_secret_value()},
                          files=[("data", (f"b{i}.jpg", big, "image/jpeg")) for i in range(2)], timeout=10)
        assert r.status_code == 413 and r.json()["field"] == "body"
        assert studio.upload([("small.jpg", make_jpeg(1))])[0].sample_id is not None
        assert len(studio.samples()) == 1
    finally:
        localcloud.stop(ws)


def test_logs_hold_no_secrets_and_stop_leaves_no_process(fresh_cloud, make_jpeg):
    hub = fresh_cloud.hub
    hub.create_edge_device("cam-log")
    cs = hub.connection_string("cam-log").get_secret_value()
    fresh_cloud.studio.upload([("l.jpg", make_jpeg(5))])
    from helpers.config import parse_connection_string
    from helpers.protocol.sas import generate_sas_token

    parts = parse_connection_string(hub.connection_string_service)
    token = generate_sas_token(parts["HostName"], parts["SharedAccessKey"], "iothubowner").get_secret_value()
    requests.get(f"{fresh_cloud.url}/twins/cam-log?sig=SECRETSIGNATUREVALUE123", headers={"Authorization": token}, timeout=5)
    pid = fresh_cloud.pid
    stopped = localcloud.stop(fresh_cloud.workspace)
    assert stopped["clean"] and not alive(pid)
    log = (fresh_cloud.workspace / "localcloud" / "service.log").read_text()
    creds = json.loads((fresh_cloud.workspace / "localcloud" / "credentials.json").read_text())
    assert "GET /twins/cam-log 200" in log and "stopped cleanly" in log
    for secret in (cs.split("SharedAccessKey=")[1], creds["studio_api_key"], "SECRETSIGNATUREVALUE123",
                   creds["service_connection_string"].split("SharedAccessKey=")[1]):
        assert secret not in log


def test_orphan_files_swept_on_start(fresh_cloud, make_jpeg):
    files = fresh_cloud.workspace / "localcloud" / "files"
    kept = fresh_cloud.studio.upload([("keep.jpg", make_jpeg(1))])[0]
    orphan = files / "samples" / "ab" / ("ab" + "0" * 62 + ".jpg")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left by a crash")
    (files / "tmp").mkdir(exist_ok=True)
    (files / "tmp" / "x.part").write_bytes(b"partial")
    localcloud.stop(fresh_cloud.workspace)
    localcloud.ensure_running(fresh_cloud.workspace)
    fresh_cloud.refresh()
    assert not orphan.exists() and not (files / "tmp" / "x.part").exists()
    assert fresh_cloud.studio.get_image(kept.sample_id) == make_jpeg(1)


def test_unreachable_service_is_service_unavailable(tmp_path):
    with pytest.raises(Exception, match="localcloud start"):
        LocalHub(tmp_path / "never")
