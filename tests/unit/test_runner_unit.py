"""Runner pieces without processes: configuration, telemetry statistics, drawing, healthcheck."""
from __future__ import annotations

import json
import os
import threading
from http.server import ThreadingHTTPServer

import numpy as np
import pytest

from helpers.device.module import healthcheck
from helpers.device.runner import RunnerConfig, RunnerState, Telemetry, draw_boxes, make_handler
from helpers.errors import ConfigError
from helpers.geometry import BBox


def test_config_names_what_is_wrong():
    with pytest.raises(ConfigError, match="MODEL_VERSION"):
        RunnerConfig.from_env({"MODE": "infer"})
    with pytest.raises(ConfigError, match="positive integer"):
        RunnerConfig.from_env({"MODEL_VERSION": "latest"})
    with pytest.raises(ConfigError, match="SAMPLING_BAND"):
        RunnerConfig.from_env({"MODEL_VERSION": "1", "SAMPLING_BAND": "0.9,0.1"})
    with pytest.raises(ConfigError, match="INFER_RATE_HZ"):
        RunnerConfig.from_env({"MODEL_VERSION": "1", "INFER_RATE_HZ": "fast"})
    cfg = RunnerConfig.from_env({"MODEL_VERSION": "2", "SAMPLING_BAND": "0.3,0.6", "EI_API_KEY": "ei_x",
                                 "STUDIO_URL": "http://h:1/"})
    assert cfg.sampling_band == (0.3, 0.6) and cfg.studio_url == "http://h:1" and "ei_x" not in repr(cfg)


def test_telemetry_window():
    t = Telemetry(low_confidence=0.6)
    apple, banana = BBox("apple", 0, 0, 10, 10, 0.9), BBox("banana", 50, 50, 20, 10)
    t.add([apple, BBox("apple", 50, 50, 20, 10, 0.4)], [BBox("apple", 0, 0, 10, 10), banana])
    t.add([], None)
    t.add([BBox("apple", 1, 1, 9, 9, 0.8), BBox("banana", 30, 30, 5, 5, 0.7)], None)
    s = t.snapshot()
    assert s["window_frames"] == 3 and s["detections_per_class"] == {"apple": 3, "banana": 1}
    assert s["mean_confidence"]["apple"] == pytest.approx((0.9 + 0.4 + 0.8) / 3, abs=1e-3)
    assert s["low_confidence_share"] == pytest.approx(1 / 3, abs=1e-3) and s["empty_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["single_class_share"] == 0.5 and s["dominant_class"] == "apple"
    assert s["synthetic_check"]["confusions"] == {"banana->apple": 1}
    assert s["synthetic_check"]["recall"] == {"apple": 1.0, "banana": 0.0}
    t.reset()
    assert t.snapshot()["window_frames"] == 0


def test_draw_boxes_is_a_jpeg():
    data = draw_boxes(np.zeros((64, 64, 3), np.uint8), [BBox("apple", 5, 5, 20, 20, 0.77)])
    assert data[:2] == b"\xff\xd8"


def test_health_http_and_healthcheck(tmp_path):
    state = RunnerState("dev")
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        env = {"MODE": "infer", "PORT": str(port)}
        state.set_unhealthy("broken model: no labels")
        assert healthcheck(env) == 1
        state.set_model({"labels": ["apple"]}, ["apple"], 64, 1)

        class F:
            index, captured_at, ground_truth = 0, "t", None

        state.record(F(), [], {"inference_ms": 1.0}, b"\xff\xd8")
        assert healthcheck(env) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck({"MODE": "infer", "PORT": str(port)}) == 1  # nothing listens any more
    (tmp_path / "reported.json").write_text(json.dumps({"state": "capturing"}))
    assert healthcheck({"MODE": "collect", "MODULE_WORKDIR": str(tmp_path)}) == 0
    old = os.stat(tmp_path / "reported.json").st_mtime - 600
    os.utime(tmp_path / "reported.json", (old, old))
    assert healthcheck({"MODE": "collect", "MODULE_WORKDIR": str(tmp_path)}) == 1
    assert healthcheck({"MODE": "nope"}) == 1
