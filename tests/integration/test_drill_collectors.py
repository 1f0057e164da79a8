"""Fault drills 1 and 2: collectors (real `start.sh` module processes) against a studio that fails.

1. `kill -9` of the local cloud while 4 collectors upload: after its restart every frame the
   collectors captured (each acknowledged once the studio answers) is in the studio exactly once:
   0 lost, 0 duplicated, counted by content hash and frame index.
2. The studio down for a while (a gate in front of it closed; the hub stays up): three collector
   modules of one simulated device keep capturing into their spools. Within its quota a collector
   drains everything when the studio returns; past it (`SPOOL_MAX_ITEMS`, `SPOOL_MAX_MB`) the
   oldest unacknowledged frames are dropped, counted (`dropped`, in its module twin's reported
   properties, read through the hub meanwhile) and logged, and the newest ones arrive.

Each drill prints its counts (`pytest -s`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import threading
import time

import pytest
import waiting
from test_agent_process import FAST, IMAGE
from test_collector_studio import progress, start_collector, stop, wait_progress

from helpers.device import fleet
from helpers.localcloud import ensure_running
from helpers.protocol.manifest import build_manifest, collector_module, reveal_secrets

wait_for = functools.partial(waiting.wait_for, interval=0.3)

pytestmark = pytest.mark.timeout(150)


def _check_exactly_once(cloud, device: str, count: int) -> dict[str, int]:
    """The studio's samples of `device`: each captured frame index once, each content once."""
    samples = cloud.studio.samples(device=device)
    indexes = [s.metadata["frame_index"] for s in samples]
    lost = len(set(range(count)) - set(indexes))
    duplicated = len(indexes) - len(set(indexes)) + (len(samples) - len({s.sha256 for s in samples}))
    return {"in_studio": len(samples), "lost": lost, "duplicated": duplicated}


def _stop_all(procs: list) -> None:
    codes = []
    for p in procs:
        codes.append(stop(p))
    assert codes == [0] * len(procs), codes


def test_drill1_kill9_cloud_while_4_collectors_upload(fresh_cloud, tmp_path, unique_name):
    cloud = fresh_cloud
    key = cloud.studio.api_key.get_secret_value()
    count = 24
    devs = [unique_name(f"cam{i}") for i in range(4)]
    dirs = {d: tmp_path / d for d in devs}
    procs = [start_collector(dirs[d], cloud.url, key, d, SAMPLE_COUNT=str(count), RATE_HZ="4", LABEL="apple")
             for d in devs]
    try:
        # all four are uploading (and still capturing) when the cloud dies
        for d in devs:
            wait_progress(dirs[d], lambda p: p.get("uploaded", 0) >= 1, timeout=60)
        os.kill(cloud.pid, signal.SIGKILL)
        at_kill = {d: progress(dirs[d]) for d in devs}
        acked_before = sum(p.get("uploaded", 0) for p in at_kill.values())
        assert all(p.get("captured", 0) < count for p in at_kill.values()), at_kill
        for d in devs:  # each notices, and keeps capturing into its spool
            wait_progress(dirs[d], lambda p: p.get("last_error") and p.get("pending", 0) >= 1, timeout=30)
        time.sleep(1.0)
        ensure_running(cloud.workspace)
        cloud.refresh()
        done = {d: wait_progress(dirs[d], lambda p: p.get("state") == "done", timeout=90) for d in devs}
        assert all(p.poll() is None for p in procs)
    finally:
        _stop_all(procs)
    per_device = {d: _check_exactly_once(cloud, d, count) for d in devs}
    counts = {
        "collectors": len(devs),
        "captured": sum(p["captured"] for p in done.values()),
        "acked_before_kill": acked_before,
        "acked": sum(p["uploaded"] + p["duplicates"] for p in done.values()),
        # frames whose answer the kill lost: re-sent, recognised by hash, acknowledged once
        "resent_as_duplicate": sum(p["duplicates"] for p in done.values()),
        "in_studio": sum(c["in_studio"] for c in per_device.values()),
        "lost": sum(c["lost"] for c in per_device.values()),
        "duplicated": sum(c["duplicated"] for c in per_device.values()),
    }
    print("drill 1:", counts)
    assert counts["captured"] == counts["acked"] == counts["in_studio"] == len(devs) * count, counts
    assert counts["lost"] == 0 and counts["duplicated"] == 0, per_device
    assert all(p["pending"] == 0 and p["dropped"] == 0 for p in done.values())


