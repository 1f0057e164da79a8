"""Simulated devices: agents as detached processes, found again by pid files, stopped cleanly."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from helpers.device import fleet
from helpers.device.runtime import pid_alive
from helpers.protocol.manifest import build_manifest, collector_module, reveal_secrets

pytestmark = pytest.mark.timeout(120)
FAST = ["--stop-timeout", "5"]


def module_pid(ws, dev, name="collector"):
    try:
        state = json.loads((ws / "devices" / dev / "agent.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return (state.get("modules", {}).get(name) or {}).get("pid")


def wait(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out: {fn()}")


def test_start_list_scene_recover_stop(cloud, unique_name):
    ws = cloud.workspace
    a, b = unique_name("fleet"), unique_name("fleet")
    try:
        devs = fleet.start_devices(cloud.hub, [a, b], ws, tags={"site": "lab"}, agent_args=FAST)
        assert [d.device_id for d in devs] == [a, b] and all(d.alive for d in devs)
        assert cloud.hub.get_twin(a).tags.get("site") == "lab"
        again = fleet.start_devices(cloud.hub, [a, b], ws, agent_args=FAST)  # idempotent
        assert [d.pid for d in again] == [d.pid for d in devs]
        listed = {d.device_id: d for d in fleet.list_devices(ws)}
        assert listed[a].pid == devs[0].pid and listed[a].alive and listed[a].workdir == ws / "devices" / a
        statuses = fleet.wait_online(cloud.hub, [a, b], timeout=20)
        assert all(s.connected for s in statuses.values())
        # the connection string travels in the environment, never on the command line
        cmdline = open(f"/proc/{devs[0].pid}/cmdline", "rb").read()
        assert b"SharedAccessKey" not in cmdline

        # the scene decides what the synthetic camera sees
        fleet.set_scene(ws, a, ["banana"], distractors=["orange"])
        manifest = build_manifest([collector_module("local/edgeloop-device:process", cloud.url, label="banana",
                                                    count=3, rate_hz=5, camera=None)],
                                  secrets={"EI_API_KEY": cloud.studio.api_key})
        cloud.hub.set_modules(a, reveal_secrets(manifest))
        samples = wait(lambda: (lambda s: s if len(s) == 3 else None)(cloud.studio.samples(device=a)), timeout=30)
        assert all(s.metadata["ground_truth"] and {g["label"] for g in s.metadata["ground_truth"]} == {"banana"}
                   for s in samples)

        # an agent killed -9 leaves its module; the next agent finds and replaces it
        old_module = wait(lambda: module_pid(ws, a))
        os.kill(devs[0].pid, signal.SIGKILL)
        wait(lambda: not pid_alive(devs[0].pid))
        assert pid_alive(old_module)
        restarted = fleet.start_devices(cloud.hub, [a], ws, agent_args=FAST)
        assert restarted[0].pid != devs[0].pid
        new_module = wait(lambda: (lambda p: p if p and p != old_module else None)(module_pid(ws, a)))
        assert not pid_alive(old_module) and pid_alive(new_module)
        assert len(cloud.studio.samples(device=a)) == 3  # the collection continued, no frame twice
    finally:
        stopped = fleet.stop_devices(ws, [a, b])
    assert set(stopped) == {a, b}
    assert not any(d.alive for d in fleet.list_devices(ws) if d.device_id in (a, b))
    assert not pid_alive(new_module)
    assert fleet.stop_devices(ws, [a, b]) == []  # stopping again is a no-op
    assert "SharedAccessKey=" not in (ws / "devices" / a / "agent.log").read_text().replace("SharedAccessKey=********", "")


def test_wait_online_names_the_missing(cloud, unique_name):
    dev = unique_name("never")
    cloud.hub.create_edge_device(dev)
    with pytest.raises(fleet.FleetError, match=dev):
        fleet.wait_online(cloud.hub, [dev], timeout=1)
    with pytest.raises(ValueError, match="folder name"):
        fleet.set_scene(cloud.workspace, "../x", ["apple"])


def test_docker_runtime_without_engine_fails_fast_with_the_reason(cloud, unique_name):
    from helpers.containers.engine import docker_engine_available

    ok, reason = docker_engine_available()
    if ok:
        pytest.skip(f"a Docker engine answers here ({reason}); the engine-absent path is not reachable")
    dev = unique_name("dock")
    try:
        with pytest.raises(fleet.FleetError, match="no Docker engine answers"):
            fleet.start_devices(cloud.hub, [dev], cloud.workspace, runtime="docker")
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
