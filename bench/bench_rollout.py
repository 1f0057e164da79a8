"""A deployment rolled out over MQTT: from `create_deployment` until every device reports the new module running.

A real local cloud and real edge agents (`helpers.device.agent.EdgeAgent`: the same reconcile
loop and the same `azure-iot-device` MQTT client as `python -m helpers.device.agent`). Each
round creates an at-scale deployment (service SDK, `LocalHub.create_deployment`) with a higher
priority than the last, targeting the fleet by tag; its one module is a new `version` of a
trivial process module (a `sleep`, through the process runtime's `EDGELOOP_START_SH`, so module
start-up costs nothing and no container engine is needed). Per device, the time from the call
until

  applied   the hub's deployment evaluation wrote the new content into the `$edgeAgent` twin;
  running   the hub holds the agent's report of the module at that version with
            `runtimeStatus: running` (push to the device, validate, reconcile, start, report).

The observer reads the hub's SQLite file (read-only, every 20 ms), so it adds no requests.
Under the hub's `fast` timing a deployment is evaluated at once; under `azure` about 30 s after
the change (IoT Hub's pace, `DeploymentTiming.azure()`), which dominates.

Up to `--process-max` devices each agent is its own process (`helpers.device.fleet`, what
notebooks start); above it the agents run as threads, `--workers` processes of them (this
script's `--agent-worker` mode builds each `EdgeAgent` as the agent's CLI does): 100 agent
processes would mostly measure 2 cores starting 100 interpreters.

    .venv/bin/python bench/bench_rollout.py [--devices 10 100] [--timing fast azure] [--rounds 3]

Writes bench/results/rollout_<devices>.json per fleet size (`--name` is the prefix).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.device import fleet
from helpers.protocol.manifest import build_manifest, module_spec

IMAGE = "local/edgeloop-device:process"
MODULE = "probe"
TRIVIAL_MODULE = "#!/bin/sh\n# the rollout bench's module: starts at once, stops on SIGTERM\nexec sleep 86400\n"
AGENT_ARGS = ["--stop-timeout", "5", "--hub-backoff-max", "2"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values_ms: list[float]) -> dict:
    return {"samples": len(values_ms), "p50_ms": round(statistics.median(values_ms), 1),
            "p95_ms": round(percentile(values_ms, 0.95), 1), "max_ms": round(max(values_ms), 1)}


def observe(db: Path, devices: list[str], version: str) -> dict[str, tuple[bool, bool]]:
    """device -> (the hub wrote `version` into its `$edgeAgent` desired, the agent reported it running)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT device_id, desired, reported FROM modules WHERE module_id='$edgeAgent'").fetchall()
    finally:
        conn.close()
    wanted, out = set(devices), {}
    for device_id, desired, reported in rows:
        if device_id not in wanted:
            continue
        d = (json.loads(desired or "{}").get("modules") or {}).get(MODULE) or {}
        r = (json.loads(reported or "{}").get("modules") or {}).get(MODULE) or {}
        out[device_id] = (d.get("version") == version, r.get("version") == version and r.get("runtimeStatus") == "running")
    return out


