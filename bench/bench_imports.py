"""CPU seconds a fresh interpreter spends importing each process's entry module, with and without
the Earley parser rfc3987-syntax builds when jsonschema imports it (what every agent, local cloud
and CLI process paid before `helpers.protocol.manifest.validate` hid that optional package).

"before" imports `rfc3987_syntax` first and then the module (the cost jsonschema's import used to
add), "after" the module alone; both in the same run, `--repeat` times each, the median kept.

    .venv/bin/python bench/bench_imports.py [--repeat 5]
Writes bench/results/imports.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys

from common import write_result  # noqa: I001  (bench/ is the script's folder)

MODULES = {
    "helpers.device.agent": "the device agent (one per simulated device)",
    "helpers.localcloud.app": "the local cloud service",
    "helpers.localcloud.__main__": "python -m helpers.localcloud (start, status, stop...)",
}


def cpu_of(code: str) -> float:
    """User + system CPU seconds of `python -c code` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    load_start = os.getloadavg()
    rows = {}
    for module, what in MODULES.items():
        before = [cpu_of(f"import rfc3987_syntax, {module}") for _ in range(args.repeat)]
        after = [cpu_of(f"import {module}") for _ in range(args.repeat)]
        rows[module] = {"what": what, "before_cpu_s": round(statistics.median(before), 3),
                        "after_cpu_s": round(statistics.median(after), 3),
                        "ratio": round(statistics.median(after) / statistics.median(before), 3)}
        print(f"{module}: {rows[module]['before_cpu_s']:.2f} -> {rows[module]['after_cpu_s']:.2f} CPU-s")
    print(write_result("imports", {"what": "CPU seconds of importing each process's entry module in a fresh "
                                           "interpreter (median), before and after hiding rfc3987-syntax from jsonschema",
                                   "repeat": args.repeat, "modules": rows, "load_avg_start": list(load_start),
                                   "load_avg_end": list(os.getloadavg())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
