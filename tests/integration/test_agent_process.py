"""The edge agent against the real local cloud, running real module processes (start.sh).

Each test starts its agents with `helpers.device.fleet` and stops them (by pid) at the end.
"""
from __future__ import annotations

import functools
import json
import os
import sqlite3
import time
from typing import Any

import pytest
import waiting

from helpers.device import fleet
from helpers.device.runtime import pid_alive
from helpers.endpoints import local_hub
from helpers.protocol.manifest import build_manifest, collector_module, module_spec, reveal_secrets

wait_for = functools.partial(waiting.wait_for, timeout=20.0, interval=0.3)

pytestmark = pytest.mark.timeout(120)

IMAGE = "local/edgeloop-device:process"
FAST = ["--backoff-max", "4", "--stop-timeout", "5", "--hub-backoff-max", "1", "--hub-timeout", "2"]


def deploy(cloud, device_id: str, modules: list[dict[str, Any]]) -> None:
    manifest = build_manifest(modules, secrets={"EI_API_KEY": cloud.studio.api_key})
    cloud.hub.set_modules(device_id, reveal_secrets(manifest))


def collector(cloud, name: str = "collector", **kw: Any) -> dict[str, Any]:
    kw.setdefault("count", 1000)
    kw.setdefault("rate_hz", 2)
    return collector_module(IMAGE, cloud.url, name=name, camera=None, **kw)


def crasher(cloud, name: str, policy: str) -> dict[str, Any]:
    """A module whose start.sh exits 2 at once (EI_API_KEY missing): a crashing container."""
    return module_spec(name, IMAGE, env={"MODE": "collect", "STUDIO_URL": cloud.url}, restart_policy=policy)


def modules_of(cloud, device_id: str) -> dict[str, Any]:
    return cloud.hub.device_status(device_id).modules


def agent_state(cloud, device_id: str) -> dict[str, Any]:
    return json.loads((cloud.workspace / "devices" / device_id / "agent.json").read_text())


@pytest.fixture()
def devices(cloud):
    """Start agents for the shared cloud; stopped at the end of the test."""
    started: list[str] = []

    def _start(*ids: str) -> list[fleet.SimDevice]:
        started.extend(ids)
        return fleet.start_devices(cloud.hub, list(ids), cloud.workspace, agent_args=FAST)

    yield _start
    fleet.stop_devices(cloud.workspace, started)


def test_converges_on_manifest_changes(cloud, devices, unique_name):
    dev = unique_name("agent")
    devices(dev)
    fleet.wait_online(cloud.hub, [dev], timeout=20)
    st = cloud.hub.device_status(dev)
    assert st.last_desired_status in (None, 417)

    # 1. a collector starts and reports its own telemetry through the agent
    deploy(cloud, dev, [collector(cloud, label="apple")])
    m = wait_for(lambda: (modules_of(cloud, dev).get("collector") or None)
                 if (modules_of(cloud, dev).get("collector") and modules_of(cloud, dev)["collector"].telemetry.get("captured"))
                 else None, what="collector telemetry")
    assert m.runtime_status == "running" and m.image == IMAGE and m.host_port
    assert m.telemetry["label"] == "apple" and m.telemetry["mode"] == "collect"
    status = cloud.hub.device_status(dev)
    assert status.last_desired_status == 200 and status.reported_version == status.desired_version
    first_pid = agent_state(cloud, dev)["modules"]["collector"]["pid"]

    # 2. new env: the module is replaced (new process, new start time, label relayed)
    deploy(cloud, dev, [collector(cloud, label="banana")])
    m2 = wait_for(lambda: (lambda m: m if m and m.telemetry.get("label") == "banana" else None)(
        modules_of(cloud, dev).get("collector")), what="collector replaced")
    assert m2.start_time != m.start_time and m2.restart_count == 0
    assert not pid_alive(first_pid)
    second_pid = agent_state(cloud, dev)["modules"]["collector"]["pid"]

    # 3. swap: another module in, the collector out (removed from the twin, its process gone)
    deploy(cloud, dev, [collector(cloud, name="sampler", label="apple")])
    mods = wait_for(lambda: (lambda ms: ms if "collector" not in ms and ms.get("sampler")
                             and ms["sampler"].runtime_status == "running" else None)(modules_of(cloud, dev)),
                    what="module swap")
    assert set(mods) == {"sampler"} and not pid_alive(second_pid)

    # 4. status stopped stops it but keeps it listed; running again starts it
    deploy(cloud, dev, [module_spec("sampler", IMAGE, env=collector(cloud, label="apple")["env"], status="stopped")
                        | {"env": collector(cloud, name="sampler", label="apple")["env"]}])
    wait_for(lambda: (modules_of(cloud, dev).get("sampler") or None) and
             modules_of(cloud, dev)["sampler"].runtime_status == "stopped", what="sampler stopped")
    assert "sampler" not in agent_state(cloud, dev)["modules"]

    # 5. an empty deployment removes everything
    deploy(cloud, dev, [])
    wait_for(lambda: cloud.hub.device_status(dev).modules == {} and
             cloud.hub.device_status(dev).reported_version == cloud.hub.device_status(dev).desired_version,
             what="modules removed")
    assert agent_state(cloud, dev)["modules"] == {}


