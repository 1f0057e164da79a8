"""The runner module as a real process with a real (tiny) ONNX detector from the local studio."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from helpers.config import REPO_ROOT
from helpers.device import fleet
from helpers.device.runtime import free_port
from helpers.protocol.manifest import build_manifest, module_spec, reveal_secrets

pytestmark = pytest.mark.timeout(120)


def tiny_detector(path: Path, labels=("apple",), input_size: int = 64) -> Path:
    """A real ONNX graph with the detector's head outputs: 8x8 average pooling, then a 1x1 conv
    per output (`heatmap` = sigmoid of a red-minus-green/blue score, `ltrb` = 12 px boxes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = len(labels)
    grid = input_size // 8
    w_h = np.zeros((c, 3, 1, 1), np.float32)
    w_h[:, 0], w_h[:, 1], w_h[:, 2] = 2.0, -1.0, -1.0
    inits = [
        numpy_helper.from_array(w_h, "w_h"), numpy_helper.from_array(np.zeros(c, np.float32), "b_h"),
        numpy_helper.from_array(np.zeros((4, 3, 1, 1), np.float32), "w_r"),
        numpy_helper.from_array(np.full(4, 12.0, np.float32), "b_r"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Conv", ["pooled", "w_h", "b_h"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["heatmap"]),
        helper.make_node("Conv", ["pooled", "w_r", "b_r"], ["ltrb"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, input_size, input_size])],
        [helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, c, grid, grid]),
         helper.make_tensor_value_info("ltrb", TensorProto.FLOAT, [1, 4, grid, grid])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


CARD = {"labels": ["apple"], "input_size": 64, "score_threshold": 0.05, "name": "tiny-test"}


@pytest.fixture(scope="module")
def model_version(cloud, tmp_path_factory) -> int:
    onnx_path = tiny_detector(tmp_path_factory.mktemp("model") / "model.onnx")
    return cloud.studio.register_model(onnx_path, dict(CARD)).version


def start_runner(workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    full = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "MODE": "infer", "MODULE_WORKDIR": str(workdir),
            "CAMERA_SIZE": "96x96", "INFER_RATE_HZ": "8", "TELEMETRY_INTERVAL_S": "1", **env}
    log = open(workdir / "module.log", "ab")
    try:
        return subprocess.Popen(["sh", str(REPO_ROOT / "start.sh")], env=full, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def get(url: str):
    return requests.get(url, timeout=5)


def wait_http(url: str, pred, timeout: float = 40.0, proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get(url)
            if pred(last):
                return last
        except requests.ConnectionError as exc:
            last = exc
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{url}: not as expected in {timeout} s: {getattr(last, 'text', last)!r}")


def test_serves_page_and_api_with_a_studio_model(cloud, model_version, tmp_path, unique_name):
    dev = unique_name("cam")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    workdir = tmp_path / "runner"
    proc = start_runner(workdir, {"STUDIO_URL": cloud.url, "EI_API_KEY": cloud.studio.api_key.get_secret_value(),
                                  "MODEL_VERSION": str(model_version), "PORT": str(port), "IOTEDGE_DEVICEID": dev,
                                  "SAMPLING_BAND": "0,1", "SAMPLING_MAX_PER_MIN": "600"})
    try:
        health = wait_http(f"{base}/api/health", lambda r: r.status_code == 200 and r.json()["frames"] >= 3, proc=proc)
        h = health.json()
        assert h["model_version"] == model_version and h["healthy"] is True and h["reason"] is None
        assert h["latency_ms"]["p50"] is not None and h["latency_ms"]["p95"] >= h["latency_ms"]["p50"]
        res = get(f"{base}/api/results").json()
        assert res["model_version"] == model_version and isinstance(res["frame_index"], int)
        assert res["bounding_boxes"], "the tiny model fires on every frame (its heat map has a peak)"
        box = res["bounding_boxes"][0]
        assert set(box) == {"label", "value", "x", "y", "width", "height"} and box["label"] == "apple"
        assert {"capture_ms", "inference_ms", "total_ms"} <= set(res["timing"])
        assert res["ground_truth"] and res["ground_truth"][0]["label"] == "apple"  # synthetic camera
        info = get(f"{base}/api/info").json()
        assert info["labels"] == ["apple"] and info["input_size"] == 64 and info["card"]["name"] == "tiny-test"
        assert info["device"] == dev
        page = get(f"{base}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "/api/frame.jpg" in page.text and "/api/results" in page.text
        jpg = get(f"{base}/api/frame.jpg")
        assert jpg.status_code == 200 and jpg.content[:2] == b"\xff\xd8"
        assert get(f"{base}/nope").status_code == 404
        # the model was cached beside the module, sha256 checked
        card = json.loads((workdir / "models" / str(model_version) / "model.json").read_text())
        assert card["labels"] == ["apple"] and card["sha256"]

        def telemetry():
            try:
                t = json.loads((workdir / "reported.json").read_text())
            except (FileNotFoundError, ValueError):
                return None
            return t if t.get("window_frames") and t.get("sampling", {}).get("uploaded", 0) >= 1 else None

        deadline = time.monotonic() + 30
        t = None
        while time.monotonic() < deadline and not (t := telemetry()):
            time.sleep(0.3)
        assert t, (workdir / "module.log").read_text()[-2000:]
        assert t["mode"] == "infer" and t["model_version"] == model_version
        assert t["detections_per_class"].get("apple", 0) >= 1 and 0 < t["mean_confidence"]["apple"] <= 1
        assert 0 <= t["low_confidence_share"] <= 1 and "single_class_share" in t
        assert t["synthetic_check"]["frames"] >= 1  # ground truth of the synthetic camera
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    sampled = [s for s in cloud.studio.samples(device=dev)]
    assert sampled and all(s.metadata["source"] == "runner-sampling" for s in sampled)
    assert sampled[0].metadata["model_version"] == model_version and not sampled[0].labeled


def test_broken_model_answers_503_then_fails(cloud, tmp_path, unique_name):
    """Through the agent: the runner serves 503 with the reason, exits 3, reported failed."""
    broken = tmp_path / "broken"
    tiny_detector(broken / "model.onnx")
    (broken / "model.json").write_text(json.dumps({"input_size": 64}))  # labels missing
    dev = unique_name("cam")
    fleet.start_devices(cloud.hub, [dev], cloud.workspace,
                        agent_args=["--stop-timeout", "5"])
    try:
        env = {"MODE": "infer", "STUDIO_URL": cloud.url, "MODEL_PATH": str(broken), "FAIL_GRACE_S": "4",
               "TELEMETRY_INTERVAL_S": "1"}
        manifest = build_manifest([module_spec("runner", "local/edgeloop-device:process", env=env,
                                               restart_policy="never", secret_env=["EI_API_KEY"])],
                                  secrets={"EI_API_KEY": cloud.studio.api_key})
        cloud.hub.set_modules(dev, reveal_secrets(manifest))
        deadline = time.monotonic() + 30
        port = None
        while time.monotonic() < deadline and port is None:
            m = cloud.hub.device_status(dev).modules.get("runner")
            port = m.host_port if m and m.runtime_status == "running" else None
            time.sleep(0.2)
        assert port, "runner never reported running"
        r = wait_http(f"http://127.0.0.1:{port}/api/health", lambda r: r.status_code == 503 and "broken model" in r.text,
                      timeout=15)
        assert "labels" in r.json()["reason"]
        deadline = time.monotonic() + 30
        m = None
        while time.monotonic() < deadline:
            m = cloud.hub.device_status(dev).modules.get("runner")
            if m and m.runtime_status == "failed":
                break
            time.sleep(0.3)
        assert m and m.runtime_status == "failed" and m.exit_code == 3 and m.restart_count == 0
        assert "broken model" in (m.telemetry.get("last_error") or "")
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
