"""Training in the notebook's kernel vs. as the local studio's training job, same data and seed.

Notebooks 04 and 06 train through the Studio's job API (`EdgeImpulseStudio.set_impulse` +
`train`): on the local studio a background process (`helpers.localcloud.studio.train_job`) trains. This
measures, on a workshop-size synthetic set uploaded to a fresh local studio (default: 120 apple
images, 96 training / 24 testing, 320x320 renders, the workshop recipe: 160 px, 40 epochs, batch 16):

- direct: `run.train_detector` in this process (what the kernel did before), its training
  time and the wall time of snapshot + training + export;
- job: `studio.train(...)` from start to downloaded model: wall time, the job's own training
  time (card) and the overhead (process start, snapshot, export, evaluation, download),

and that both give the same best epoch, validation F1 and score threshold. This process sets
OMP_WAIT_POLICY=PASSIVE before torch is imported, as the pipeline's kernels have it.

    nice -n 5 .venv/bin/python bench/bench_train_job.py [--images 120] [--epochs 40] [--order job,direct]
Writes bench/results/train_job_<order>.json with the machine's load beside each timing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as helpers.pipeline sets it for the kernels

from common import write_result  # noqa: E402,I001  (bench/ is the script's folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--test-share", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--input-size", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--order", default="job,direct", help="which runs, in order (job, direct)")
    args = ap.parse_args()

    import cv2

    from helpers.localcloud import ensure_running, stop
    from helpers.sim.scenes import render_dataset, story_scenes
    from helpers.studio.edgeimpulse import EdgeImpulseStudio
    from helpers.train import data, run, trainer
    from helpers.train.export import export_result

    ws = Path(tempfile.mkdtemp(prefix="edgeloop-bench-trainjob-"))
    runs: dict[str, dict] = {}
    try:
        ensure_running(ws)
        studio = EdgeImpulseStudio(ws)
        n_test = int(round(args.images * args.test_share))
        for split, n, seed in (("training", args.images - n_test, args.seed), ("testing", n_test, args.seed + 1000)):
            for i, (rgb, boxes) in enumerate(render_dataset(n, story_scenes("apples"), (320, 320), seed=seed)):
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                name = f"{split}-{i}.jpg"
                studio.upload([(name, buf.tobytes())], category=split, boxes={name: boxes})
        params = trainer.TrainParams(input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
        studio.set_impulse(input_size=params.input_size, color=params.color, arch=params.arch, epochs=params.epochs,
                           learning_rate=params.lr, batch_size=params.batch_size, validation_split=params.val_fraction,
                           seed=params.seed, time_budget_s=params.time_budget_s)
        for which in [w.strip() for w in args.order.split(",") if w.strip()]:
            load_before = os.getloadavg()
            t0 = time.perf_counter()
            if which == "job":
                job = studio.train(ws / "models" / "job", timeout_s=7200, poll_s=1.0, register=False)
                wall = time.perf_counter() - t0
                import json

                card = json.loads((ws / "models" / "job" / "model.json").read_text())
                runs["job"] = {"wall_s": round(wall, 1), "train_time_s": card["metrics"]["train_time_s"],
                               "overhead_s": round(wall - card["metrics"]["train_time_s"], 1),
                               "best_epoch": card["metrics"]["best_epoch"], "val_f1": card["metrics"]["validation"]["f1"],
                               "score_threshold": card["score_threshold"], "epochs_run": sum(
                                   1 for ln in job["log"] if ln.startswith("Epoch ")),
                               "log_head": job["log"][0]}
            elif which == "direct":
                train_items, _test, labels, _snap = data.load_studio_snapshot(studio)
                result = run.train_detector(train_items, None, labels, params, progress=False)
                export_result(result, ws / "models" / "direct")
                wall = time.perf_counter() - t0
                runs["direct"] = {"wall_s": round(wall, 1), "train_time_s": round(result.train_time_s, 1),
                                  "best_epoch": result.best_epoch, "val_f1": result.val_f1,
                                  "score_threshold": result.score_threshold, "epochs_run": len(result.history)}
            else:
                raise SystemExit(f"--order: unknown run {which!r}; use job and/or direct")
            runs[which]["load_avg_before"] = [round(v, 2) for v in load_before]
            runs[which]["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
            print(which, runs[which], flush=True)
    finally:
        stop(ws)
        shutil.rmtree(ws, ignore_errors=True)
    same = None
    if {"job", "direct"} <= set(runs):
        same = all(runs["job"][k] == runs["direct"][k] for k in ("best_epoch", "val_f1", "score_threshold", "epochs_run"))
    order = "_".join(runs)  # the order matters on a shared machine: what else ran beside each run differs
    print(write_result(f"train_job_{order}", {"params": vars(args), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                                     "torch_threads_setting": os.environ.get("EDGELOOP_TORCH_THREADS", "2 (default)"),
                                     "runs": runs, "same_model": same}))


if __name__ == "__main__":
    main()
