"""`make lab` opens the notebooks on the workspace last run (tools/lab_workspace.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "lab_workspace.py"


def run(root: Path, *args: str, env_ws: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_WORKSPACE"}
    settings = root / "empty.env"  # no developer's .env in the way
    settings.write_text("")
    env["EDGELOOP_SETTINGS_FILE"] = str(settings)
    if env_ws is not None:
        env["EDGELOOP_WORKSPACE"] = env_ws
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60, check=True)


def touch_cloud(ws: Path, when: float) -> None:
    (ws / "localcloud").mkdir(parents=True, exist_ok=True)
    db = ws / "localcloud" / "state.db"
    db.write_bytes(b"")
    os.utime(db, (when, when))


def test_last_run_workspace_wins_then_env_then_argument(tmp_path):
    now = time.time()
    touch_cloud(tmp_path / "workspace", now - 300)
    touch_cloud(tmp_path / "workspace" / "demo", now - 10)  # make demo ran last
    touch_cloud(tmp_path / "workspace" / "reference", now - 100)
    res = run(tmp_path)
    assert res.stdout.strip() == str((tmp_path / "workspace" / "demo").resolve())
    assert "the workspace last run" in res.stderr and "make lab WORKSPACE=DIR" in res.stderr

    touch_cloud(tmp_path / "workspace", now)  # then the notebooks ran on the default one
    assert run(tmp_path).stdout.strip() == str((tmp_path / "workspace").resolve())

    res = run(tmp_path, env_ws=str(tmp_path / "mine"))
    assert res.stdout.strip() == str((tmp_path / "mine").resolve()) and "env EDGELOOP_WORKSPACE" in res.stderr

    res = run(tmp_path, "--workspace", "workspace/other", env_ws=str(tmp_path / "mine"))
    assert res.stdout.strip() == str((tmp_path / "workspace" / "other").resolve())


def test_nothing_run_yet_is_the_default(tmp_path):
    res = run(tmp_path)
    assert res.stdout.strip() == str((tmp_path / "workspace").resolve()) and "no workspace has run yet" in res.stderr
