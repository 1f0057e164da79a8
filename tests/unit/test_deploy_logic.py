"""Deploy helpers that need no service: manifests, expectations, device checks, drift."""
from __future__ import annotations

import json

import pytest

from helpers.config import Secret
from helpers.deploy.board import board_rows
from helpers.deploy.drift import banana_called_apple_rate, confusion_rate
from helpers.deploy.rollout import (
    _normalise_expect,
    check_device,
    expect_from_manifest,
    runner_manifest,
    wait_for_rollout,
)
from helpers.errors import RolloutError
from helpers.hub.base import DeviceStatus, ModuleStatus
from helpers.protocol import manifest as mf


class _Studio:
    url = "http://127.0.0.1:9999"
    api_key = Secret("ei_management_key_0000000000", "EI_API_KEY")

    def device_key(self, model_version=None):
        return Secret(f"ei_dev_v{model_version}_0123456789abcdef0123", "EI_API_KEY")


def test_runner_manifest_carries_key_as_masked_secret():
    m = runner_manifest(3, "me/edgeloop-device:1", _Studio(), host_port=None, camera=None)
    runner = m["$edgeAgent"]["properties.desired"]["modules"]["runner"]
    assert isinstance(runner["env"]["EI_API_KEY"]["value"], Secret)
    # the runner gets the device key for its model version, never the studio's management key
    assert runner["env"]["EI_API_KEY"]["value"].get_secret_value() == "ei_dev_v3_0123456789abcdef0123"
    assert "0123456789abcdef" not in repr(m) and "0123456789abcdef" not in json.dumps(mf.redact_manifest(m))
    env = mf.module_env(runner)
    assert env["MODEL_VERSION"] == "3" and env["STUDIO_URL"] == "http://127.0.0.1:9999"
    assert expect_from_manifest(m, absent=["collector"]) == {
        "runner": {"version": "1.0", "image": "me/edgeloop-device:1", "model": 3}, "collector": None}


def test_runner_manifest_without_key_says_how_to_fix():
    class NoKey:
        url = "http://x"

    with pytest.raises(RolloutError, match="api_key"):
        runner_manifest(1, "img", NoKey())


def test_normalise_expect():
    assert _normalise_expect({"a": None, "b": "2.0", "c": 4, "d": {"model": 1}}) == {
        "a": None, "b": {"version": "2.0"}, "c": {"model": 4}, "d": {"model": 1}}
    with pytest.raises(ValueError):
        _normalise_expect({"a": {"nope": 1}})


def _status(modules, code=200, desired="device:2", reported="device:2", connected=True, desc=""):
    return DeviceStatus("dev1", connected, None, code, desc, "device", desired, reported, modules)


def _runner(status="running", model=3, port=None, restarts=0, version="1.0"):
    return ModuleStatus("runner", status, exit_code=1 if status != "running" else None, restart_count=restarts,
                        version=version, host_port=port, telemetry={"model_version": model})


def test_check_device_states():
    expect = _normalise_expect({"runner": {"version": "1.0", "model": 3}, "collector": None})
    ok = check_device(_status({"runner": _runner()}), expect)
    assert ok.state == "converged"
    assert check_device(_status({"runner": _runner()}, reported="device:1", code=None), expect).state == "pending"
    assert check_device(_status({"runner": _runner(model=2)}), expect).reason.startswith("runner reports model 2")
    bad = check_device(_status({"runner": _runner("backoff", restarts=3)}), expect)
    assert bad.state == "failed" and "backoff" in bad.reason and "3 restart" in bad.reason
    still = check_device(_status({"runner": _runner(), "collector": ModuleStatus("collector", "running")}), expect)
    assert still.state == "pending" and "collector" in still.reason
    refused = check_device(_status({}, code=400, desc="bad manifest"), expect)
    assert refused.state == "failed" and "400" in refused.reason
    offline = check_device(_status({}, code=406, reported=None, connected=False), expect)
    assert offline.state == "pending" and offline.reason.startswith("device offline")


def test_check_device_health_gate():
    expect = _normalise_expect({"runner": 3})
    st = _status({"runner": _runner(port=4913)})
    seen = []

    def unhealthy(port):
        seen.append(port)
        return False, "/api/health answered 503"

    c = check_device(st, expect, health=True, health_check=unhealthy)
    assert c.state == "pending" and "unhealthy" in c.reason and seen == [4913]
    assert check_device(st, expect, health=False, health_check=unhealthy).state == "converged"
    assert check_device(st, expect, health=["other"], health_check=unhealthy).state == "converged"
    # health=True checks modules expected to run a model (the runner), not e.g. a collector
    collector = ModuleStatus("collector", "running", version="1.0", host_port=4914)
    st2 = _status({"collector": collector})
    assert check_device(st2, _normalise_expect({"collector": "1.0"}), health=True, health_check=unhealthy).state == "converged"
    assert check_device(st2, _normalise_expect({"collector": "1.0"}), health=["collector"],
                        health_check=unhealthy).state == "pending"


