"""The process runtime finds and stops module processes no `agent.json` records (drill 3's defect)."""
from __future__ import annotations

import time
from pathlib import Path

from helpers.device.runtime import ModuleLaunch, ProcessRuntime, pid_alive
from helpers.device.runtime.process import module_pids


def _launch(root: Path, name: str) -> ModuleLaunch:
    return ModuleLaunch(name=name, image="img:1", env={"MODE": "collect"}, workdir=root / "modules" / name,
                        device_id="dev-1", scene_file=root / "scene.json", host_port=None, generation="g1")


def test_kill_orphans_stops_only_this_agents_unrecorded_modules(tmp_path):
    script = tmp_path / "start.sh"
    script.write_text("#!/bin/sh\nsleep 60 &\nexec sleep 61\n")
    rt = ProcessRuntime(script)
    mine = [rt.start(_launch(tmp_path / "dev-1", n)) for n in ("a", "b")]
    other = rt.start(_launch(tmp_path / "dev-10", "a"))  # another device: a prefix of no concern
    try:
        found = module_pids(tmp_path / "dev-1" / "modules")
        assert {h.pid for h in mine} <= set(found) and other.pid not in found
        killed = ProcessRuntime.kill_orphans(tmp_path / "dev-1" / "modules")
        assert {h.pid for h in mine} <= set(killed)
        for h in mine:
            assert h.wait(5) is not None
        deadline = time.monotonic() + 5
        while module_pids(tmp_path / "dev-1" / "modules") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert module_pids(tmp_path / "dev-1" / "modules") == []  # the groups' children too
        assert other.poll() is None and pid_alive(other.pid)
        assert ProcessRuntime.kill_orphans(tmp_path / "nowhere" / "modules") == []
    finally:
        for h in [*mine, other]:
            h.kill()
            h.wait(5)
