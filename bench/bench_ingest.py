"""Ingestion throughput: 1, 4 and 8 real collector processes uploading to the local studio at once.

Each collector is the device module as the agent runs it (`sh start.sh`, `MODE=collect`): the
synthetic camera (its own `CAMERA_SEED`, so every frame differs) captures `--frames` frames into
the on-disk spool at `--rate-hz`, the uploader sends them through `IngestionClient` with
`x-disallow-duplicates`. Measured per collector count, on one local cloud:

  uploads/s      studio side: samples stored per second between the first and the last sample's
                 `created_at`; and end to end: samples / (all collectors done - processes started);
  lost           frames a collector captured that the studio does not hold (captured - distinct
                 content hashes stored for that device), must be 0;
  duplicated     samples stored more than once (stored - distinct hashes), must be 0;
  peak RSS       VmHWM of each collector process and of the local cloud (`bench_memory.py` reads it).

The script exits 1 when any frame was lost or duplicated, or a collector did not finish.

    .venv/bin/python bench/bench_ingest.py [--collectors 1 4 8] [--frames 40] [--seed 0]

Writes bench/results/ingest.json (`--name`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_result  # noqa: I001  (bench/ is the script's folder)


def status_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak) and VmRSS of a process, in MB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: round(int(text.split(f"{k}:")[1].split()[0]) / 1024, 1) for k in ("VmHWM", "VmRSS")}


def start_collector(workdir: Path, url: str, key: str, device: str, frames: int, rate_hz: float, seed: int,
                    size: str) -> subprocess.Popen:
    """One collector module process, environment as the agent's process runtime gives it."""
    env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1", "MODE": "collect",
           "STUDIO_URL": url, "EI_API_KEY": key, "MODULE_WORKDIR": str(workdir), "IOTEDGE_DEVICEID": device,
           "IOTEDGE_MODULEGENERATIONID": "bench", "CAMERA_SIZE": size, "CAMERA_SEED": str(seed),
           "SAMPLE_COUNT": str(frames), "RATE_HZ": str(rate_hz), "LABEL": "apple", "OMP_NUM_THREADS": "1"}
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "module.log", "ab") as log:
        return subprocess.Popen(["sh", str(REPO / "start.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(workdir), start_new_session=True)


def progress(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "reported.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def stop_collector(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_ingest(studio, url: str, cloud_pid: int, n: int, frames: int, rate_hz: float, seed: int, size: str,
               tmp: Path, timeout: float = 300.0) -> dict:
    """`n` collectors at once until every one is done; throughput, lost/duplicated, peak RSS."""
    key = studio.api_key.get_secret_value()
    devices = [f"ingest-{n}-{seed}-{i:02d}" for i in range(n)]
    workdirs = [tmp / f"c{n}-{i:02d}" for i in range(n)]
    t0 = time.perf_counter()
    procs = [start_collector(w, url, key, d, frames, rate_hz, seed * 1000 + n * 100 + i, size)
             for i, (w, d) in enumerate(zip(workdirs, devices, strict=True))]
    collector_peaks: list[float] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reps = [progress(w) for w in workdirs]
            if all(r.get("state") == "done" for r in reps):
                break
            dead = [d for d, p in zip(devices, procs, strict=True) if p.poll() is not None]
            if dead:
                raise SystemExit(f"collector(s) {dead} exited; see {tmp}/c{n}-*/module.log")
            time.sleep(0.05)
        else:
            raise SystemExit(f"{n} collectors not done within {timeout} s: {[progress(w) for w in workdirs]}")
        wall = time.perf_counter() - t0
        collector_peaks = [status_mb(p.pid)["VmHWM"] for p in procs]
        cloud_mem = status_mb(cloud_pid)
    finally:
        for p in procs:
            stop_collector(p)
    reps = [progress(w) for w in workdirs]
    per_device, stamps = [], []
    for d, r in zip(devices, reps, strict=True):
        samples = studio.samples(device=d)
        hashes = {s.sha256 for s in samples}
        stamps += [_ts(s.created_at) for s in samples if s.created_at]
        per_device.append({"device": d, "captured": r.get("captured"), "uploaded": r.get("uploaded"),
                           "resent_as_duplicate": r.get("duplicates"), "rejected": r.get("rejected"),
                           "dropped": r.get("dropped"), "stored": len(samples),
                           "lost": (r.get("captured") or 0) - len(hashes), "duplicated": len(samples) - len(hashes)})
    stored = sum(x["stored"] for x in per_device)
    span = max(stamps) - min(stamps) if len(stamps) > 1 else 0.0
    return {"collectors": n, "frames_each": frames, "stored": stored,
            "lost": sum(x["lost"] for x in per_device), "duplicated": sum(x["duplicated"] for x in per_device),
            "rejected": sum(x["rejected"] or 0 for x in per_device),
            "uploads_per_s_studio": round((stored - 1) / span, 1) if span > 0 else None,
            "uploads_per_s_end_to_end": round(stored / wall, 1), "wall_s": round(wall, 2),
            "collector_peak_rss_mb": {"max": max(collector_peaks), "min": min(collector_peaks)},
            "cloud_after": cloud_mem, "load_avg": os.getloadavg(), "per_device": per_device}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--collectors", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--frames", type=int, default=60, help="frames each collector captures and uploads")
    p.add_argument("--rate-hz", type=float, default=100.0,
                   help="capture rate of each collector (fast: the spool fills ahead of the uploader)")
    p.add_argument("--camera-size", default="160x120")
    p.add_argument("--seed", type=int, default=0, help="camera seeds derive from it")
    p.add_argument("--name", default="ingest")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from helpers.localcloud import ensure_running, stop
    from helpers.studio import get_studio

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: `finally` stops the collectors and the cloud
    load_start = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load {load_start}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        ws = Path(tmp) / "ws"
        info = ensure_running(ws)
        try:
            studio = get_studio("local", workspace=ws)
            idle = status_mb(info["pid"])
            for n in args.collectors:
                res = run_ingest(studio, info["url"], info["pid"], n, args.frames, args.rate_hz, args.seed,
                                 args.camera_size, Path(tmp))
                print(json.dumps({k: v for k, v in res.items() if k != "per_device"}), flush=True)
                results.append(res)
        finally:
            stop(ws)
    bad = [r["collectors"] for r in results if r["lost"] or r["duplicated"]]
    path = write_result(args.name, {
        "what": "real collector processes (start.sh, MODE=collect, synthetic camera) uploading to the local studio at "
                "once: samples stored per second, lost and duplicated frames (must be 0)",
        "params": vars(args), "cloud_idle": idle, "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "results": results, "ok": not bad})
    print(f"wrote {path}")
    if bad:
        raise SystemExit(f"frames lost or duplicated with {bad} collectors: see {path}")


if __name__ == "__main__":
    main()
