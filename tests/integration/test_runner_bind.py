"""The runner's HTTP server listens where the deployment maps it, and tells strangers nothing local.

Runners started by the real process runtime from a deployment's createOptions; the listening
address read from the kernel's socket table (/proc/net/tcp).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_runner_model import CARD, tiny_detector, wait_http

from helpers.device.runtime import ModuleLaunch, ProcessRuntime

pytestmark = pytest.mark.timeout(120)


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a TCP socket listens on at `port` (from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        addr_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            out.add(".".join(str(b) for b in reversed(bytes.fromhex(addr_hex))))
    return out


def launch_runner(tmp_path: Path, model_dir: Path, name: str, create_options: dict) -> tuple:
    runtime = ProcessRuntime()
    launch = ModuleLaunch(
        name=name, image="local/edgeloop-device:process",
        env={"MODE": "infer", "STUDIO_URL": "http://127.0.0.1:9", "EI_API_KEY": "ei_fake_test_key_0000",
             "MODEL_PATH": str(model_dir), "CAMERA_SIZE": "96x96", "INFER_RATE_HZ": "8", "FAIL_GRACE_S": "60"},
        workdir=tmp_path / "ws" / "devices" / "cam-1" / "modules" / name, device_id="cam-1",
        scene_file=tmp_path / "ws" / "devices" / "cam-1" / "scene.json", create_options=create_options,
    )
    return runtime.start(launch)


def stop(handle) -> None:
    handle.terminate()
    if handle.wait(15) is None:
        handle.kill()
        handle.wait(5)


def test_runner_listens_on_loopback_unless_the_deployment_maps_another_address(tmp_path):
    model_dir = tmp_path / "model"
    tiny_detector(model_dir / "model.onnx")
    (model_dir / "model.json").write_text(json.dumps(CARD))
    default = launch_runner(tmp_path, model_dir, "runner", {"HostConfig": {"PortBindings": {"4912/tcp": [{"HostPort": "4912"}]}}})
    exposed = launch_runner(tmp_path, model_dir, "runner-lan", {
        "HostConfig": {"PortBindings": {"4912/tcp": [{"HostIp": "0.0.0.0", "HostPort": "4912"}]}}})
    try:
        for h in (default, exposed):
            wait_http(f"http://127.0.0.1:{h.host_port}/api/health", lambda r: r.status_code == 200, timeout=60)
        assert listening_addresses(default.host_port) == {"127.0.0.1"}
        assert listening_addresses(exposed.host_port) == {"0.0.0.0"}  # configured in the deployment
    finally:
        stop(default)
        stop(exposed)


def test_health_does_not_reveal_the_workspace_path_or_pid(tmp_path):
    model_dir = tmp_path / "ws" / "devices" / "cam-1" / "models" / "broken"
    model_dir.mkdir(parents=True)
    (model_dir / "model.onnx").write_bytes(b"not an onnx graph")  # onnxruntime's error names the file
    (model_dir / "model.json").write_text(json.dumps(CARD))
    handle = launch_runner(tmp_path, model_dir, "runner", {})
    try:
        r = wait_http(f"http://127.0.0.1:{handle.host_port}/api/health", lambda r: r.status_code == 503
                      and (r.json()["reason"] or "").startswith("broken model"), timeout=60)
        body = r.text
        info = wait_http(f"http://127.0.0.1:{handle.host_port}/api/info", lambda r: r.status_code == 200).text
    finally:
        stop(handle)
    reason = json.loads(body)["reason"]
    assert "onnxruntime cannot load" in reason and "model.onnx" in reason, reason  # still says what is wrong
    for text in (body, info):
        assert str(tmp_path) not in text and "/ws/devices/" not in text, text
        assert '"pid"' not in text
    # the module's own telemetry (read by the fleet's owner through the hub) keeps the full reason
    reported = json.loads((tmp_path / "ws" / "devices" / "cam-1" / "modules" / "runner" / "reported.json").read_text())
    assert str(model_dir) in reported["last_error"]
