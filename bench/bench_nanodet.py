"""(d) COCO-pretrained NanoDet on real photos: zero-shot, fine-tuned (`nanodet-ft`), label assist, runner cost.

Same data and 80/20 split as bench_fruit_voc.py (../shared/datasets/fruit-voc-train,
stratified by file prefix, seed 0; 15 % of the training part is the validation set).
Phases (`--phases`, comma-separated):
  zeroshot  the converted COCO model as is (COCO's apple/banana/orange rows); its score
            threshold is chosen on the validation images, F1/mAP measured on the test split;
  assist    label assist on all photos: the share of COCO proposals a labeler would accept
            unchanged (IoU >= 0.9 with a true box of the same class), per class;
  finetune  `nanodet-ft` from the COCO weights with `--time-budget` seconds of training
            (CPU seconds of one thread by default: on this shared machine wall time says little;
            one thread's CPU time bounds what the run takes alone on the 2-core machine), exported
            to ONNX and evaluated on the test split;
  baselines `fomo-box` (160 px, the workshop's from-scratch model) trained on the same split from
            scratch and after synthetic pre-training (bench_fruit_voc.py's settings), so the
            three starting points are compared in one run on one machine state;
  runner    onnxruntime single-thread latency (preprocess + inference + decode) and peak RSS of
            a fresh runner process, for nanodet-ft at each `--sizes` and fomo-box at 160 px.
Needs `make weights`. The machine's load is recorded beside the timings (shared CPU).

    .venv/bin/python bench/bench_nanodet.py --phases zeroshot,assist,finetune,runner --input-size 320
Writes bench/results/nanodet_<phases>_<input-size>.json (or `--name`). `make bench-nanodet` runs every
phase into nanodet_choice.json, the file notebook 04's model-choice table reads
(`helpers.train.choices`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, short, write_result  # noqa: I001

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "fruit-voc-train"
ASSIST_IOU = 0.9

RUNNER_SNIPPET = r"""
import json, sys, time
import numpy as np


def peak_rss_mb():
    # VmHWM of this process. Not ru_maxrss: after fork+exec Linux carries the parent's peak into the
    # child's ru_maxrss, so a runner started from this torch-sized bench read ~390 MB whatever it ran.
    with open("/proc/self/status") as fh:
        return int(fh.read().split("VmHWM:")[1].split()[0]) / 1024


from helpers.inference.onnx import OnnxDetector
det = OnnxDetector(sys.argv[1], threads=1)
rng = np.random.default_rng(0)
frames = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
for f in frames * 3:
    det.detect(f)
times, cpu = [], []
for i in range(int(sys.argv[2])):
    t, c = time.perf_counter(), time.thread_time()
    det.detect(frames[i % 4])
    times.append((time.perf_counter() - t) * 1000); cpu.append((time.thread_time() - c) * 1000)
# With one onnxruntime thread the work runs on this thread: its CPU time per frame is what the
# frame costs on an idle core. Wall times (min, median, p95) include waiting for this shared CPU.
print(json.dumps({"cpu_ms_median": float(np.median(cpu)), "min_ms": float(np.min(times)),
                  "median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
                  "runs": len(times), "peak_rss_mb": peak_rss_mb()}))
