"""`make lab` opens the notebooks on the walkthrough's own workspace (tools/lab_workspace.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "lab_workspace.py"


def run(root: Path, *args: str, env_ws: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_WORKSPACE"}
    settings = root / "empty.env"  # no developer's .env in the way
    settings.write_text("")
    env["EDGELOOP_SETTINGS_FILE"] = str(settings)
    if env_ws is not None:
        env["EDGELOOP_WORKSPACE"] = env_ws
    env["EDGELOOP_CACHE"] = str(root / "cache")  # no COCO weights fetched here
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60, check=check)


def touch_cloud(ws: Path) -> None:
    (ws / "localcloud").mkdir(parents=True, exist_ok=True)
    (ws / "localcloud" / "state.db").write_bytes(b"")


def test_default_is_a_fresh_lab_workspace_even_after_make_demo(tmp_path):
    touch_cloud(tmp_path / "workspace" / "demo")  # make demo ran
    res = run(tmp_path)
    lab = (tmp_path / "workspace" / "lab").resolve()
    assert res.stdout.strip() == str(lab)
    assert lab.is_dir()  # created, empty: notebook 01 starts from nothing
    assert not any(lab.iterdir())
    assert "fresh: start with notebook 01" in res.stderr
    assert "make lab WORKSPACE=workspace/demo" in res.stderr  # how to open the demo's instead
    assert "COCO label assist is off" in res.stderr and "make weights" in res.stderr  # said where the person starts


def test_a_lab_workspace_that_ran_says_so_and_how_to_start_over(tmp_path):
    touch_cloud(tmp_path / "workspace" / "lab")
    res = run(tmp_path)
    assert "already holds a run" in res.stderr and "rm -rf" in res.stderr and "make stop" in res.stderr


def test_argument_then_env_choose_another(tmp_path):
    res = run(tmp_path, env_ws=str(tmp_path / "mine"))
    assert res.stdout.strip() == str((tmp_path / "mine").resolve()) and "env EDGELOOP_WORKSPACE" in res.stderr

    res = run(tmp_path, "--workspace", "workspace/demo", env_ws=str(tmp_path / "mine"))
    assert res.stdout.strip() == str((tmp_path / "workspace" / "demo").resolve())
    assert "chosen with WORKSPACE=" in res.stderr


def test_a_workspace_that_cannot_be_created_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("")
    res = run(tmp_path, "--workspace", str(tmp_path / "afile" / "ws"), check=False)
    assert res.returncode == 2 and "cannot create workspace" in res.stderr and "WORKSPACE=DIR" in res.stderr
    assert res.stdout == ""
