"""The collector's capture count survives a kill between spooling a frame and saving the count."""
from __future__ import annotations

import json
from pathlib import Path

from helpers.device.camera import open_camera
from helpers.device.collector import Collector, CollectorConfig


def _config(workdir: Path) -> CollectorConfig:
    # Nothing is uploaded here (the uploader thread is never started): the URL is never called.
    return CollectorConfig.from_env({"STUDIO_URL": "http://127.0.0.1:9", "EI_API_KEY": "ei_fake_test_key",  # fake test key
                                     "MODULE_WORKDIR": str(workdir), "IOTEDGE_DEVICEID": "pi-1",
                                     "IOTEDGE_MODULEGENERATIONID": "gen1", "LABEL": "apple", "SAMPLE_COUNT": "5",
                                     "CAMERA_SIZE": "64x64"})


def test_a_frame_spooled_after_the_last_saved_count_is_counted_on_restart(tmp_path: Path):
    cfg = _config(tmp_path)
    first = Collector(cfg)
    with open_camera("synthetic", size=(64, 64), seed=1) as cam:
        first.capture_one(cam)
        first.capture_one(cam)
    assert first.captured == 2 and len(first.spool) == 2
    assert {i.meta["run"] for i in first.spool.pending()} == {first.run_id}
    # kill -9 after the second frame reached the spool, before its count was saved:
    state = json.loads((tmp_path / "collector_state.json").read_text())
    (tmp_path / "collector_state.json").write_text(json.dumps({**state, "captured": 1}))
    second = Collector(cfg)
    assert second.captured == 2  # not 1: frame 1 is in the spool and will be uploaded
    assert json.loads((tmp_path / "collector_state.json").read_text())["captured"] == 2


def test_frames_of_another_collection_do_not_move_the_count(tmp_path: Path):
    cfg = _config(tmp_path)
    first = Collector(cfg)
    with open_camera("synthetic", size=(64, 64), seed=1) as cam:
        first.capture_one(cam)
    other = CollectorConfig(**{**cfg.__dict__, "generation": "gen2"})  # a new deployment: a new count
    assert Collector(other).captured == 0
