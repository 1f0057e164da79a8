"""The process runtime: module environment, log file, process-group stop, stale cleanup."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from helpers.device.runtime import (
    ModuleLaunch,
    ProcessRuntime,
    RuntimeUnavailable,
    find_start_script,
    pid_alive,
    stop_handles,
)

SCRIPT = """#!/bin/sh
env | sort > "$MODULE_WORKDIR/env.txt"
sleep 60 &
echo "child $!" > "$MODULE_WORKDIR/child.txt"
echo "module says hello"
trap 'echo got TERM; kill $!; exit 0' TERM
wait
"""


def launch(tmp_path: Path, name: str = "m") -> ModuleLaunch:
    return ModuleLaunch(name=name, image="img:1", env={"MODE": "collect", "EI_API_KEY": "ei_from_manifest"},
                        workdir=tmp_path / "modules" / name, device_id="dev-1", scene_file=tmp_path / "scene.json",
                        host_port=None, generation="g1")


def wait_file(p: Path) -> str:
    for _ in range(100):
        if p.exists() and p.read_text().strip():
            return p.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{p} never written")


def test_runs_with_the_module_env_and_stops_the_group(tmp_path, monkeypatch):
    monkeypatch.setenv("IOTEDGE_CONNECTION_STRING", "HostName=h;DeviceId=d;SharedAccessKey=hostsecret")
    script = tmp_path / "start.sh"
    script.write_text(SCRIPT)
    rt = ProcessRuntime(script)
    h = rt.start(launch(tmp_path))
    env = wait_file(tmp_path / "modules" / "m" / "env.txt")
    child = int(wait_file(tmp_path / "modules" / "m" / "child.txt").split()[1])
    assert "EI_API_KEY=ei_from_manifest" in env and "IOTEDGE_DEVICEID=dev-1" in env and "IOTEDGE_MODULEID=m" in env
    assert f"PORT={h.host_port}" in env and f"EDGELOOP_SCENE_FILE={tmp_path / 'scene.json'}" in env
    assert "hostsecret" not in env  # the agent's own credential never reaches a module
    assert h.poll() is None and pid_alive(child)
    assert h.record()["pid"] == h.pid and h.record()["start_ticks"]
    codes = stop_handles([h], timeout=5)
    assert codes == {"m": 0}
    for _ in range(50):
        if not pid_alive(child):
            break
        time.sleep(0.05)
    assert not pid_alive(child)
    log = (tmp_path / "modules" / "m" / "module.log").read_text()
    assert "module says hello" in log and "start m image=img:1" in log


def test_kill_stale_only_kills_the_recorded_process(tmp_path):
    script = tmp_path / "start.sh"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    h = ProcessRuntime(script).start(launch(tmp_path))
    record = h.record()
    assert ProcessRuntime.kill_stale({**record, "start_ticks": record["start_ticks"] + 1}) is False  # pid reused
    assert h.poll() is None
    assert ProcessRuntime.kill_stale(record) is True
    assert h.wait(5) is not None and not ProcessRuntime.kill_stale(record)


def test_missing_start_script_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGELOOP_START_SH", str(tmp_path / "nope.sh"))
    with pytest.raises(RuntimeUnavailable, match="EDGELOOP_START_SH"):
        find_start_script()
    monkeypatch.delenv("EDGELOOP_START_SH")
    assert find_start_script().name == "start.sh" and os.access(find_start_script(), os.X_OK)