class _Hub:
    """Replays a scripted sequence of statuses per device (the hub's read side only)."""

    def __init__(self, script):
        self.script = {d: list(s) for d, s in script.items()}

    def device_status(self, device_id):
        seq = self.script[device_id]
        return seq.pop(0) if len(seq) > 1 else seq[0]


def test_wait_for_rollout_outcomes():
    hub = _Hub({
        "a": [_status({}, code=None, reported="device:1"), _status({"runner": _runner()})],
        "b": [_status({"runner": _runner("failed")})],
        "c": [_status({}, code=None, reported="device:1")],
    })
    polls = []
    res = wait_for_rollout(hub, ["a", "b", "c"], {"runner": 3}, timeout=0.6, poll_s=0.05, stable_s=0.1,
                           health=False, on_poll=polls.append)
    assert res.outcomes["a"].outcome == "converged"
    assert res.outcomes["b"].outcome == "failed"
    assert res.outcomes["c"].outcome == "timeout" and "not applied" in res.outcomes["c"].reason
    assert not res.ok and res.converged == ["a"] and polls
    with pytest.raises(RolloutError, match="b: failed"):
        res.raise_for_failure()
    assert [r["device"] for r in res.table()] == ["a", "b", "c"]


def test_board_rows_show_desired_vs_reported():
    hub = _Hub({"a": [_status({"runner": _runner(port=4913, restarts=2)})]})
    rows = board_rows(hub, ["a"], {"runner": {"version": "1.0", "model": 4}}, applied_at={"a": 0.0})
    (row,) = rows
    assert row["module"] == "runner" and row["status"] == "running" and row["restarts"] == 2 and row["port"] == 4913
    assert row["model"] == "3 / want 4" and row["verdict"].startswith("pending: runner reports model 3")
    assert row["last_status"] == "200" and row["since_apply_s"] > 0


def test_confusion_rate_with_ground_truth_and_scene():
    banana = {"label": "banana", "x": 10, "y": 10, "width": 50, "height": 20}
    apple_on_banana = {"label": "apple", "x": 12, "y": 8, "width": 45, "height": 22, "value": 0.7}
    apple_elsewhere = {"label": "apple", "x": 200, "y": 200, "width": 30, "height": 30, "value": 0.9}
    results = [
        {"boxes": [apple_on_banana], "ground_truth": [banana]},
        {"boxes": [apple_elsewhere], "ground_truth": [banana]},  # a real apple beside it: not confusion
        {"boxes": [], "ground_truth": [banana]},
        {"boxes": [apple_elsewhere], "ground_truth": []},  # no banana: not counted
    ]
    r = banana_called_apple_rate(results)
    assert (r.frames, r.frames_with_true, r.confused) == (4, 3, 1) and r.rate == pytest.approx(1 / 3)
    assert confusion_rate(results, "banana", "apple", iou_threshold=None).confused == 2
    no_gt = [{"detections": [apple_elsewhere]}, {"detections": []}]
    s = confusion_rate(no_gt, "banana", "apple", scene={"objects": ["banana"]})
    assert (s.frames_with_true, s.confused, s.rate) == (2, 1, 0.5)
    assert confusion_rate(no_gt, "banana", "apple", scene=["apple"]).frames_with_true == 0
    assert "banana called apple" in r.summary()
    # a banana boxed as banana (0.8) with a weaker apple box on it is called a banana
    banana_box = {"label": "banana", "x": 10, "y": 10, "width": 50, "height": 20, "value": 0.8}
    hedged = [{"boxes": [banana_box, apple_on_banana], "ground_truth": [banana]}]
    assert banana_called_apple_rate(hedged).confused == 0
    stronger_apple = dict(apple_on_banana, value=0.9)
    assert banana_called_apple_rate([{"boxes": [banana_box, stronger_apple], "ground_truth": [banana]}]).confused == 1


def test_confusion_from_runner_telemetry():
    from helpers.deploy.drift import confusion_from_telemetry

    windows = [
        {"synthetic_check": {"frames": 10, "objects": {"banana": 10}, "confusions": {"banana->apple": 6}}},
        {"synthetic_check": {"frames": 5, "objects": {"banana": 5, "apple": 5}, "confusions": {"apple->banana": 1}}},
        {"mode": "infer"},  # a window without synthetic check
    ]
    r = confusion_from_telemetry(windows, "banana", "apple")
    assert (r.frames, r.frames_with_true, r.confused) == (15, 15, 6) and r.rate == pytest.approx(0.4)
    assert confusion_from_telemetry(windows[0], "apple", "banana").rate == 0.0
