"""The whole loop's wall time per notebook, smoke and workshop profiles, with the machine's load beside it.

The figures are those `python -m helpers.pipeline` writes into `<out>/summary.json` (papermill
runs of the six notebooks in order on one workspace: per notebook `duration_s` and status, the run's
`total_s`, the load average at its start and end). By default this script reads the summaries
that exist (`--summaries`, default out/*/summary.json: `make demo` writes out/demo/, `make
notebooks` out/reference/) and keeps the newest per profile, dated by the file's modification
time. `--run smoke` (or `--run workshop`, 7+ minutes of both cores) first runs the pipeline
itself into a fresh temporary workspace (`--fresh`, same `--seed`), bounded by `--timeout`, and
uses that summary for its profile.

    .venv/bin/python bench/bench_loop.py                    # from existing summaries
    .venv/bin/python bench/bench_loop.py --run smoke        # ~4 minutes at low load

Writes bench/results/loop.json (`--name`).
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
from pathlib import Path

from common import REPO, write_result  # noqa: I001  (bench/ is the script's folder)


def read_summary(path: Path, measured_here: bool = False) -> dict:
    """One pipeline summary reduced to its timings; raises SystemExit naming a file that is not one."""
    try:
        doc = json.loads(path.read_text())
        notebooks = [{"notebook": n["notebook"], "status": n["status"], "duration_s": n["duration_s"]}
                     for n in doc["notebooks"]]
        profile, total = doc["profile"], doc["total_s"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path} is not a pipeline summary.json ({exc!r}): pass files that "
                         "`python -m helpers.pipeline` wrote") from None
    return {"profile": profile, "file": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
            "date": dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(timespec="seconds"),
            "date_from": "this run" if measured_here else "file modification time",
            "total_s": total, "ok": doc.get("ok"), "load_avg": doc.get("load_avg"), "seed": doc.get("seed"),
            "runtime_backend": doc.get("backend"), "notebooks": notebooks,
            "failed_checks": len(doc.get("failed_checks") or [])}


def run_pipeline(profile: str, seed: int, timeout: float, tmp: Path) -> Path:
    """`python -m helpers.pipeline --profile PROFILE --fresh` into `tmp`; its summary.json."""
    ws, out = tmp / "ws", tmp / "out"
    cmd = [sys.executable, "-m", "helpers.pipeline", "--profile", profile, "--workspace", str(ws), "--out", str(out),
           "--seed", str(seed), "--fresh"]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=str(REPO), start_new_session=True)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        subprocess.run([sys.executable, "-m", "helpers.pipeline", "--workspace", str(ws), "--stop"], cwd=str(REPO),
                       timeout=120, check=False)
        raise SystemExit(f"the {profile} pipeline did not finish within {timeout:.0f} s (--timeout)") from None
    summary = out / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"the {profile} pipeline exited with {code} and wrote no {summary}")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--summaries", nargs="*", default=None, help="summary.json files (default: out/*/summary.json)")
    p.add_argument("--run", choices=["smoke", "workshop"], nargs="*", default=[],
                   help="run these profiles now (fresh workspace) instead of reading their old summaries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1500.0, help="seconds a --run pipeline may take")
    p.add_argument("--name", default="loop")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_start = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load {load_start}", flush=True)
    runs: dict[str, dict] = {}
    paths = [Path(s) for s in args.summaries] if args.summaries is not None else sorted(REPO.glob("out/*/summary.json"))
    for path in sorted(paths, key=lambda q: q.stat().st_mtime):  # the newest per profile wins
        s = read_summary(path)
        runs[s["profile"]] = s
    for profile in args.run:
        with tempfile.TemporaryDirectory(prefix=f"bench-loop-{profile}-") as tmp:
            runs[profile] = read_summary(run_pipeline(profile, args.seed, args.timeout, Path(tmp)), measured_here=True)
            runs[profile]["file"] = f"(a run of this script, --run {profile})"
    if not runs:  # a clean clone has no out/: `make bench` goes on, the last loop.json stays what it was
        print("no pipeline summary found (out/*/summary.json): loop.json left as it is; run `make demo`, "
              "`python -m helpers.pipeline --profile smoke`, or pass --run smoke", flush=True)
        return
    for s in runs.values():
        print(s["profile"], s["total_s"], "s, load", s["load_avg"], {n["notebook"]: n["duration_s"] for n in s["notebooks"]})
    path = write_result(args.name, {
        "what": "wall time per notebook of `python -m helpers.pipeline` (papermill, the six notebooks in order), per "
                "profile, with the load average at the run's start and end",
        "params": vars(args), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "results": [runs[k] for k in sorted(runs)]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
