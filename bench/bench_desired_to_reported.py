"""Desired change -> reported status over IoT Hub's device protocol (MQTT), for 1 and N devices.

A real local cloud and real edge agent processes (`helpers.device.fleet`, the MQTT agent on
`azure-iot-device`). Each round changes the `$edgeAgent` desired properties of every device at
once through the service SDK (`IoTHub.update_module_desired`) and measures, per device, the time
until the hub holds the agent's report of that `$version` (`lastDesiredVersion`, code 200):
push to the device, validation, reconcile, report, acknowledgement. The deployment has no
modules, so module start-up time is not part of it. The observer reads the hub's SQLite file
every 5 ms (read-only), so it adds no requests.

    .venv/bin/python bench/bench_desired_to_reported.py [--devices 1 20] [--rounds 20]

Writes bench/results/mqtt_desired_to_reported.json.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from common import write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.device import fleet
from helpers.hub.local import LocalHub
from helpers.localcloud import ensure_running, stop
from helpers.protocol.manifest import build_manifest


def reported_versions(db: Path, devices: list[str]) -> dict[str, tuple[int | None, int | None]]:
    """device -> (lastDesiredVersion, lastDesiredStatus.code) of its `$edgeAgent` module twin."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT device_id, reported FROM modules WHERE module_id='$edgeAgent'").fetchall()
    finally:
        conn.close()
    out = {}
    wanted = set(devices)
    for device_id, reported in rows:
        if device_id in wanted:
            r = json.loads(reported or "{}")
            out[device_id] = (r.get("lastDesiredVersion"), (r.get("lastDesiredStatus") or {}).get("code"))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(ws: Path, n: int, rounds: int) -> dict:
    hub = LocalHub(ws)
    db = ws / "localcloud" / "state.db"
    devices = [f"bench-{n}-{i:02d}" for i in range(n)]
    fleet.start_devices(hub, devices, ws, agent_args=["--stop-timeout", "5"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # every agent connected and reported "no deployment"
            rep = reported_versions(db, devices)
            if len(rep) == n and all(code == 417 for _, code in rep.values()):
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"agents did not report within 120 s: {reported_versions(db, devices)}")
        base = build_manifest([])["$edgeAgent"]["properties.desired"]
        latencies: list[float] = []
        for k in range(rounds):
            desired = json.loads(json.dumps(base))
            desired["runtime"]["settings"]["minDockerVersion"] = f"v1.25.{k}"  # any change bumps $version
            sent: dict[str, tuple[float, int]] = {}
            for d in devices:
                t0 = time.perf_counter()
                twin = hub.update_module_desired(d, "$edgeAgent", desired, replace=True)
                sent[d] = (t0, twin.desired_version)
            pending = dict(sent)
            deadline = time.monotonic() + 60
            while pending and time.monotonic() < deadline:
                rep = reported_versions(db, list(pending))
                now = time.perf_counter()
                for d, (version, code) in rep.items():
                    if d in pending and version == pending[d][1] and code == 200:
                        latencies.append((now - pending.pop(d)[0]) * 1000)
                time.sleep(0.005)
            if pending:
                raise SystemExit(f"round {k}: no report of the new version from {sorted(pending)} in 60 s")
        return {"devices": n, "rounds": rounds, "samples": len(latencies),
                "p50_ms": round(statistics.median(latencies), 1), "p95_ms": round(percentile(latencies, 0.95), 1),
                "max_ms": round(max(latencies), 1), "mean_ms": round(statistics.fmean(latencies), 1)}
    finally:
        fleet.stop_devices(ws, devices)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 20])
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        ws = Path(tmp) / "ws"
        ensure_running(ws)
        try:
            for n in args.devices:
                res = run(ws, n, args.rounds)
                print(res, flush=True)
                results.append(res)
        finally:
            stop(ws)
    path = write_result("mqtt_desired_to_reported", {
        "what": "time from a $edgeAgent desired-property change (service SDK call) to the agent's report of that "
                "$version held by the hub (MQTT push, validate, reconcile, report, PUBACK); deployment without modules",
        "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