def test_restart_policies(cloud, devices, unique_name):
    dev = unique_name("agent")
    devices(dev)
    deploy(cloud, dev, [crasher(cloud, "always", "always"), crasher(cloud, "never", "never"),
                        crasher(cloud, "onfail", "on-failure")])

    def settled():
        ms = modules_of(cloud, dev)
        if set(ms) != {"always", "never", "onfail"}:
            return None
        if ms["always"].restart_count >= 2 and ms["onfail"].restart_count >= 2 and ms["never"].runtime_status == "failed":
            return ms
        return None

    ms = wait_for(settled, timeout=30, what="restarts with backoff")
    assert ms["never"].exit_code == 2 and ms["never"].restart_count == 0
    assert ms["always"].exit_code == 2 and ms["always"].runtime_status in ("backoff", "running")
    # the backoff doubles (1 s, 2 s, 4 s...): only a few restarts fit in the time taken
    assert ms["always"].restart_count <= 5
    log = (cloud.workspace / "devices" / dev / "modules" / "always" / "module.log").read_text()
    assert "EI_API_KEY" in log  # the module's own stderr lands in its log
    assert cloud.hub.device_status(dev).last_desired_status == 200


def test_invalid_manifest_reports_400_and_keeps_modules(cloud, devices, unique_name):
    dev = unique_name("agent")
    devices(dev)
    deploy(cloud, dev, [collector(cloud, label="apple")])
    wait_for(lambda: (modules_of(cloud, dev).get("collector") or None) and
             modules_of(cloud, dev)["collector"].runtime_status == "running", what="collector running")
    pid = agent_state(cloud, dev)["modules"]["collector"]["pid"]
    # The hub validates what it is given, so write a bad manifest straight into its store: the
    # agent must still refuse it (as edgeAgent does with a manifest it cannot apply).
    manifest = reveal_secrets(build_manifest([collector(cloud, label="apple")], secrets={"EI_API_KEY": "k"}))
    manifest["$edgeAgent"]["properties.desired"]["modules"]["collector"]["restartPolicy"] = "sometimes"
    db = sqlite3.connect(cloud.workspace / "localcloud" / "state.db", timeout=10)
    with db:
        # the deployment lives in the $edgeAgent module twin's desired properties, as on IoT Hub
        db.execute("UPDATE modules SET desired=?, desired_version=desired_version+1 WHERE device_id=? AND module_id='$edgeAgent'",
                   (json.dumps(manifest["$edgeAgent"]["properties.desired"]), dev))
    db.close()
    st = wait_for(lambda: (lambda s: s if s.last_desired_status == 400 else None)(cloud.hub.device_status(dev)),
                  what="400 reported")
    assert "restartPolicy 'sometimes'" in st.last_desired_description
    assert pid_alive(pid) and st.modules["collector"].runtime_status == "running"


