"""Service-SDK call latency against the local IoT Hub stand-in (HTTPS, the workspace CA).

A real local cloud; the client is `helpers.hub.IoTHub` on `azure-iot-hub` (what the notebooks
use). For each operation the rollout board and the notebooks call, `--calls` sequential calls
are timed end to end (SDK serialisation, TLS, SAS signing, the stand-in, SQLite): get_twin,
update_tags, a query with 3 pages of devices, device_status (3 twin reads), and
list_deployments with their metrics, with `--devices` IoT Edge devices and one deployment.

    .venv/bin/python bench/bench_hub_sdk.py [--devices 20] [--calls 50]

Writes bench/results/hub_sdk_latency.json.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.hub.iothub import IoTHub
from helpers.localcloud import ensure_running, stop
from helpers.protocol.manifest import build_manifest, module_spec


def timed(fn: Callable[[], Any], calls: int) -> dict[str, float]:
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2), "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
            "mean_ms": round(statistics.fmean(samples), 2), "calls": calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--calls", type=int, default=50)
    args = ap.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="bench-hub-")) / "ws"
    ensure_running(ws)
    try:
        hub = IoTHub.local(ws)
        devices = [f"pi-{i}" for i in range(args.devices)]
        for d in devices:
            hub.create_edge_device(d, tags={"lab": "bench"})
        hub.create_deployment("bench-1", build_manifest([module_spec("collector", "edgeloop-device:1")]), "tags.lab='bench'")
        page = max(1, args.devices // 3 + 1)
        results = {
            "get_twin": timed(lambda: hub.get_twin(devices[0]), args.calls),
            "update_tags": timed(lambda: hub.update_tags(devices[0], {"n": time.time()}), args.calls),
            f"query_{args.devices}_devices_3_pages": timed(lambda: hub.query("SELECT * FROM devices", page_size=page), args.calls),
            "device_status": timed(lambda: hub.device_status(devices[0]), args.calls),
            "list_deployments_with_metrics": timed(hub.list_deployments, args.calls),
        }
        path = write_result("hub_sdk_latency", {"devices": args.devices, "transport": "HTTPS to the stand-in on loopback",
                                               "results": results})
        for name, r in results.items():
            print(f"{name:40s} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms")
        print(f"wrote {path}")
    finally:
        stop(ws)


if __name__ == "__main__":
    main()
