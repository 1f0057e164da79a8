"""The agent's command line refuses what it cannot use, with the fix in the message."""
from __future__ import annotations

import os
import subprocess
import sys


def run(args, env=None):
    base = {k: v for k, v in os.environ.items() if k != "IOTEDGE_CONNECTION_STRING"}
    return subprocess.run([sys.executable, "-m", "helpers.device.agent", *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=30)


def test_needs_a_connection_string(tmp_path):
    r = run(["--workdir", str(tmp_path)])
    assert r.returncode == 2 and "IOTEDGE_CONNECTION_STRING" in r.stderr


def test_refuses_a_service_connection_string_and_masks_it(tmp_path):
    cs = "HostName=127.0.0.1:9;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0"  # fake test key
    r = run(["--workdir", str(tmp_path)], env={"IOTEDGE_CONNECTION_STRING": cs})
    assert r.returncode == 2 and "DeviceId" in r.stderr
    assert "c2VjcmV0" not in r.stderr


def test_docker_runtime_without_engine_says_so(tmp_path):
    from helpers.containers.engine import docker_engine_available

    if docker_engine_available()[0]:
        import pytest

        pytest.skip("a Docker engine answers here")
    cs = "HostName=127.0.0.1:9;DeviceId=d1;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0"  # fake test key
    r = run(["--workdir", str(tmp_path), "--runtime", "docker"], env={"IOTEDGE_CONNECTION_STRING": cs})
    assert r.returncode == 3 and "no Docker engine answers" in r.stderr and "process runtime" in r.stderr


def test_a_missing_ca_file_is_refused(tmp_path):
    cs = "HostName=127.0.0.1;DeviceId=d1;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0"  # fake test key
    r = run(["--workdir", str(tmp_path), "--ca-file", str(tmp_path / "missing.pem")], env={"IOTEDGE_CONNECTION_STRING": cs})
    assert r.returncode == 2 and "--ca-file" in r.stderr and "missing.pem" in r.stderr
