"""start.sh, the device entrypoint, run by real POSIX shells (sh, and dash where present)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.config import REPO_ROOT

START = REPO_ROOT / "start.sh"
SHELLS = [s for s in ("sh", "dash") if shutil.which(s)]


def run(shell: str, env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "PYTHON": sys.executable}
    return subprocess.run([shell, str(START)], env={**base, **env}, capture_output=True, text=True, timeout=timeout)


def test_is_posix_sh_with_strict_mode():
    text = START.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    assert 'exec "${PYTHON:-python3}" -m helpers.device.module' in text
    assert os.access(START, os.X_OK)
    for shell in SHELLS:
        subprocess.run([shell, "-n", str(START)], check=True, timeout=10)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("env, needle", [
    ({}, "MODE is not set"),
    ({"MODE": "train", "STUDIO_URL": "http://x", "EI_API_KEY": "k"}, "MODE='train' is not valid"),
    ({"MODE": "collect"}, "missing environment variable(s): STUDIO_URL EI_API_KEY"),
    ({"MODE": "infer", "STUDIO_URL": "http://x"}, "missing environment variable(s): EI_API_KEY"),
    ({"MODE": "infer", "EI_API_KEY": "ei_0123456789abcdef0123"}, "missing environment variable(s): STUDIO_URL"),
])
def test_refuses_incomplete_environment(shell, env, needle):
    r = run(shell, env)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and r.stdout == ""
    assert "0123456789abcdef" not in r.stderr  # never echoes the key


@pytest.mark.parametrize("shell", SHELLS)
def test_execs_the_module(shell, tmp_path):
    # a complete environment reaches helpers.device.module, which checks the mode's own settings
    r = run(shell, {"MODE": "infer", "STUDIO_URL": "http://127.0.0.1:9", "EI_API_KEY": "k",
                    "MODULE_WORKDIR": str(tmp_path)})
    assert r.returncode == 2, r.stderr
    assert "MODEL_VERSION" in r.stderr  # the runner's own message: the module ran


def test_exec_replaces_the_shell(tmp_path):
    """SIGTERM must reach the module: start.sh execs it, so the pid is the module's."""
    env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "MODE": "collect",
           "STUDIO_URL": "http://127.0.0.1:9", "EI_API_KEY": "k", "MODULE_WORKDIR": str(tmp_path),
           "SAMPLE_COUNT": "1", "RATE_HZ": "1"}
    proc = subprocess.Popen(["sh", str(START)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            cmd = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            if b"helpers.device.module" in cmd:
                break
            subprocess.run(["sleep", "0.05"])
        assert b"helpers.device.module" in cmd
    finally:
        proc.terminate()
        proc.wait(timeout=20)