"""


def load_split(dataset: Path, seed: int, fold: tuple[int, int] | None = None):
    """(labels, train, val, test, import report): the 80/20 split, or with `fold=(i, k)` fold i of a
    k-fold split (bench_fruit_voc.stratified_folds) as the test photos; 15 % of the rest validates."""
    from bench_fruit_voc import stratified_folds, stratified_split

    from helpers.datasets import import_dataset
    from helpers.train.data import decode_image, split_items

    ds, report = import_dataset(dataset, "voc")
    if fold is None:
        tr, te = stratified_split(ds, 0.2, seed)
    else:
        folds = stratified_folds(ds, fold[1], seed)
        te = folds[fold[0]]
        tr = [it for j, f in enumerate(folds) if j != fold[0] for it in f]
    to_items = lambda its: [(decode_image(i.image_bytes, i.name), list(i.boxes)) for i in its]  # noqa: E731
    train_all, test = to_items(tr), to_items(te)
    train, val = split_items(train_all, 0.15, seed)
    return sorted(ds.labels), train, val, test, report


def coco_predict(det, items, labels, thr=0.05):
    return [[b for b in det.detect(rgb, thr) if b.label in labels] for rgb, _ in items]


def phase_zeroshot(info, labels, val, test) -> dict:
    from helpers.inference.onnx import OnnxDetector
    from helpers.train.evaluate import coco_map, detection_counts
    from helpers.train.threshold import best_threshold

    det = OnnxDetector(info["paths"]["zero_shot"], threads=1)
    t0 = time.perf_counter()
    _, thr, _ = best_threshold([b for _, b in val], coco_predict(det, val, labels), labels,
                               (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55))
    preds = coco_predict(det, test, labels, 0.01)
    per, overall = detection_counts([b for _, b in test], [[b for b in p if b.value >= thr] for p in preds], labels)
    map50, map_, per_ap = coco_map([b for _, b in test], preds, labels, [(r.shape[1], r.shape[0]) for r, _ in test])
    return {"score_threshold_from_val": thr, "overall_f1": round(overall.f1, 4),
            "precision": round(overall.precision, 4), "recall": round(overall.recall, 4),
            "per_class": {k: {"f1": round(v.f1, 4), "precision": round(v.precision, 4), "recall": round(v.recall, 4)}
                          for k, v in per.items() if k in labels},
            "map50": map50, "map": map_, "ap_per_class": per_ap, "seconds": round(time.perf_counter() - t0, 1), "load_avg": os.getloadavg()}


def phase_assist(info, labels, items) -> dict:
    """What a labeler accepts unchanged: COCO proposals at the card threshold vs the true boxes."""
    from helpers.geometry import iou
    from helpers.inference.onnx import OnnxDetector

    det = OnnxDetector(info["paths"]["zero_shot"], threads=1)
    stats = {lb: {"proposals": 0, "accepted_unchanged": 0, "true_boxes": 0} for lb in labels}
    for (_rgb, gt), props in zip(items, coco_predict(det, items, labels, det.score_threshold)):
        for g in gt:
            stats[g.label]["true_boxes"] += 1
        used: set[int] = set()
        for p in props:
            stats[p.label]["proposals"] += 1
            best, bi = 0.0, -1
            for i, g in enumerate(gt):
                if i not in used and g.label == p.label and iou(g, p) > best:
                    best, bi = iou(g, p), i
            if best >= ASSIST_IOU:
                used.add(bi)
                stats[p.label]["accepted_unchanged"] += 1
    for s in stats.values():
        s["accepted_share_of_proposals"] = round(s["accepted_unchanged"] / s["proposals"], 4) if s["proposals"] else None
        s["boxes_saved_share"] = round(s["accepted_unchanged"] / s["true_boxes"], 4) if s["true_boxes"] else None
    tot_p = sum(s["proposals"] for s in stats.values())
    tot_a = sum(s["accepted_unchanged"] for s in stats.values())
    return {"iou_threshold": ASSIST_IOU, "score_threshold": det.score_threshold, "images": len(items),
            "per_class": stats, "accepted_share_of_proposals": round(tot_a / tot_p, 4) if tot_p else None}


def phase_finetune(args, labels, train, val, test) -> dict:
    from helpers.train.evaluate import evaluate_model
    from helpers.train.export import export_result
    from helpers.train.finetune import recommended_params
    from helpers.train.run import train_detector

    kw = {"input_size": args.input_size, "seed": args.seed, "threads": args.threads, "time_budget_s": args.time_budget,
          "budget_clock": args.budget_clock}
    for k in ("epochs", "lr"):
        if getattr(args, k):
            kw[k] = getattr(args, k)
    params = recommended_params(**kw)
    load0 = os.getloadavg()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = train_detector(train, val, labels, params, progress=False, callback=lambda r: print(r, flush=True))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = Path(args.models) / f"nanodet_ft_{args.input_size}"
    export_result(result, out)
    rep = evaluate_model(str(out), test).to_dict()
    return {"params": params.to_dict(), "train_images": len(train), "val_images": len(val), "test_images": len(test),
            "epochs_run": len(result.history), "best_epoch": result.best_epoch, "val_f1": result.val_f1,
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "load_avg_start": load0,
            "load_avg_end": os.getloadavg(), "test": short(rep), "onnx_bytes": (out / "model.onnx").stat().st_size,
            "pretrained": result.pretrained, "history": result.history, "model_dir": str(out)}


def phase_baselines(args, labels, train, val, test) -> dict:
    """fomo-box from scratch and from synthetic pre-training: bench_fruit_voc.py's recipe, this split."""
    from helpers.sim.pretrain import synthetic_pretrained
    from helpers.train.evaluate import evaluate_model
    from helpers.train.export import export_result
    from helpers.train.run import train_detector
    from helpers.train.trainer import TrainParams

    res: dict = {}
    for start in ("none", "synthetic"):
        params = TrainParams(input_size=160, width=0.5, epochs=60, seed=args.seed, threads=args.threads, patience=15)
        load0 = os.getloadavg()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if start == "synthetic":
            _, _, weights = synthetic_pretrained(params, workspace=args.baseline_workspace, progress=False)
            params = dataclasses.replace(params, pretrained=str(weights))
        result = train_detector(train, val, labels, params, progress=False)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        out = Path(args.models) / f"fomo_box_160_{start}"
        export_result(result, out)
        rep = short(evaluate_model(str(out), test).to_dict())
        res["from_scratch" if start == "none" else "synthetic_pretrained"] = {
            "arch": "fomo-box", "input_size": 160, "pretrained": start, "epochs_run": len(result.history),
            "best_epoch": result.best_epoch, "val_f1": result.val_f1,
            # wall/CPU include synthetic pre-training when it was not cached yet in --baseline-workspace
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "threads": args.threads,
            "load_avg_start": load0, "load_avg_end": os.getloadavg(), "test": rep,
            "onnx_bytes": (out / "model.onnx").stat().st_size}
        print("baseline", start, rep["overall_f1"], rep["per_class"], flush=True)
    return res


