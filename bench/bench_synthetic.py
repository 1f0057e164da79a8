"""(a) Synthetic benchmark: apple-only and apple+banana models on held-out renders.

Measures F1@0.5 per class, training time (wall and CPU) at the workshop setting, and the
story's discovery: how often the apple-only model calls a banana "apple".

    .venv/bin/python bench/bench_synthetic.py [--input-size 160] [--train-images 300] [--epochs 40]
    .venv-ssd/bin/python bench/bench_synthetic.py --arch ssdlite320 --input-size 320 --phases apples_bananas
Writes bench/results/synthetic_<input-size>.json (synthetic_<arch>_<input-size>.json for other archs).
"""
from __future__ import annotations

import argparse
import time

from common import short, write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.inference.onnx import OnnxDetector
from helpers.sim.scenes import render_dataset, story_scenes
from helpers.train.evaluate import evaluate_model
from helpers.train.export import export_result
from helpers.train.run import train_detector
from helpers.train.trainer import TrainParams

SIZE = (320, 320)  # render size: the camera's; the model resizes to its input


def run_phase(phase: str, labels: list[str], args, out_root) -> dict:
    train = render_dataset(args.train_images, story_scenes(phase), SIZE, seed=args.seed)
    val = render_dataset(args.val_images, story_scenes(phase), SIZE, seed=args.seed + 1000)
    test = render_dataset(args.test_images, story_scenes(phase), SIZE, seed=args.seed + 2000)
    params = TrainParams(arch=args.arch, input_size=args.input_size, epochs=args.epochs, width=args.width, seed=args.seed,
                         time_budget_s=args.time_budget, threads=args.threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = train_detector(train, val, labels, params, progress=False,
                            callback=lambda r: print(phase, r, flush=True))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = out_root / f"{phase}_{args.arch}_{args.input_size}"
    export_result(result, out)
    rep = evaluate_model(str(out), test).to_dict()
    res = {"labels": labels, "train_images": len(train), "val_images": len(val), "test_images": len(test),
           "epochs_run": len(result.history), "best_epoch": result.best_epoch, "val_f1": result.val_f1,
           "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "test": short(rep),
           "history": result.history}
    if phase == "apples":
        # The discovery: bananas in front of the apple-only model.
        bananas = render_dataset(args.test_images, story_scenes("bananas"), SIZE, seed=args.seed + 3000)
        brep = evaluate_model(str(out), bananas, allow_unknown_labels=True)
        mixed = render_dataset(args.test_images, story_scenes("apples_bananas"), SIZE, seed=args.seed + 4000)
        mrep = evaluate_model(str(out), mixed, allow_unknown_labels=True)
        # What a device's telemetry shows: banana-only frames where the model reports an apple.
        det = OnnxDetector(out)
        fired = sum(1 for rgb, _ in bananas if any(b.label == "apple" for b in det.detect(rgb)))
        res["banana_scenes"] = {"frames_with_apple_detection_rate": round(fired / len(bananas), 4),
                                "banana_called_apple": brep.called_as("banana", "apple"),
                                "bananas": sum(brep.confusion["matrix"][brep.confusion["names"].index("banana")]),
                                "banana_called_apple_rate": round(brep.rate("banana", "apple"), 4),
                                "confusion": brep.confusion}
        res["mixed_scenes"] = {"banana_called_apple_rate": round(mrep.rate("banana", "apple"), 4),
                               "apple_f1": round(mrep.per_class["apple"].f1, 4), "confusion": mrep.confusion}
    else:
        res["banana_called_apple_rate"] = round(rep_rate(rep, "banana", "apple"), 4)
    return res


def rep_rate(rep: dict, truth: str, pred: str) -> float:
    names, m = rep["confusion"]["names"], rep["confusion"]["matrix"]
    row = m[names.index(truth)]
    return row[names.index(pred)] / max(1, sum(row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="fomo-box", help="fomo-box (default) or ssdlite320 (needs the [ssd] extra)")
    ap.add_argument("--input-size", type=int, default=160)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--train-images", type=int, default=300)
    ap.add_argument("--val-images", type=int, default=60)
    ap.add_argument("--test-images", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=TrainParams.epochs)
    ap.add_argument("--time-budget", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phases", default="apples,apples_bananas")
    ap.add_argument("--models", default="/tmp/edgeloop-bench-models", help="where the benchmark's models go")
    ap.add_argument("--name", default=None, help="result file name (default: synthetic_<input-size>)")
    args = ap.parse_args()
    from pathlib import Path

    results = {}
    for phase in args.phases.split(","):
        labels = ["apple"] if phase == "apples" else ["apple", "banana"]
        results[phase] = run_phase(phase, labels, args, Path(args.models))
    default_name = f"synthetic_{args.input_size}" if args.arch == "fomo-box" else f"synthetic_{args.arch}_{args.input_size}"
    path = write_result(args.name or default_name, {"params": vars(args), "results": results})
    print(path)


if __name__ == "__main__":
    main()
