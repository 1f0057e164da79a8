"""fomo-box training with and without augmenting the next batch on a second thread, same data and seed.

`TrainParams.prefetch` (by default on with one torch thread, off with more) prepares batch k+1 (OpenCV warps, colour jitter, box
encoding: about a fifth of an epoch at 160 px) while torch trains on batch k. The random draws
happen in the same order either way, so both runs must give the same best epoch and validation F1;
only the time may differ. Workshop-size synthetic set (default 120 apple renders, 320x320, 96
training / 24 validation), the workshop recipe (160 px, 40 epochs, batch 16), OMP_WAIT_POLICY=PASSIVE
as the pipeline's kernels and training jobs have it. The two settings alternate (`--reps` each), so a
change of the machine's load hits both; compare the ratio.

    nice -n 5 .venv/bin/python bench/bench_train_prefetch.py [--threads 2] [--reps 2] [--epochs 40]
Writes bench/results/train_prefetch_t<threads>.json with the load beside each run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as helpers.pipeline sets it for the kernels

from common import write_result  # noqa: E402,I001  (bench/ is the script's folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from helpers.sim.scenes import render_dataset, story_scenes
    from helpers.train.fomo import train_fomo
    from helpers.train.trainer import TrainParams

    items = render_dataset(args.images, story_scenes("apples"), (320, 320), seed=args.seed)
    n_val = int(round(args.images * 0.2))
    train, val = items[n_val:], items[:n_val]
    runs = []
    for rep in range(args.reps):
        for prefetch in (False, True) if rep % 2 == 0 else (True, False):
            params = TrainParams(input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size,
                                 seed=args.seed, threads=args.threads, prefetch=prefetch)
            load = os.getloadavg()
            t0 = time.perf_counter()
            res = train_fomo(train, val, ["apple"], params, progress=False)
            wall = time.perf_counter() - t0
            runs.append({"prefetch": prefetch, "rep": rep, "wall_s": round(wall, 2), "train_time_s": round(res.train_time_s, 2),
                         "best_epoch": res.best_epoch, "val_f1": round(res.val_f1, 4),
                         "load_avg_before": [round(x, 2) for x in load], "load_avg_after": [round(x, 2) for x in os.getloadavg()]})
            print(runs[-1], flush=True)
    by = {p: [r["train_time_s"] for r in runs if r["prefetch"] is p] for p in (False, True)}
    same = len({(r["best_epoch"], r["val_f1"]) for r in runs}) == 1
    summary = {"serial_median_s": statistics.median(by[False]), "prefetch_median_s": statistics.median(by[True]),
               "ratio_prefetch_over_serial": round(statistics.median(by[True]) / statistics.median(by[False]), 3),
               "same_model": same}
    print(summary)
    print(write_result(f"train_prefetch_t{args.threads}", {
        "what": "fomo-box training time with and without preparing the next batch on a second thread "
                "(TrainParams.prefetch), alternating, same data and seed",
        "params": vars(args), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
