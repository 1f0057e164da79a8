"""`make test` on a clean clone, timed: what CI runs, measured the way CI sees it.

Clones the committed HEAD into a fresh folder beside this checkout (so `../shared` is beside it
as on CI), runs `make test` there with CI=true (what `.ci/run` runs, plus `--durations` so the
slowest tests are named), and records the wall time, pytest's own time, the passed / skipped /
failed counts, the load average at the start and at the end, and the slowest tests, and the CPU seconds the machine spent over the run (/proc/stat)
and per test file (`cpu_by_file`: the tests' own and their processes' CPU). The clone is
removed afterwards (also when the run fails); processes the suite starts are its own to stop (its
session-end check fails the run on any left).

    .venv/bin/python bench/bench_suite.py [--workers 4] [--durations 25] [--keep]
Writes bench/results/suite.json. Takes 20-25 minutes on 2 cores and needs both of them: run it
on an otherwise idle machine and read the recorded load beside the figure.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_result  # noqa: I001  (bench/ is the script's folder)

SUMMARY = re.compile(r"^=*\s*(?P<body>\d+ (?:passed|failed|skipped|errors?)\b.*?) in (?P<secs>[\d.]+)s", re.M)
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")
DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)$")


def parse(output: str) -> dict:
    """Counts, pytest's time and the slowest tests from `make test`'s output."""
    found = SUMMARY.findall(output)
    if not found:
        raise ValueError("no pytest summary line in the output: the run did not reach pytest (see its tail)")
    body, secs = found[-1]
    counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in COUNT.findall(body)}
    slowest = [{"seconds": float(m.group(1)), "phase": m.group(2), "test": m.group(3)}
               for m in map(DURATION.match, output.splitlines()) if m]
    return {"pytest_s": float(secs), "counts": counts, "slowest": slowest}


def cpu_times() -> tuple[float, float]:
    """(busy, total) seconds of every core since boot, from /proc/stat (busy: all but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / hz, sum(fields) / hz


def cpu_by_file(folder: Path, top: int) -> list[dict]:
    """The CPU seconds each test file cost (tests/conftest.py writes them with EDGELOOP_CPU_PROFILE set):
    its tests' own CPU in the xdist worker plus the processes they started, most first."""
    own: dict[str, float] = {}
    started: dict[str, float] = {}
    for f in folder.glob("worker-*.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            own[rec["file"]] = own.get(rec["file"], 0.0) + rec["own_cpu_s"]
    if (folder / "started.json").is_file():
        for rec in json.loads((folder / "started.json").read_text()):
            started[rec["file"]] = started.get(rec["file"], 0.0) + rec["cpu_s"]
    rows = [{"file": k, "cpu_s": round(own.get(k, 0.0) + started.get(k, 0.0), 1), "in_worker_s": round(own.get(k, 0.0), 1),
             "started_processes_s": round(started.get(k, 0.0), 1)} for k in set(own) | set(started)]
    return sorted(rows, key=lambda r: -r["cpu_s"])[:top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=None, help="PYTEST_WORKERS (default: the Makefile's)")
    ap.add_argument("--durations", type=int, default=25)
    ap.add_argument("--keep", action="store_true", help="keep the clone (its path is printed)")
    args = ap.parse_args()

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    clone = REPO.parent / f".bench-suite-{os.getpid()}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    cmd = ["make", "test", f"PYTEST_ARGS=-q -ra --durations={args.durations}"]
    if args.workers is not None:
        cmd.append(f"PYTEST_WORKERS={args.workers}")
    profile = Path(tempfile.mkdtemp(prefix="suite-cpu-"))
    load_start = os.getloadavg()
    cpu_start = cpu_times()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=clone, env={**os.environ, "CI": "true", "EDGELOOP_CPU_PROFILE": str(profile)}, capture_output=True, text=True)
        wall = time.monotonic() - t0
        output = proc.stdout + proc.stderr
        (clone.parent / f"{clone.name}.log").write_text(output)
    finally:
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)
    load_end = os.getloadavg()
    cpu_end = cpu_times()
    busy, total = cpu_end[0] - cpu_start[0], cpu_end[1] - cpu_start[1]
    try:
        result = parse(output)
    except ValueError as exc:
        print(f"error: {exc}\n{output[-3000:]}", file=sys.stderr)
        return 1
    print(write_result("suite", {
        "what": "`make test` (CI=true) on a clean clone of HEAD beside ../shared: everything it installs, the "
                "shape rules, then pytest on the Makefile's workers",
        "commit_tested": head, "command": " ".join(cmd), "exit_code": proc.returncode, "wall_s": round(wall, 1),
        "load_avg_start": list(load_start), "load_avg_end": list(load_end),
        # the whole machine's cores over the run: how much of them the suite kept busy
        "cpu_busy_s": round(busy, 1), "cpu_busy_fraction": round(busy / total, 3) if total else None,
        "cpus": os.cpu_count(), **result,
        # where the CPU went, per test file (tests/conftest.py, EDGELOOP_CPU_PROFILE): what to cut first
        "cpu_by_file": cpu_by_file(profile, args.durations)}))
    shutil.rmtree(profile, ignore_errors=True)
    print(f"make test: exit {proc.returncode}, {wall:.0f} s in all, pytest {result['pytest_s']:.0f} s, {result['counts']}, "
          f"cores busy {busy / max(total, 1e-9):.0%} ({busy:.0f} CPU-s)")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