class StudioGate:
    """A TCP forwarder on loopback in front of the studio, which the drill closes and opens: the
    studio unreachable for the devices while the hub (the same local cloud) stays up."""

    def __init__(self, target_port: int):
        self.target = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        """Refuse new connections and cut the open ones (answers in flight are lost)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass  # the other side or close() cut it
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def test_drill2_studio_down_spool_quota_drops_oldest_counted(cloud, unique_name):
    count = 14
    # module -> (its label, its spool quota, how many frames the quota keeps; None: by bytes)
    quotas = {
        "roomy": ("apple", {"SPOOL_MAX_ITEMS": "100"}, count),
        "items": ("banana", {"SPOOL_MAX_ITEMS": "5"}, 5),
        "bytes": ("pear", {"SPOOL_MAX_MB": "0.02"}, None),  # 20 KB: a few 96x96 frames
    }
    gate = StudioGate(int(cloud.url.rsplit(":", 1)[1]))  # closed: the studio is down from the start
    dev = unique_name("drill2")
    modules = [collector_module(IMAGE, gate.url, name=name, label=label, count=count, rate_hz=10, camera=None,
                                extra_env={"CAMERA_SIZE": "96x96", **env}) for name, (label, env, _) in quotas.items()]
    fleet.start_devices(cloud.hub, [dev], cloud.workspace, agent_args=FAST)
    try:
        cloud.hub.set_modules(dev, reveal_secrets(build_manifest(modules, secrets={"EI_API_KEY": cloud.studio.api_key})))

        def reported(pred):
            def check():
                ms = cloud.hub.device_status(dev).modules
                tele = {n: (ms[n].telemetry if n in ms else {}) for n in quotas}
                return tele if all(pred(t) for t in tele.values()) else None
            return check

        # the hub is up: each collector's twin tells what it keeps and what it dropped, while the studio is away
        spooled = wait_for(reported(lambda t: t.get("captured") == count and t.get("state") == "uploading"
                                    and "unreachable" in (t.get("last_error") or "")), timeout=90,
                           what="the collectors' spool counts in their module twins")
        for name, (_, _, keep) in quotas.items():
            t = spooled[name]
            assert t["uploaded"] == 0 and t["pending"] + t["dropped"] == count, (name, t)
            assert t["pending"] == keep if keep is not None else 1 <= t["pending"] < count, (name, t)
            log = (cloud.workspace / "devices" / dev / "modules" / name / "module.log").read_text(errors="replace")
            assert (t["dropped"] > 0) == ("spool over its bound: dropped" in log), "a drop is logged, never silent"
        gate.open()
        done = wait_for(reported(lambda t: t.get("state") == "done" and t.get("pending") == 0), timeout=60,
                        what="the spools drained")
    finally:
        fleet.stop_devices(cloud.workspace, [dev])
        gate.close()
    samples = cloud.studio.samples(device=dev)
    counts: dict[str, dict[str, int]] = {}
    for name, (label, _, _) in quotas.items():
        indexes = sorted(s.metadata["frame_index"] for s in samples if s.label == label)
        kept = spooled[name]["pending"]
        # the oldest were dropped: what arrives is the newest `kept` frames, each once
        assert indexes == list(range(count - kept, count)), (name, indexes)
        assert done[name]["dropped"] == count - kept and done[name]["uploaded"] + done[name]["duplicates"] == kept
        counts[name] = {"captured": count, "spooled": kept, "dropped_reported": done[name]["dropped"],
                        "in_studio": len(indexes), "lost_unaccounted": count - len(indexes) - done[name]["dropped"]}
    print("drill 2:", counts)
    assert all(c["lost_unaccounted"] == 0 for c in counts.values())
