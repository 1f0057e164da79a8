"""Fault drills 3, 4 and 6: the edge agent and its modules (real processes) when things go wrong.

3. `kill -9` of an edge agent mid-rollout (its new modules half started): the agent started again
   converges on the deployment with exactly one process per module, counted in /proc by the
   marker each module process carries (`IOTEDGE_DEVICEID`, `IOTEDGE_MODULEID` in its environment).
4. A module that crashes on start: the agent restarts it with a backoff and reports it as
   edgeAgent does (`runtimeStatus: backoff`, `exitCode`, `restartCount`, `lastExitTimeUtc`);
   a rollout of it fails and its automatic rollback brings the last good module back.
5. (tests/integration/test_drill_models.py)
6. The hub down while a device runs: the runner keeps serving its HTTP API; its reported
   properties and device-to-cloud messages made meanwhile reach the hub, in order, when it returns
   (the `azure-iot-device` SDK reconnecting).

Each drill prints its counts (`pytest -s`).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import waiting
from test_agent_process import FAST, IMAGE, collector, crasher, modules_of
from test_gate_models import models_cache, tiny_models

from helpers.deploy import LastKnownGood, expect_from_manifest, rollout, runner_manifest, wait_for_rollout
from helpers.device import fleet
from helpers.device.runtime import pid_alive
from helpers.localcloud import ensure_running
from helpers.localcloud import stop as stop_cloud
from helpers.localcloud.mqtt.store import read_messages
from helpers.protocol.manifest import build_manifest, reveal_secrets

wait_for = functools.partial(waiting.wait_for, timeout=30.0, interval=0.3)

pytestmark = pytest.mark.timeout(150)


def module_processes(device_id: str) -> dict[str, list[tuple[int, dict[str, str]]]]:
    """Module name -> [(pid, environment)] of every live process that is a module of `device_id`."""
    out: dict[str, list[tuple[int, dict[str, str]]]] = {}
    marker = f"IOTEDGE_DEVICEID={device_id}".encode()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "environ").read_bytes()
            if marker not in raw.split(b"\0"):
                continue
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue  # gone meanwhile
        env = dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)
        if "IOTEDGE_MODULEID" in env:
            out.setdefault(env["IOTEDGE_MODULEID"], []).append((int(d.name), env))
    return out


def new_children(agent_pid: int, marker: str) -> dict[int, str]:
    """The agent's child processes whose environment holds `marker` (pid -> module name): cheaper
    than a scan of /proc, so the drill sees a new module within a millisecond of its start."""
    out: dict[int, str] = {}
    try:
        tasks = list(Path(f"/proc/{agent_pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for pid in children:
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker.encode() in env:
                name = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"IOTEDGE_MODULEID=")), "?")
                out[int(pid)] = name
    return out


def _manifest(cloud, label: str, names: tuple[str, ...]) -> dict[str, Any]:
    return reveal_secrets(build_manifest([collector(cloud, name=n, label=label, rate_hz=1) for n in names],
                                         secrets={"EI_API_KEY": cloud.studio.api_key}))


def test_drill3_kill9_agent_mid_rollout_no_second_copy(cloud, unique_name):
    dev = unique_name("drill3")
    names = ("cam-a", "cam-b", "cam-c")
    (device,) = fleet.start_devices(cloud.hub, [dev], cloud.workspace, agent_args=FAST)
    try:
        cloud.hub.set_modules(dev, _manifest(cloud, "apple", names))
        first = wait_for_rollout(cloud.hub, [dev], expect_from_manifest(_manifest(cloud, "apple", names)), timeout=60,
                                 poll_s=0.5, stable_s=1.0, health=False)
        assert first.ok, first.summary()
        # the next rollout replaces all three; the agent dies once the first new module process exists
        v2 = _manifest(cloud, "banana", names)
        cloud.hub.set_modules(dev, v2)
        deadline = time.monotonic() + 30
        new: dict[int, str] = {}
        fast = Path(f"/proc/{device.pid}/task/{device.pid}/children").exists()  # CONFIG_PROC_CHILDREN
        while time.monotonic() < deadline and not new:
            new = new_children(device.pid, "LABEL=banana") if fast else {
                pid: n for n, ps in module_processes(dev).items() for pid, e in ps if e.get("LABEL") == "banana"}
            if not new:
                time.sleep(0.002)
        assert new, "the agent never started the new modules"
        os.kill(device.pid, signal.SIGKILL)
        recorded_at_kill = {r["pid"] for r in json.loads((device.workdir / "agent.json").read_text())["modules"].values()}
        at_kill = {n: len(p) for n, p in module_processes(dev).items()}
        wait_for(lambda: not device.alive, what="agent gone")

        # started again (as a device reboot or a supervisor would), it converges on v2
        (device,) = fleet.start_devices(cloud.hub, [dev], cloud.workspace, agent_args=FAST)
        result = wait_for_rollout(cloud.hub, [dev], expect_from_manifest(v2), timeout=60, poll_s=0.5, stable_s=2.0,
                                  health=False)
        assert result.ok, result.summary()
        wait_for(lambda: all(modules_of(cloud, dev)[n].telemetry.get("label") == "banana" for n in names),
                 what="new modules reporting")
        procs = module_processes(dev)
        copies = {n: len(procs.get(n, [])) for n in names}
        labels = Counter(e.get("LABEL") for ps in procs.values() for _, e in ps)
        recorded = json.loads((device.workdir / "agent.json").read_text())["modules"]
        orphans = device.log_path.read_text(errors="replace").count("never recorded")
        counts = {"modules": len(names), "new_started_at_kill": len(new), "processes_at_kill": at_kill,
                  "new_unrecorded_at_kill": len(set(new) - recorded_at_kill), "unrecorded_stopped_on_restart": orphans,
                  "processes_after": copies, "labels_after": dict(labels),
                  "second_copies": sum(max(0, c - 1) for c in copies.values())}
        print("drill 3:", counts)
        assert copies == dict.fromkeys(names, 1), counts
        # every new module the killed agent had started but not recorded was found and stopped
        assert orphans >= counts["new_unrecorded_at_kill"], counts
        assert labels == Counter({"banana": len(names)}), counts
        assert {n: r["pid"] for n, r in recorded.items()} == {n: procs[n][0][0] for n in names}
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
    assert module_processes(dev) == {}


def _agent_module_report(cloud, dev: str, name: str) -> dict[str, Any]:
    """The module's entry in the `$edgeAgent` module twin's reported properties, as edgeAgent writes it."""
    return (cloud.hub.get_module_twin(dev, "$edgeAgent").reported.get("modules") or {}).get(name) or {}


def test_drill4_crashing_module_backs_off_and_rollout_rolls_back(cloud, unique_name, tmp_path):
    dev = unique_name("drill4")
    good = reveal_secrets(build_manifest([collector(cloud, label="apple", rate_hz=1)],
                                         secrets={"EI_API_KEY": cloud.studio.api_key}))
    # the same module name, crashing on start: start.sh exits 2 (EI_API_KEY missing)
    bad = reveal_secrets(build_manifest([crasher(cloud, "collector", "always")]))
    store = LastKnownGood(tmp_path / "ws")
    fleet.start_devices(cloud.hub, [dev], cloud.workspace, agent_args=FAST)
    try:
        # 1. deployed as is, it crash-loops: restarted after a growing backoff, reported as edgeAgent does
        cloud.hub.set_modules(dev, bad)
        seen: list[dict[str, Any]] = []

        def crash_looping():
            m = _agent_module_report(cloud, dev, "collector")
            if m and (not seen or m != seen[-1]):
                seen.append(m)
            return m if int(m.get("restartCount") or 0) >= 3 else None

        m = wait_for(crash_looping, timeout=45, what="three restarts in backoff")
        assert m["exitCode"] == 2 and m["lastExitTimeUtc"] > "0001" and m["restartPolicy"] == "always"
        assert "backoff" in {s.get("runtimeStatus") for s in seen}, seen
        restarts = sorted({s["lastRestartTimeUtc"] for s in seen if int(s.get("restartCount") or 0) >= 1})
        log = (cloud.workspace / "devices" / dev / "agent.log").read_text()
        delays = [float(x.split("restarting in ")[1].split(" s")[0]) for x in log.splitlines()
                  if "module collector exited with code 2" in x and "restarting in" in x]
        assert delays[:3] == sorted(delays[:3]) and len(set(delays[:3])) >= 2, delays  # the backoff grows

        # 2. the good module, rolled out: converges and becomes last-known-good
        first = rollout(cloud.hub, [dev], good, store=store, timeout=60, poll_s=0.5, stable_s=1.5, health=False)
        assert first.ok, first.summary()
        good_pid = json.loads((cloud.workspace / "devices" / dev / "agent.json").read_text())["modules"]["collector"]["pid"]

        # 3. the crashing module, rolled out: detected in backoff, rolled back to the good one
        polls: list[str] = []
        report = rollout(cloud.hub, [dev], bad, store=store, timeout=60, poll_s=0.5, stable_s=1.5, health=False,
                         on_poll=lambda checks: polls.append(checks[dev].reason))
        assert not report.ok and dev in report.rolled_back, report.summary()
        assert "backoff" in report.rolled_back[dev] or "failed" in report.rolled_back[dev], report.rolled_back
        assert report.rollback_result is not None and report.rollback_result.ok, report.summary()
        back = wait_for(lambda: (lambda ms: ms if ms.get("collector") and ms["collector"].runtime_status == "running"
                                 and ms["collector"].telemetry.get("label") == "apple" else None)(modules_of(cloud, dev)),
                        what="the good collector back")
        env = json.loads((cloud.workspace / "devices" / dev / "agent.json").read_text())["modules"]["collector"]
        assert not pid_alive(good_pid) and pid_alive(env["pid"])  # a new process of the good module
        counts = {"restarts_seen": int(m["restartCount"]), "exit_code": m["exitCode"], "backoff_s": delays[:4],
                  "reported_states": sorted({s.get("runtimeStatus") for s in seen}), "restart_times": len(restarts),
                  "rollout_polls": len(polls), "rolled_back_because": report.rolled_back[dev],
                  "after_rollback": back["collector"].runtime_status}
        print("drill 4:", counts)
    finally:
        fleet.stop_devices(cloud.workspace, [dev])


def test_drill6_hub_down_modules_serve_and_report_in_order_after(fresh_cloud, unique_name, request, tmp_path_factory):
    cloud = fresh_cloud
    model_dir = tiny_models(models_cache(request, tmp_path_factory), names=("bad",))["bad"]  # it loads and runs
    version = cloud.studio.register_model(model_dir / "model.onnx", json.loads((model_dir / "model.json").read_text())).version
    manifest = runner_manifest(version, IMAGE, cloud.studio, camera=None, host_port=None, telemetry_interval_s=1,
                               extra_env={"INFER_RATE_HZ": "4", "CAMERA_SIZE": "96x96"})
    dev = unique_name("drill6")
    fleet.start_devices(cloud.hub, [dev], cloud.workspace, agent_args=FAST)
    try:
        first = rollout(cloud.hub, [dev], manifest, timeout=90, poll_s=0.5, stable_s=1.5,
                        store=LastKnownGood(cloud.workspace))
        assert first.ok, first.summary()
        port = cloud.hub.device_status(dev).modules["runner"].host_port
        wait_for(lambda: read_messages(cloud.workspace, dev, "runner"), what="first telemetry message")

        stop_cloud(cloud.workspace)  # the hub (and the studio) away
        down_at = time.time()
        answers: Counter = Counter()
        while time.time() - down_at < 8:
            for path in ("/api/health", "/api/results"):
                answers[requests.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code] += 1
            time.sleep(0.4)
        local = json.loads((cloud.workspace / "devices" / dev / "modules" / "runner" / "reported.json").read_text())
        ensure_running(cloud.workspace)
        cloud.refresh()
        up_at = time.time()

        def caught_up():
            twin = cloud.hub.get_module_twin(dev, "runner").reported
            return twin if twin.get("updated_at", "") >= local["updated_at"] else None

        twin = wait_for(caught_up, timeout=45, what="the runner's reported properties after the outage")
        msgs = wait_for(lambda: (lambda ms: ms if ms and ms[-1]["json"]["updated_at"] >= local["updated_at"] else None)(
            read_messages(cloud.workspace, dev, "runner")), timeout=45, what="the messages made during the outage")
        made = [m["json"]["updated_at"] for m in msgs]
        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

        during = [t for t in made if iso(down_at) <= t <= iso(up_at)]
        frames = [m["json"]["frames"] for m in msgs]
        status = wait_for(lambda: (lambda s: s if s.connected else None)(cloud.hub.device_status(dev)), what="agent back")
        counts = {"http_answers_while_down": dict(answers), "messages": len(made), "made_while_down": len(during),
                  "in_order": made == sorted(made) and len(set(made)) == len(made), "frames_monotonic": frames == sorted(frames),
                  "twin_caught_up": twin["updated_at"] >= local["updated_at"], "agent_connected": status.connected}
        print("drill 6:", counts)
        assert set(answers) == {200}, answers
        assert counts["in_order"] and counts["frames_monotonic"], made
        assert len(during) >= 3, counts  # telemetry every second: the outage's messages arrive, none dropped
        assert status.modules["runner"].runtime_status == "running"
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
