"""Peak memory of each process of the loop: runner, collector, edge agent, local cloud; idle and under load.

Every figure is VmHWM (the kernel's peak resident set of that process; not `ru_maxrss`, which a
child started by fork+exec inherits from its parent) or VmRSS, read from /proc/<pid>/status:

  runner        `python -m helpers.device.module` (MODE=infer) with fomo-box and nanodet-ft on the
                folder camera at 20 Hz for `--seconds` (`bench_runner.runner_peak`, its models in
                out/runner-bench/; a missing one is skipped, saying how to make it);
  agent         a real `python -m helpers.device.agent` process (`helpers.device.fleet`), idle (no
                deployment), then running a real collector module (start.sh) that uploads `--frames`;
  collector     the collector processes of `bench_ingest.run_ingest` (4 at once, `--frames` each);
  local cloud   the service process: idle after start, after the ingest load, and after the
                hostile-device drill's cases sent to its MQTT endpoint over raw TLS
                (tests/integration/mqtt_raw.py): reported patches 300-5000 deep, non-finite numbers,
                patches over the 32 KB twin section, 1500 QoS 1 twin GETs never acknowledged (24 KB
                answers), and a 12 KB PNG claiming 10000x10000 pixels sent with the device key.

    .venv/bin/python bench/bench_memory.py [--seconds 15] [--frames 30] [--seed 0]

Writes bench/results/memory.json (`--name`).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

from bench_ingest import run_ingest, status_mb
from common import REPO, write_result  # noqa: I001  (bench/ is the script's folder)

sys.path.insert(0, str(REPO / "tests" / "integration"))  # the raw MQTT device of the hostile-device drill


def runner_peaks(models: Path, seconds: float, tmp: Path) -> dict:
    """Peak RSS of a real runner per model (bench_runner's measurement), on 640x480 synthetic-camera frames."""
    import cv2
    from bench_runner import runner_peak

    from helpers.sim.camera import SyntheticCamera

    frames = tmp / "frames"
    frames.mkdir()
    with SyntheticCamera(("apple", "banana"), size=(640, 480), seed=0) as cam:
        for i, frame in enumerate(cam.frames(24)):
            cv2.imwrite(str(frames / f"f{i:02d}.jpg"), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    out = {}
    for name in ("fomo-box", "nanodet-ft"):
        folder = models / name
        if not (folder / "model.json").is_file():
            out[name] = {"skipped": f"{folder} has no model: run bench/bench_runner.py once (it trains it)"}
            continue
        out[name] = runner_peak(folder, frames, seconds, tmp / "wd" / name)
        print("runner", name, out[name], flush=True)
    return out


def agent_peak(hub, studio, url: str, ws: Path, frames: int) -> dict:
    """A real agent process idle, then running a real collector module (start.sh) that uploads `frames` frames."""
    from bench_rollout import observe_module

    from helpers.device import fleet
    from helpers.device.runtime import read_json
    from helpers.protocol.manifest import build_manifest, collector_module, reveal_secrets

    os.environ.pop("EDGELOOP_START_SH", None)  # the real device entrypoint
    dev = "memory-agent"
    [device] = fleet.start_devices(hub, [dev], ws, tags={"bench": "memory"}, runtime="process",
                                   agent_args=["--stop-timeout", "5"])
    try:
        fleet.wait_online(hub, [dev], timeout=60)
        time.sleep(3)
        idle = status_mb(device.pid)
        manifest = build_manifest([collector_module("local/edgeloop-device:process", url, label="apple", count=frames,
                                                    rate_hz=50, camera=None, extra_env={"CAMERA_SIZE": "160x120"})],
                                  secrets={"EI_API_KEY": studio.api_key})
        hub.set_modules(dev, reveal_secrets(manifest))
        db = ws / "localcloud" / "state.db"
        reported = device.module_dir("collector") / "reported.json"
        deadline = time.monotonic() + 120
        while (read_json(reported) or {}).get("state") != "done" or not observe_module(db, dev, "collector"):
            if time.monotonic() > deadline:
                raise SystemExit(f"the agent's collector did not finish {frames} frames in 120 s: {device.log_tail()}")
            time.sleep(0.2)
        module_pid = ((read_json(device.workdir / "agent.json") or {}).get("modules", {}).get("collector") or {})["pid"]
        return {"idle": idle, "with_collector_module": status_mb(device.pid), "frames": frames,
                "collector_module": status_mb(module_pid), "collector_report": read_json(reported),
                "load_avg": os.getloadavg()}
    finally:
        fleet.stop_devices(ws, [dev])


def png_claiming(width: int, height: int, size: int = 12_000) -> bytes:
    """A PNG of about `size` bytes whose header claims `width` x `height` pixels (the decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 200, 9)[:size]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def hostile_drill(ws: Path, info: dict, studio) -> dict:
    """The hostile-device cases against the cloud's MQTT endpoint and studio; what each got back."""
    import requests
    from mqtt_raw import PINGREQ, OwnCloud, connected, create_device, read_until_closed, subscribe_packet, twin_topic_status

    from helpers.localcloud.mqtt import codec as mc

    cloud = OwnCloud(workspace=ws, url=info["url"], pid=info["pid"], info=info)
    key = create_device(cloud, "memory-hostile")
    answers: dict = {}

    def patch(payload: bytes, rid: str):
        sock = connected(cloud, "memory-hostile", key)
        try:
            sock.sendall(subscribe_packet(1, [("$iothub/twin/res/#", 0)]) + PINGREQ)
            read_until_closed(sock, 10, stop_at_pingresp=True)
            sock.sendall(mc.publish(f"$iothub/twin/PATCH/properties/reported/?$rid={rid}", payload) + PINGREQ)
            packets, end = read_until_closed(sock, 15, stop_at_pingresp=True)
        except OSError:
            return "closed"
        finally:
            sock.close()
        for first, body in packets:
            if first >> 4 == mc.PUBLISH:
                p = mc.decode(first, body)
                if f"$rid={rid}" in p.topic:
                    return twin_topic_status(p.topic)
        return end

    for depth in (300, 975, 990, 5000):
        answers[f"reported {depth} deep"] = patch(('{"h":' + '{"a":' * (depth - 1) + "1" + "}" * depth).encode(), f"d{depth}")
    for leaf in ("NaN", "Infinity", "1e999"):
        answers[f"reported {leaf}"] = patch(('{"h": ' + leaf + "}").encode(), "nan")
    answers["reported 32 KB + 10"] = patch(json.dumps({"h": "x" * (32 * 1024 + 10)}).encode(), "big")
    answers["12 x 8 KB reported patches"] = [patch(json.dumps({f"h{i}": "y" * 8000}).encode(), f"p{i}") for i in range(12)]
    for i in range(12):
        patch(json.dumps({f"h{i}": None}).encode(), f"c{i}")
    answers["24 KB reported section"] = patch(json.dumps({"bulk": "z" * 24_000}).encode(), "bulk")
    sock = connected(cloud, "memory-hostile", key, clean=False)  # 1500 QoS 1 twin GETs never acknowledged
    written = 0
    try:
        sock.sendall(subscribe_packet(1, [("$iothub/twin/res/#", 1)]))
        sock.settimeout(10)
        try:
            for i in range(1500):
                sock.sendall(mc.publish(f"$iothub/twin/GET/?$rid=f{i}", b""))
                written += 1
        except OSError:  # closed by the broker, or it stopped reading
            pass
        time.sleep(1.0)
        packets, end = read_until_closed(sock, 30)
    finally:
        sock.close()
    answers["QoS 1 flood"] = {"written": written, "answers": sum(1 for f, _ in packets if f >> 4 == mc.PUBLISH),
                              "ended": end}
    connected(cloud, "memory-hostile", key, clean=True).close()  # a clean session drops what was left
    r = requests.post(info["url"] + "/api/training/files", headers={"x-api-key": studio.device_key().get_secret_value()},
                      files={"data": ("bomb.png", png_claiming(10_000, 10_000), "image/png")}, timeout=60)
    answers["PNG claiming 10000x10000"] = r.status_code
    return answers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=str(REPO / "out" / "runner-bench"), help="fomo-box/ and nanodet-ft/ (bench_runner.py's)")
    p.add_argument("--seconds", type=float, default=15.0, help="how long each runner runs")
    p.add_argument("--collectors", type=int, default=4)
    p.add_argument("--frames", type=int, default=30, help="frames per collector in the ingest load")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="memory")
    args = p.parse_args()
    from helpers.hub.local import LocalHub
    from helpers.localcloud import ensure_running, stop
    from helpers.studio import get_studio

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: each `finally` stops what it started
    load_start = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load {load_start}", flush=True)
    out: dict = {"params": vars(args), "load_avg_start": load_start}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_s:
        tmp = Path(tmp_s)
        out["runner"] = runner_peaks(Path(args.models), args.seconds, tmp)
        ws = tmp / "ws"
        info = ensure_running(ws)
        try:
            time.sleep(2)
            cloud: dict = {"idle": status_mb(info["pid"])}
            hub, studio = LocalHub(ws), get_studio("local", workspace=ws)
            out["agent"] = agent_peak(hub, studio, info["url"], ws, args.frames)
            print("agent", out["agent"], flush=True)
            cloud["after_agent"] = status_mb(info["pid"])
            ingest = run_ingest(studio, info["url"], info["pid"], args.collectors, args.frames, 20.0, args.seed,
                                "160x120", tmp)
            out["collector"] = {"collectors": args.collectors, "frames_each": args.frames,
                                "peak_rss_mb": ingest["collector_peak_rss_mb"], "lost": ingest["lost"],
                                "duplicated": ingest["duplicated"], "load_avg": ingest["load_avg"]}
            print("collector", out["collector"], flush=True)
            cloud["after_ingest"] = ingest["cloud_after"]
            out["hostile_answers"] = hostile_drill(ws, info, studio)
            time.sleep(1)
            cloud["after_hostile_drill"] = status_mb(info["pid"])
            con = sqlite3.connect(f"file:{ws}/localcloud/state.db?mode=ro", uri=True)
            cloud["samples_stored"] = con.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            con.close()
            out["local_cloud"] = cloud
            print("local cloud", cloud, flush=True)
        finally:
            stop(ws)
    out.update({"what": "VmHWM (peak) / VmRSS in MB of each process of the loop, read from /proc/<pid>/status",
                "load_avg_end": os.getloadavg()})
    print(write_result(args.name, out))


if __name__ == "__main__":
    main()
