"""The edge agent over IoT Hub's device protocol: `$edgeAgent` with `azure-iot-device`, against the stand-in.

A real agent process connects as the device's `$edgeAgent` module over MQTT/TLS, takes its
deployment from that module twin's desired properties (pushed, not polled), runs real module
processes (start.sh), reports in Azure edgeAgent's schema, answers edgeAgent's direct methods
called through the service REST API, and gives each module its own identity in the IoT Edge
simulator environment. Every process a test starts is stopped by pid.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.importorskip("azure.iot.device")

import waiting

from helpers.config import parse_connection_string  # noqa: E402
from helpers.endpoints import (
    local_hub,  # noqa: E402
    read_service,  # noqa: E402
)
from helpers.errors import NotFound  # noqa: E402
from helpers.localcloud.common import tls  # noqa: E402
from helpers.protocol.manifest import build_manifest, collector_module, reveal_secrets  # noqa: E402
from helpers.protocol.sas import generate_sas_token  # noqa: E402

wait_for = functools.partial(waiting.wait_for, timeout=30.0)

pytestmark = pytest.mark.timeout(180)

IMAGE = "local/edgeloop-device:process"


class Service:
    """Service-side REST calls to the stand-in's HTTPS IoT Hub API (what the service SDK sends)."""

    def __init__(self, workspace: Path):
        info = read_service(workspace) or {}
        creds = json.loads((workspace / "localcloud" / "credentials.json").read_text())
        parts = parse_connection_string(creds["service_connection_string"])
        self.url = info.get("hub_url") or info["url"]
        self.host, self.key = parts["HostName"], parts["SharedAccessKey"]
        self.verify = str(tls.ca_file(workspace))

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60) -> requests.Response:
        token = generate_sas_token(self.host, self.key, "iothubowner").get_secret_value()
        return requests.request(method, f"{self.url}{path}?api-version=2021-04-12", json=body, timeout=timeout,
                                headers={"Authorization": token}, verify=self.verify)

    def module_twin(self, device_id: str, module_id: str) -> dict[str, Any]:
        resp = self.call("GET", f"/twins/{device_id}/modules/{module_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def reported(self, device_id: str) -> dict[str, Any]:
        return self.module_twin(device_id, "$edgeAgent")["properties"]["reported"]

    def method(self, device_id: str, module_id: str, name: str, payload: Any = None) -> dict[str, Any]:
        resp = self.call("POST", f"/twins/{device_id}/modules/{module_id}/methods",
                         {"methodName": name, "payload": payload, "responseTimeoutInSeconds": 20})
        assert resp.status_code == 200, resp.text
        return resp.json()


def device_cs(cloud, device_id: str) -> str:
    key = parse_connection_string(cloud.hub.connection_string(device_id))["SharedAccessKey"]
    return f"HostName={tls.hub_address(cloud.workspace)};DeviceId={device_id};SharedAccessKey={key}"


def start_agent(cloud, device_id: str, workdir: Path) -> subprocess.Popen:
    env = dict(os.environ, IOTEDGE_CONNECTION_STRING=device_cs(cloud, device_id))
    env.pop("EI_API_KEY", None)
    hub = local_hub(cloud.workspace)
    cmd = [sys.executable, "-m", "helpers.device.agent", "--workdir", str(workdir), "--ca-file", str(hub.ca_file),
           "--rest-url", hub.rest_url, "--backoff-max", "4", "--stop-timeout", "5", "--hub-backoff-max", "1"]
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "agent.log", "ab")
    try:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def stop_agent(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            return proc.wait(10)
    return proc.returncode


def deploy(cloud, device_id: str, modules: list[dict[str, Any]]) -> None:
    manifest = build_manifest(modules, secrets={"EI_API_KEY": cloud.studio.api_key})
    cloud.hub.set_modules(device_id, reveal_secrets(manifest))


def collector(cloud, **kw: Any) -> dict[str, Any]:
    kw.setdefault("count", 1000)
    kw.setdefault("rate_hz", 2)
    return collector_module(IMAGE, cloud.url, name="collector", camera=None, **kw)


def applied(svc: Service, device_id: str, module: str | None = None, status: str = "running") -> Callable[[], Any]:
    def check() -> Any:
        twin = svc.module_twin(device_id, "$edgeAgent")
        rep, want = twin["properties"]["reported"], twin["properties"]["desired"]["$version"]
        if rep.get("lastDesiredVersion") != want or (rep.get("lastDesiredStatus") or {}).get("code") != 200:
            return None
        if module is not None and ((rep.get("modules") or {}).get(module) or {}).get("runtimeStatus") != status:
            return None
        return rep
    return check


def test_agent_runs_its_module_twin_deployment_and_answers_methods(cloud, unique_name, tmp_path):
    dev = unique_name("ag")
    cloud.hub.create_edge_device(dev)
    svc = Service(cloud.workspace)
    workdir = cloud.workspace / "devices" / dev
    proc = start_agent(cloud, dev, workdir)
    try:
        rep = wait_for(lambda: (lambda r: r if (r.get("lastDesiredStatus") or {}).get("code") == 417 else None)(
            svc.reported(dev)), what="417 (no deployment) reported")
        assert rep["schemaVersion"] == "1.1" and rep["systemModules"]["edgeAgent"]["runtimeStatus"] == "running"

        # a deployment arrives as $edgeAgent desired properties (pushed) and runs
        deploy(cloud, dev, [collector(cloud, label="apple")])
        rep = wait_for(applied(svc, dev, "collector"), what="collector running")
        m = rep["modules"]["collector"]
        for key in ("exitCode", "restartCount", "lastStartTimeUtc", "lastExitTimeUtc", "statusDescription",
                    "version", "restartPolicy", "status"):
            assert key in m, key
        assert m["settings"]["image"] == IMAGE and m["hostPort"]
        # the module runs with its own identity, created by the agent as IoT Edge does
        ident = svc.call("GET", f"/devices/{dev}/modules/collector").json()
        assert ident["managedBy"] == "IotEdge"
        # ...and reports its counts itself, with IoTHubModuleClient.create_from_edge_environment()
        counts = wait_for(lambda: (lambda r: r if r.get("captured", 0) >= 1 else None)(
            svc.module_twin(dev, "collector")["properties"]["reported"]), what="the collector's own report")
        assert counts["mode"] == "collect" and counts["label"] == "apple"

        # edgeAgent's direct methods through the service API (the Hub's SDK call, and the REST call it makes)
        assert cloud.hub.invoke_method(dev, "ping", module_id="$edgeAgent") == (200, None)
        assert svc.method(dev, "$edgeAgent", "ping") == {"status": 200, "payload": None}
        wait_for(lambda: (workdir / "modules" / "collector" / "module.log").stat().st_size > 0, what="module log")
        logs = svc.method(dev, "$edgeAgent", "GetModuleLogs",
                          {"schemaVersion": "1.0", "items": [{"id": "coll.*", "filter": {"tail": 5}}],
                           "encoding": "none", "contentType": "text"})
        assert logs["status"] == 200 and logs["payload"][0]["id"] == "collector"
        assert 0 < len(logs["payload"][0]["payload"].splitlines()) <= 5
        before = rep["modules"]["collector"]["lastStartTimeUtc"]
        restarted = svc.method(dev, "$edgeAgent", "RestartModule", {"schemaVersion": "1.0", "id": "collector"})
        assert restarted["status"] == 200
        rep = wait_for(lambda: (lambda r: r if r["modules"]["collector"]["restartCount"] >= 1 and
                                r["modules"]["collector"]["lastStartTimeUtc"] != before else None)(svc.reported(dev)),
                       what="restart reported")
        assert rep["modules"]["collector"]["runtimeStatus"] == "running"
        assert svc.method(dev, "$edgeAgent", "RestartModule", {"id": "nope"})["status"] == 400
        # the same through the Hub, as notebook 05 does
        assert "collector" in cloud.hub.module_logs(dev, "collector", tail=50)
        restarted_again = cloud.hub.restart_module(dev, "collector", timeout=60)
        assert restarted_again.runtime_status == "running" and restarted_again.restart_count >= 2

        # an invalid deployment is refused (400) and what runs keeps running
        resp = svc.call("PATCH", f"/twins/{dev}/modules/$edgeAgent",
                        {"properties": {"desired": {"runtime": {"type": "rkt"}}}})
        assert resp.status_code == 200, resp.text
        rep = wait_for(lambda: (lambda r: r if (r.get("lastDesiredStatus") or {}).get("code") == 400 else None)(
            svc.reported(dev)), what="400 reported")
        assert "runtime.type" in rep["lastDesiredStatus"]["description"]
        assert rep["modules"]["collector"]["runtimeStatus"] == "running"

        # removing the module stops it; the twin forgets it
        deploy(cloud, dev, [])
        rep = wait_for(lambda: (lambda r: r if r is not None and not r.get("modules") else None)(applied(svc, dev)()),
                       what="module removed")
        with pytest.raises(NotFound):  # a device that is not online: 404 DeviceNotOnline
            cloud.hub.invoke_method(dev, "ping", module_id="runner")
    finally:
        code = stop_agent(proc)
    assert code == 0, (workdir / "agent.log").read_text()[-3000:]
    assert "SharedAccessKey=" not in (workdir / "agent.log").read_text()
