"""Automatic rollback against the real local hub and a real simulated device (agent + runner).

A good model is deployed and recorded as last-known-good; then a deliberately broken model
(its card names the wrong input size) is deployed: the runner fails to load it, exits, the agent puts it in
backoff, the rollout sees it and re-applies the previous manifest, and the previous runner
(model version and /api/health) is back.
"""
from __future__ import annotations

import json

import pytest
import requests
from test_gate_models import models_cache, tiny_models

from helpers.deploy import (
    LastKnownGood,
    RolloutBoard,
    expect_from_manifest,
    rollout,
    rollout_deployment,
    runner_manifest,
)
from helpers.device import fleet
from helpers.protocol import manifest as mf

pytestmark = pytest.mark.timeout(240)

IMAGE = "local/edgeloop-device:process"
FAST = ["--backoff-max", "4", "--stop-timeout", "5", "--hub-backoff-max", "1", "--hub-timeout", "2"]
RUNNER_ENV = {"FAIL_GRACE_S": "1", "INFER_RATE_HZ": "4", "TELEMETRY_INTERVAL_S": "1", "CAMERA_SIZE": "96x96"}


@pytest.fixture()
def device(cloud, unique_name):
    dev = unique_name("rb")
    fleet.start_devices(cloud.hub, [dev], cloud.workspace, tags={"rollbacktest": dev}, agent_args=FAST)
    try:
        fleet.wait_online(cloud.hub, [dev], timeout=30)
        yield dev
    finally:
        fleet.stop_devices(cloud.workspace, [dev])


def _manifest(cloud, version):
    return runner_manifest(version, IMAGE, cloud.studio, camera=None, host_port=None, extra_env=RUNNER_ENV)


def _models(cloud, request, tmp_path_factory):
    """(good, broken) registry versions: a loadable tiny model, and the same with a wrong card."""
    studio = cloud.studio
    model_dir = tiny_models(models_cache(request, tmp_path_factory), names=("bad",))["bad"]  # loads fine: enough here
    card = json.loads((model_dir / "model.json").read_text())
    good = studio.register_model(model_dir / "model.onnx", dict(card)).version
    # deliberately broken: the card says 96 px input, the network takes 64 (OnnxDetector refuses it)
    card.update(input_size=card["input_size"] + 32, name="broken", onnx_sha256=None)
    broken = studio.register_model(model_dir / "model.onnx", card).version
    return good, broken


def test_broken_model_rolls_back_to_previous_runner(cloud, device, request, tmp_path_factory, tmp_path):
    studio = cloud.studio
    good, broken = _models(cloud, request, tmp_path_factory)
    store = LastKnownGood(tmp_path / "ws")

    # 1. the good runner converges and is recorded as last-known-good
    first = rollout(cloud.hub, [device], _manifest(cloud, good), store=store, timeout=60, poll_s=0.5, stable_s=1.5)
    assert first.ok, first.summary()
    assert first.recorded == [device] and not first.rolled_back
    entry = store.get(device)
    assert entry.expect["runner"]["model"] == good
    assert studio.api_key.get_secret_value() not in store.path.read_text()
    port = cloud.hub.device_status(device).modules["runner"].host_port
    assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200

    # 2. the broken model: detected, rolled back, the previous runner is back
    board = RolloutBoard(cloud.hub, [device], expect_from_manifest(_manifest(cloud, broken)))
    report = rollout(cloud.hub, [device], _manifest(cloud, broken), store=store, timeout=60, poll_s=0.5,
                     stable_s=1.5, on_poll=board.on_poll)
    assert not report.ok
    outcome = report.result.outcomes[device]
    assert outcome.outcome in ("failed", "timeout"), report.summary()
    assert device in report.rolled_back and ("backoff" in report.rolled_back[device] or "failed" in report.rolled_back[device]
                                             or "unhealthy" in report.rolled_back[device])
    assert report.rollback_result is not None and report.rollback_result.ok, report.summary()
    assert board.rows and board.rows[0]["device"] == device and board.rows[0]["module"] == "runner"
    status = cloud.hub.device_status(device)
    runner = status.modules["runner"]
    assert runner.runtime_status == "running" and runner.telemetry.get("model_version") == good
    assert requests.get(f"http://127.0.0.1:{runner.host_port}/api/health", timeout=5).status_code == 200
    # the store still holds the good manifest (the broken one never converged)
    assert store.get(device).expect["runner"]["model"] == good
    rows = report.table()
    assert rows[0]["rolled_back"] and rows[0]["rollback"] == "converged"
    assert "rolled back" in report.summary()


def test_at_scale_deployment_rolls_back(cloud, device, request, tmp_path_factory, tmp_path):
    good, broken = _models(cloud, request, tmp_path_factory)
    store = LastKnownGood(tmp_path / "ws")
    name = f"dep-{device}"
    condition = f"tags.rollbacktest='{device}'"
    try:
        first = rollout_deployment(cloud.hub, name, _manifest(cloud, good), condition, [device], priority=5,
                                   store=store, timeout=60, poll_s=0.5, stable_s=1.5)
        assert first.ok, first.summary()
        assert store.get(f"deployment:{name}").meta == {"target_condition": condition, "priority": 5}
        assert cloud.hub.device_status(device).deployment == name

        report = rollout_deployment(cloud.hub, name, _manifest(cloud, broken), condition, [device], priority=5,
                                    store=store, timeout=60, poll_s=0.5, stable_s=1.5)
        assert not report.ok and f"deployment:{name}" in report.rolled_back, report.summary()
        assert report.rollback_result is not None and report.rollback_result.ok, report.summary()
        (dep,) = [d for d in cloud.hub.list_deployments() if d.name == name]
        env = mf.module_env(dep.modules_content["$edgeAgent"]["properties.desired"]["modules"]["runner"])
        assert env["MODEL_VERSION"] == str(good)  # the good content is the deployment again
        runner = cloud.hub.device_status(device).modules["runner"]
        assert runner.runtime_status == "running" and runner.telemetry.get("model_version") == good
    finally:
        if any(d.name == name for d in cloud.hub.list_deployments()):
            cloud.hub.delete_deployment(name)
