"""The collector module as a real process (start.sh) against the real local studio."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.config import REPO_ROOT
from helpers.device.spool import Spool
from helpers.localcloud import ensure_running

pytestmark = pytest.mark.timeout(120)


def start_collector(workdir: Path, url: str, key: str, device: str, **env: str) -> subprocess.Popen:
    full = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "MODE": "collect", "STUDIO_URL": url,
            "EI_API_KEY": key, "MODULE_WORKDIR": str(workdir), "IOTEDGE_DEVICEID": device,
            "IOTEDGE_MODULEGENERATIONID": "gen1", "CAMERA_SIZE": "96x96", **env}
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "module.log", "ab")
    try:
        return subprocess.Popen(["sh", str(REPO_ROOT / "start.sh")], env=full, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def progress(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "reported.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def wait_progress(workdir: Path, pred, timeout: float = 40.0) -> dict:
    deadline = time.monotonic() + timeout
    p: dict = {}
    while time.monotonic() < deadline:
        p = progress(workdir)
        if p and pred(p):
            return p
        time.sleep(0.2)
    raise AssertionError(f"collector progress not reached in {timeout} s: {p}\n"
                         f"{(workdir / 'module.log').read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_nothing_lost_nothing_twice_across_a_studio_kill(fresh_cloud, tmp_path, unique_name):
    cloud = fresh_cloud
    dev = unique_name("cam")
    count = 16
    workdir = tmp_path / "collector"
    proc = start_collector(workdir, cloud.url, cloud.studio.api_key.get_secret_value(), dev,
                           SAMPLE_COUNT=str(count), RATE_HZ="5", LABEL="apple")
    try:
        wait_progress(workdir, lambda p: p.get("uploaded", 0) >= 3)
        os.kill(cloud.pid, signal.SIGKILL)  # the studio dies mid-stream, answers in flight are lost
        time.sleep(0.3)
        p = wait_progress(workdir, lambda p: p.get("last_error") and p.get("pending", 0) >= 2)
        assert "unreachable" in p["last_error"]
        ensure_running(cloud.workspace)
        cloud.refresh()
        done = wait_progress(workdir, lambda p: p.get("state") == "done", timeout=60)
        assert proc.poll() is None, "the collector idles when done instead of exiting"
    finally:
        assert stop(proc) == 0
    samples = cloud.studio.samples(device=dev)
    assert len(samples) == count
    assert len({s.sha256 for s in samples}) == count
    assert sorted(s.metadata["frame_index"] for s in samples) == list(range(count))
    assert done["captured"] == count and done["pending"] == 0
    assert done["uploaded"] + done["duplicates"] == count
    s0 = samples[0]
    assert s0.label == "apple" and s0.metadata["source"] == "collector" and s0.captured_at
    assert isinstance(s0.metadata["ground_truth"], list) and s0.metadata["ground_truth"][0]["label"] == "apple"
    assert {s.category for s in samples} <= {"training", "testing"}


def test_sigterm_keeps_the_spool_for_the_next_start(cloud, tmp_path, unique_name):
    dev = unique_name("cam")
    workdir = tmp_path / "collector"
    key = cloud.studio.api_key.get_secret_value()
    # no studio at this address: frames pile up in the spool
    proc = start_collector(workdir, "http://127.0.0.1:9", key, dev, SAMPLE_COUNT="5", RATE_HZ="20")
    try:
        wait_progress(workdir, lambda p: p.get("captured") == 5)
    finally:
        assert stop(proc) == 0
    spool = Spool(workdir / "spool" / "collector")
    assert len(spool) == 5
    keys = {i.key for i in spool.pending()}
    assert all(i.meta["label"] is None and i.meta["metadata"]["device"] == dev for i in spool.pending())
    log = (workdir / "module.log").read_text()
    assert key not in log

    # the next start (same module generation) sends what was spooled and captures nothing new
    proc = start_collector(workdir, cloud.url, key, dev, SAMPLE_COUNT="5", RATE_HZ="20")
    try:
        done = wait_progress(workdir, lambda p: p.get("state") == "done")
    finally:
        assert stop(proc) == 0
    samples = cloud.studio.samples(device=dev)
    assert {s.sha256 for s in samples} == keys and len(samples) == 5
    assert all(not s.label and not s.labeled for s in samples)  # LABEL unset: x-no-label
    assert done["captured"] == 5 and len(Spool(workdir / "spool" / "collector")) == 0
    # sending it all again is harmless: the studio recognises every frame (x-disallow-duplicates)
    sp = Spool(workdir / "spool" / "collector")
    import threading

    from helpers.device.collector import Uploader
    from helpers.studio.ingestion import IngestionClient

    for s in samples:
        sp.put(cloud.studio.get_image(s.id), {"filename": s.filename, "category": s.category, "label": None})
    up = Uploader(sp, IngestionClient(cloud.url, cloud.studio.api_key), threading.Event())
    for item in sp.pending():
        assert up.send(item) == 0.0
    assert up.stats()["duplicates"] == 5 and up.stats()["uploaded"] == 0 and len(sp) == 0
    assert len(cloud.studio.samples(device=dev)) == 5
    assert hashlib.sha256(cloud.studio.get_image(samples[0].id)).hexdigest() == samples[0].sha256
