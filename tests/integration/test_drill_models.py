"""Fault drill 5: a broken model reaches a device; it says why, and the rollout rolls back.

A real simulated device (edge agent + runner process) runs a good model from the studio's
registry, recorded as last-known-good. Then three broken models are rolled out in turn:

- corrupt file: registered intact, then damaged in the studio's storage (the bytes served no
  longer match the registry's sha256),
- wrong input size: the card says 96 px, the network takes 64,
- missing labels: a card without `labels`.

Each time the runner answers `/api/health` 503 naming the reason, exits, the agent reports it
(`failed`/`backoff` with the exit code), the rollout rolls back, and the good runner serves again.
Prints its counts (`pytest -s`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from test_gate_models import models_cache, tiny_models

from helpers.deploy import LastKnownGood, rollout, runner_manifest
from helpers.device import fleet

pytestmark = pytest.mark.timeout(240)

IMAGE = "local/edgeloop-device:process"
FAST = ["--backoff-max", "4", "--stop-timeout", "5", "--hub-backoff-max", "1", "--hub-timeout", "2"]
RUNNER_ENV = {"FAIL_GRACE_S": "2", "INFER_RATE_HZ": "4", "TELEMETRY_INTERVAL_S": "1", "CAMERA_SIZE": "96x96"}


def _register(studio, model_dir: Path, **card_changes: Any) -> int:
    card = json.loads((model_dir / "model.json").read_text())
    card.update(card_changes)
    card = {k: v for k, v in card.items() if v is not None}
    return studio.register_model(model_dir / "model.onnx", card).version


def _damage_stored_model(workspace: Path, version: int) -> None:
    """Flip bytes in the middle of the studio's stored file of `version` (storage corruption)."""
    (path,) = [p for p in (workspace / "localcloud" / "files" / "models" / str(version)).iterdir() if p.suffix == ".onnx"]
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    path.write_bytes(bytes(data))


def test_drill5_broken_models_unhealthy_with_reason_and_rolled_back(cloud, request, tmp_path_factory, tmp_path,
                                                                     unique_name):
    studio = cloud.studio
    model_dir = tiny_models(models_cache(request, tmp_path_factory), names=("bad",))["bad"]  # a model that loads
    size = json.loads((model_dir / "model.json").read_text())["input_size"]
    good = _register(studio, model_dir)
    corrupt = _register(studio, model_dir, name="corrupt", notes=unique_name("corrupt"))
    _damage_stored_model(cloud.workspace, corrupt)
    broken = {
        "corrupt file": (corrupt, "sha256"),
        "wrong input size": (_register(studio, model_dir, name="wrong-size", input_size=size + 32, onnx_sha256=None),
                             "input"),
        "missing labels": (_register(studio, model_dir, name="no-labels", labels=None), "labels"),
    }
    store = LastKnownGood(tmp_path / "ws")
    dev = unique_name("drill5")

    def manifest(version: int) -> dict[str, Any]:
        return runner_manifest(version, IMAGE, studio, camera=None, host_port=None, extra_env=RUNNER_ENV)

    fleet.start_devices(cloud.hub, [dev], cloud.workspace, agent_args=FAST)
    counts: dict[str, Any] = {}
    try:
        first = rollout(cloud.hub, [dev], manifest(good), store=store, timeout=90, poll_s=0.5, stable_s=1.5)
        assert first.ok, first.summary()
        port = cloud.hub.device_status(dev).modules["runner"].host_port

        for case, (version, word) in broken.items():
            reasons: set[str] = set()

            def watch(checks, reasons=reasons):
                status = checks[dev].status
                runner = status.modules.get("runner") if status is not None else None
                if runner is not None and runner.telemetry.get("last_error"):
                    reasons.add(str(runner.telemetry["last_error"]))
                try:
                    resp = requests.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                except requests.ConnectionError:
                    return  # between the runner's exit and its restart
                if resp.status_code == 503 and resp.json().get("reason"):
                    reasons.add(resp.json()["reason"])

            report = rollout(cloud.hub, [dev], manifest(version), store=store, timeout=90, poll_s=0.3, stable_s=1.5,
                             on_poll=watch)
            assert not report.ok and dev in report.rolled_back, report.summary()
            assert report.rollback_result is not None and report.rollback_result.ok, report.summary()
            said = sorted(r for r in reasons if r.startswith("broken model") and word in r)
            module_log = (cloud.workspace / "devices" / dev / "modules" / "runner" / "module.log").read_text()
            assert said, (case, reasons)
            assert said[0].removeprefix("broken model: ") in module_log
            runner = cloud.hub.device_status(dev).modules["runner"]
            assert runner.runtime_status == "running" and runner.telemetry.get("model_version") == good
            health = requests.get(f"http://127.0.0.1:{runner.host_port}/api/health", timeout=5)
            assert health.status_code == 200, health.text
            counts[case] = {"reason": min(said, key=len)[:150], "rolled_back_because": report.rolled_back[dev],
                            "after": f"v{runner.telemetry.get('model_version')} {runner.runtime_status}"}
        assert store.get(dev).expect["runner"]["model"] == good
        print("drill 5:", counts)
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