def run_runner(model_dir: str, runs: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUNNER_SNIPPET, model_dir, str(runs)], capture_output=True, text=True,
                          cwd=str(REPO), timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"runner measurement failed: {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "onnx_bytes": (Path(model_dir) / "model.onnx").stat().st_size,
            "load_avg": os.getloadavg()}


def phase_runner(args, info) -> dict:
    import torch

    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox
    from helpers.train.nanodet import NANODET_PREPROCESSING, NanoDet

    torch.manual_seed(0)
    res: dict = {"nanodet-ft": {}, "notes": "latency depends on the architecture, not the weights: untrained exports "
                 "of the same networks; 640x480 frames, preprocess + inference + decode, onnxruntime 1 thread"}
    with tempfile.TemporaryDirectory() as d:
        for size in args.sizes:
            md = Path(d) / f"nanodet_{size}"
            export_onnx(NanoDet(3).eval(), md, {"labels": ["apple", "banana", "orange"], "input_size": size,
                                                "preprocessing": NANODET_PREPROCESSING, "score_threshold": 0.5,
                                                "head": {"type": "gfl"}})
            res["nanodet-ft"][str(size)] = run_runner(str(md), args.runs)
            print("nanodet-ft", size, res["nanodet-ft"][str(size)], flush=True)
        md = Path(d) / "fomo"
        export_onnx(FomoBox(3, 0.5).eval(), md, {"labels": ["apple", "banana", "orange"], "input_size": 160})
        res["fomo-box_160"] = run_runner(str(md), args.runs * 4)
        res["coco_zero_shot_416"] = run_runner(info["paths"]["zero_shot"], args.runs)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--phases", default="zeroshot,assist,finetune,runner")
    ap.add_argument("--input-size", type=int, default=320)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 320, 416])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--time-budget", type=float, default=900.0, help="training seconds (the 15 min goal)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-clock", default="cpu", choices=["cpu", "wall"],
                    help="cpu (default): the budget counts the process's CPU seconds; with --threads 1 that bounds "
                         "the wall time the run takes alone on an idle machine (this one is shared)")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="/tmp/edgeloop-bench-models")
    ap.add_argument("--name", default=None, help="result file name (default: nanodet_<phases>_<input-size>)")
    ap.add_argument("--baseline-workspace", default="/tmp/edgeloop-bench-ws",
                    help="where the baselines' synthetic pre-training is cached")
    args = ap.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    name = args.name or f"nanodet_{'_'.join(phases)}_{args.input_size}"
    src = Path(args.dataset)
    from helpers.train.pretrained import WeightsMissing, weights_info

    try:
        info = weights_info()
    except WeightsMissing as e:
        print(write_result(name, {"skipped": str(e)}))
        return
    out: dict = {"params": vars(args), "weights": {k: v for k, v in info.items() if k != "paths"}}
    if "runner" in phases:
        out["runner"] = phase_runner(args, info)
        write_result(name, {**out, "partial": True})  # the later phases take a while
    if any(p in phases for p in ("zeroshot", "assist", "finetune", "baselines")):
        if not src.is_dir():
            print(write_result(name, {**out, "skipped": f"dataset folder {src} is absent"}))
            return
        labels, train, val, test, report = load_split(src, args.seed)
        out.update({"labels": labels, "import": report.summary()})
        if "zeroshot" in phases:
            out["zero_shot"] = phase_zeroshot(info, labels, val, test)
            print("zero-shot", out["zero_shot"], flush=True)
            write_result(name, {**out, "partial": True})
        if "assist" in phases:
            out["label_assist"] = phase_assist(info, labels, train + val + test)
            print("assist", out["label_assist"], flush=True)
        if "finetune" in phases:
            out["finetune"] = phase_finetune(args, labels, train, val, test)
            write_result(name, {**out, "partial": True})
        if "baselines" in phases:
            out["baselines"] = phase_baselines(args, labels, train, val, test)
    print(write_result(name, out))


if __name__ == "__main__":
    main()