def test_survives_a_hub_restart(fresh_cloud, unique_name):
    from helpers.localcloud import ensure_running, stop

    cloud = fresh_cloud
    dev = unique_name("agent")
    fleet.start_devices(cloud.hub, [dev], cloud.workspace, agent_args=FAST)
    try:
        deploy(cloud, dev, [collector(cloud, label="apple", rate_hz=4)])
        wait_for(lambda: (modules_of(cloud, dev).get("collector") or None) and
                 modules_of(cloud, dev)["collector"].runtime_status == "running", what="collector running")
        pid = agent_state(cloud, dev)["modules"]["collector"]["pid"]
        stop(cloud.workspace)
        time.sleep(3)
        assert pid_alive(pid), "the module must keep running while the hub is away"
        telemetry = json.loads((cloud.workspace / "devices" / dev / "modules" / "collector" / "reported.json").read_text())
        assert telemetry["pending"] >= 1  # frames wait in the spool meanwhile
        before = time.time()
        ensure_running(cloud.workspace)
        cloud.refresh()

        seen: list[Any] = []

        def reported_again():
            st = cloud.hub.device_status(dev)
            m = st.modules.get("collector")
            seen[:] = [st.connected, st.last_seen, m and m.runtime_status, m and m.telemetry]
            return st if st.connected and m and m.telemetry.get("last_error") is None and m.runtime_status == "running" else None

        try:
            st = wait_for(reported_again, timeout=30, what="agent reporting after the hub restart")
        except AssertionError:
            raise AssertionError(f"last status seen: {seen}") from None
        assert st.last_seen and st.last_desired_status == 200
        assert pid_alive(pid) and agent_state(cloud, dev)["modules"]["collector"]["pid"] == pid
        assert time.time() - before < 30
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
    assert not pid_alive(pid)


def test_sigterm_stops_modules_and_exits_0(cloud, unique_name, tmp_path):
    import signal
    import subprocess
    import sys

    dev = unique_name("agent")
    cloud.hub.create_edge_device(dev)
    workdir = tmp_path / dev
    # the connection string names the hub's address (MQTT); --ca-file: trust the stand-in's CA;
    # --rest-url: the stand-in's REST port (Azure's is https://HostName)
    env = {**os.environ, "IOTEDGE_CONNECTION_STRING": cloud.hub.connection_string(dev).get_secret_value()}
    hub = local_hub(cloud.workspace)
    proc = subprocess.Popen([sys.executable, "-m", "helpers.device.agent", "--workdir", str(workdir),
                             "--ca-file", str(hub.ca_file), "--rest-url", hub.rest_url, *FAST],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deploy(cloud, dev, [collector(cloud, label="apple")])
        # running, and past its start-up: it reported its own progress (a process killed while the
        # interpreter still starts exits -15 whatever it does, as a container does on `docker stop`)
        wait_for(lambda: (modules_of(cloud, dev).get("collector") or None) and
                 modules_of(cloud, dev)["collector"].runtime_status == "running" and
                 modules_of(cloud, dev)["collector"].telemetry.get("captured"), what="collector running")
        pid = json.loads((workdir / "agent.json").read_text())["modules"]["collector"]["pid"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode == 0
    assert not pid_alive(pid)
    m = modules_of(cloud, dev)["collector"]
    assert m.runtime_status == "stopped" and m.exit_code == 0  # the collector's clean SIGTERM exit
    text = out.decode()
    assert "stopped" in text and "SharedAccessKey=" not in text.replace("SharedAccessKey=********", "")


def test_on_unhealthy_restarts_a_runner_stuck_unhealthy(cloud, unique_name):
    """A runner that cannot get its model stays alive but answers 503: on-unhealthy restarts it."""
    dev = unique_name("agent")
    fleet.start_devices(cloud.hub, [dev], cloud.workspace,
                        agent_args=[*FAST, "--health-grace", "1", "--health-interval", "0.4"])
    try:
        env = {"MODE": "infer", "STUDIO_URL": "http://127.0.0.1:9", "MODEL_VERSION": "1"}  # no studio there
        deploy(cloud, dev, [module_spec("runner", IMAGE, env=env, restart_policy="on-unhealthy",
                                        secret_env=["EI_API_KEY"])])
        m = wait_for(lambda: (lambda m: m if m and m.restart_count >= 1 else None)(modules_of(cloud, dev).get("runner")),
                     timeout=30, what="unhealthy runner restarted")
        assert m.runtime_status in ("backoff", "running")
        log = (cloud.workspace / "devices" / dev / "agent.log").read_text()
        assert "is unhealthy" in log
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