def observe_module(db: Path, device: str, module: str) -> bool:
    """Whether the hub holds `device`'s report of `module` with `runtimeStatus: running`."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT reported FROM modules WHERE module_id='$edgeAgent' AND device_id=?", (device,)).fetchone()
    finally:
        conn.close()
    m = ((json.loads(row[0] or "{}") if row else {}).get("modules") or {}).get(module) or {}
    return m.get("runtimeStatus") == "running"


# ------------------------------------------------------------------ agents as threads (--agent-worker)
def agent_worker(ca_file: str, rest_url: str, workdirs: str) -> int:
    """Run one `EdgeAgent` per device read from stdin (`[[device_id, connection_string], ...]`) as threads."""
    from helpers.config import Secret
    from helpers.device.agent.cli import setup_logging
    from helpers.device.agent.core import EdgeAgent
    from helpers.device.agent.state import AgentConfig
    from helpers.device.hub_link import EDGE_AGENT, AgentLink, HubEndpoint, ModuleRegistry

    setup_logging("WARNING")
    agents = []
    for device_id, raw in json.loads(sys.stdin.read()):
        cs = Secret(raw, "IOTEDGE_CONNECTION_STRING")
        endpoint = HubEndpoint.for_connection_string(cs, ca_file=ca_file, rest_url=rest_url)
        registry = ModuleRegistry(cs, endpoint, timeout=10)
        config = AgentConfig(workdir=Path(workdirs) / device_id, runtime="process", stop_timeout_s=5, hub_backoff_max_s=2)
        agents.append(EdgeAgent(lambda r=registry, e=endpoint: AgentLink(r.connection_string(EDGE_AGENT), e),
                                registry.connection_string, endpoint.ca_bundle_path(), device_id, config))
    stop = threading.Event()

    def on_signal(*_):
        for a in agents:
            a.request_stop()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=a.run, name=f"agent-{a.device_id}", daemon=True) for a in agents]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(30)
    return 0


class ThreadFleet:
    """`n` agents as threads in `workers` processes; stop() SIGTERMs them (each agent stops its module)."""

    def __init__(self, hub, ws: Path, devices: list[str], tags: dict, workers: int, start_sh: Path):
        self.ws, self.devices, self.procs = ws, devices, []
        creds = []
        for d in devices:
            hub.create_edge_device(d, tags=tags, exist_ok=True)
            raw = hub.connection_string(d)
            creds.append([d, raw.get_secret_value() if hasattr(raw, "get_secret_value") else str(raw)])
        hub_args = fleet.hub_args(creds[0][1], ws)
        ca_file, rest_url = hub_args[1], hub_args[3]
        env = {**os.environ, "EDGELOOP_START_SH": str(start_sh)}
        root = fleet.devices_dir(ws)
        for k in range(workers):
            part = creds[k::workers]
            if not part:
                continue
            log = open(root.parent / f"agent-worker-{k}.log", "ab")  # noqa: SIM115 - the child holds it
            proc = subprocess.Popen([sys.executable, __file__, "--agent-worker", ca_file, rest_url, str(root)],
                                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(REPO), start_new_session=True)
            log.close()
            proc.stdin.write(json.dumps(part).encode())  # the connection strings travel on a pipe, not argv
            proc.stdin.close()
            self.procs.append(proc)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        fleet.stop_devices(self.ws, self.devices)  # kills any module a killed worker left (from agent.json)


# ------------------------------------------------------------------ one fleet size
def run(hub, ws: Path, n: int, timing: str, rounds: int, args, rng: random.Random, start_sh: Path) -> dict:
    db = ws / "localcloud" / "state.db"
    tag = f"rollout-{timing}-{n}-{rng.randrange(10**6):06d}"
    devices = [f"roll-{timing}-{n}-{i:03d}" for i in range(n)]
    mode = "process" if n <= args.process_max else "threads"
    t_start = time.perf_counter()
    if mode == "process":
        os.environ["EDGELOOP_START_SH"] = str(start_sh)  # the agents inherit it; their modules run the sleep
        fleet.start_devices(hub, devices, ws, tags={"bench": tag}, runtime="process", agent_args=AGENT_ARGS)
        stopper = lambda: fleet.stop_devices(ws, devices)  # noqa: E731
    else:
        tf = ThreadFleet(hub, ws, devices, {"bench": tag}, args.workers, start_sh)
        stopper = tf.stop
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # every agent connected and reported (417: no deployment yet)
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            rows = conn.execute("SELECT device_id, reported FROM modules WHERE module_id='$edgeAgent'").fetchall()
            conn.close()
            up = {d for d, r in rows if d in set(devices) and (json.loads(r or "{}").get("lastDesiredStatus") or {}).get("code")}
            if len(up) == n:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"only {len(up)} of {n} agents reported within 180 s; see {ws}/devices/*/agent.log")
        fleet_up_s = round(time.perf_counter() - t_start, 1)
        print(f"{n} agents ({mode}) up in {fleet_up_s} s", flush=True)
        per_round, applied_all, running_all = [], [], []
        for k in range(rounds):
            version = f"1.{k}.{rng.randrange(1000)}"
            manifest = build_manifest([module_spec(MODULE, IMAGE, env={"MODE": "collect", "ROUND": str(k)},
                                                   version=version)])
            name = f"{tag}-r{k}"
            t0 = time.perf_counter()
            hub.create_deployment(name, manifest, f"tags.bench='{tag}'", priority=10 + k)
            applied: dict[str, float] = {}
            running: dict[str, float] = {}
            deadline = time.monotonic() + args.round_timeout
            while len(running) < n and time.monotonic() < deadline:
                seen = observe(db, devices, version)
                now = (time.perf_counter() - t0) * 1000
                for d, (a, r) in seen.items():
                    if a and d not in applied:
                        applied[d] = now
                    if r and d not in running:
                        running[d] = now
                time.sleep(0.02)
            if len(running) < n:
                raise SystemExit(f"round {k}: {n - len(running)} of {n} devices did not report {MODULE} {version} "
                                 f"running within {args.round_timeout} s")
            res = {"round": k, "deployment": name, "applied": summary(list(applied.values())),
                   "running": summary(list(running.values())), "load_avg": os.getloadavg()}
            print(json.dumps(res), flush=True)
            per_round.append(res)
            applied_all += applied.values()
            running_all += running.values()
        return {"devices": n, "timing": timing, "agents": mode, "workers": args.workers if mode == "threads" else n,
                "rounds": rounds, "fleet_up_s": fleet_up_s, "running": summary(running_all),
                "applied": summary(applied_all), "per_round": per_round}
    finally:
        stopper()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[10, 100])
    p.add_argument("--timing", nargs="+", default=["fast", "azure"], choices=["fast", "azure"],
                   help="the hub's deployment evaluation timing (`python -m helpers.localcloud start --deployment-timing`)")
    p.add_argument("--rounds", type=int, default=3, help="deployments per fleet size and timing")
    p.add_argument("--azure-rounds", type=int, default=1, help="rounds under the azure timing (each waits ~30 s)")
    p.add_argument("--process-max", type=int, default=20, help="above this many devices, agents run as threads")
    p.add_argument("--workers", type=int, default=4, help="processes holding the agent threads")
    p.add_argument("--round-timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="rollout")
    p.add_argument("--agent-worker", nargs=3, metavar=("CA_FILE", "REST_URL", "DEVICES_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.agent_worker:
        raise SystemExit(agent_worker(*args.agent_worker))
    from helpers.hub.local import LocalHub
    from helpers.localcloud import ensure_running, stop

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: each `finally` stops what it started
    rng = random.Random(args.seed)
    load_start = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load {load_start}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        start_sh = Path(tmp) / "start.sh"
        start_sh.write_text(TRIVIAL_MODULE)
        for timing in args.timing:
            ws = Path(tmp) / f"ws-{timing}"
            ensure_running(ws, hub_settings={"deployment_timing": timing})
            try:
                hub = LocalHub(ws)
                for n in args.devices:
                    rounds = args.rounds if timing == "fast" else args.azure_rounds
                    res = run(hub, ws, n, timing, rounds, args, rng, start_sh)
                    print(json.dumps({k: res[k] for k in ("devices", "timing", "agents", "running", "applied")}), flush=True)
                    results.append(res)
            finally:
                stop(ws)
    for n in args.devices:  # one file per fleet size: `make bench` re-measures 10 without losing 100
        path = write_result(f"{args.name}_{n}", {
            "what": "time from create_deployment (service SDK) until the hub holds each device's $edgeAgent report of "
                    "the new module version running (MQTT push, validate, reconcile, module start, report, PUBACK); "
                    "'applied': until the hub's evaluation wrote the content into the device's twin",
            "note": f"agents: up to {args.process_max} devices one process each (helpers.device.fleet); above, "
                    f"EdgeAgent threads in {args.workers} processes (same reconcile loop and azure-iot-device client, "
                    "built as the agent CLI builds it). The module is a trivial process module (sh: exec sleep) so its "
                    "start-up costs nothing; 'azure' timing waits ~30 s before evaluating a new deployment, as IoT "
                    "Hub does",
            "params": {k: v for k, v in vars(args).items() if k != "agent_worker"},
            "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
            "results": [r for r in results if r["devices"] == n]})
        print(f"wrote {path}")

if __name__ == "__main__":
    main()
