"""How the card's score threshold is chosen: old rule vs F1-plateau rules, judged on TEST data.

One model is trained per seed and case; its validation predictions choose a threshold by each
rule of `helpers.train.threshold.best_threshold` ("max": the lowest threshold with the best
validation F1, the rule before; "plateau"; "plateau-per-class"), and the same model's TEST
predictions are scored at each choice. For the apple-only model also: the share of held-out
banana objects called "apple" (the workshop story's discovery) at each choice.

    nice -n 5 .venv/bin/python bench/bench_threshold.py --case synthetic --seeds 0,1,2
    nice -n 5 .venv/bin/python bench/bench_threshold.py --case fruit-voc --seeds 0 --epochs 30
Writes bench/results/threshold_<case>.json with the machine's load beside the timings.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.sim.scenes import render_dataset, story_scenes
from helpers.train.evaluate import detection_counts
from helpers.train.fomo import predict_items
from helpers.train.run import train_detector
from helpers.train.threshold import THRESHOLD_RULES, best_threshold
from helpers.train.trainer import TrainParams

SIZE = (320, 320)


def cut(preds, thr: float, class_thr: dict[str, float]):
    return [[b for b in p if (b.value or 0) >= class_thr.get(b.label, thr)] for p in preds]


def judge(model, labels, params, val, test, extra=None) -> dict:
    """Each rule's choice on `val`, and test precision/recall/F1 at that choice."""
    size, color = params.input_size, params.color
    vp = predict_items(model, val, labels, size, color=color)
    tp = predict_items(model, test, labels, size, color=color)
    ep = predict_items(model, extra, labels, size, color=color) if extra else None
    vg, tg = [list(b) for _, b in val], [list(b) for _, b in test]
    out = {}
    for rule in THRESHOLD_RULES:
        vf1, thr, m = best_threshold(vg, vp, labels, params.score_thresholds, rule)
        cthr = m["threshold_choice"].get("class_thresholds") or {}
        per, overall = detection_counts(tg, cut(tp, thr, cthr), labels)
        row = {"threshold": thr, "class_thresholds": cthr, "plateau": m["threshold_choice"]["plateau"],
               "val_f1": round(vf1, 4),
               "test": {"f1": round(overall.f1, 4), "precision": round(overall.precision, 4),
                        "recall": round(overall.recall, 4),
                        "per_class": {n: round(per[n].f1, 4) for n in labels}}}
        if ep is not None:
            # Banana objects of held-out banana scenes with an "apple" box at IoU >= 0.5.
            from helpers.geometry import iou

            called = total = 0
            for (_, boxes), p in zip(extra, cut(ep, thr, cthr)):
                for g in boxes:
                    total += 1
                    called += any(b.label == "apple" and iou(g, b) >= 0.5 for b in p)
            row["banana_called_apple_rate"] = round(called / max(1, total), 4)
        out[rule] = row
    return out


def synthetic(args, seed: int) -> dict:
    res = {}
    for phase, labels, n in (("apples", ["apple"], args.apple_images), ("apples_bananas", ["apple", "banana"],
                                                                        2 * args.apple_images)):
        items = render_dataset(n, story_scenes(phase), SIZE, seed=seed)
        test = render_dataset(args.test_images, story_scenes(phase), SIZE, seed=seed + 2000)
        bananas = render_dataset(args.test_images, story_scenes("bananas"), SIZE, seed=seed + 3000) \
            if phase == "apples" else None
        params = TrainParams(epochs=args.epochs, seed=seed, threads=args.threads)
        t0 = time.perf_counter()
        # No validation items: the trainer splits val_fraction (20 %) off, as notebook 04 does.
        from helpers.train.data import split_items

        train, val = split_items(items, params.val_fraction, seed)
        r = train_detector(train, val, labels, params, progress=False)
        res[phase] = {"train_images": len(train), "val_images": len(val), "test_images": len(test),
                      "val_objects": sum(len(b) for _, b in val), "best_epoch": r.best_epoch,
                      "train_wall_s": round(time.perf_counter() - t0, 1), "load_after": os.getloadavg(),
                      "rules": judge(r.model, labels, params, val, test, bananas)}
        print(seed, phase, res[phase], flush=True)
    return res


def fruit_voc(args, seed: int) -> dict:
    from bench_fruit_voc import DEFAULT_DATASET, stratified_split

    from helpers.datasets import import_dataset
    from helpers.train.data import decode_image, split_items

    dataset, _ = import_dataset(Path(DEFAULT_DATASET), "voc")
    labels = sorted(dataset.labels)
    tr, te = stratified_split(dataset, 0.2, seed)
    to_items = lambda its: [(decode_image(i.image_bytes, i.name), list(i.boxes)) for i in its]  # noqa: E731
    train, val = split_items(to_items(tr), 0.15, seed)
    test = to_items(te)
    params = TrainParams(epochs=args.epochs, seed=seed, threads=args.threads, patience=15)
    t0 = time.perf_counter()
    r = train_detector(train, val, labels, params, progress=False)
    out = {"train_images": len(train), "val_images": len(val), "test_images": len(test),
           "val_objects": {n: sum(1 for _, bs in val for b in bs if b.label == n) for n in labels},
           "best_epoch": r.best_epoch, "train_wall_s": round(time.perf_counter() - t0, 1),
           "load_after": os.getloadavg(), "rules": judge(r.model, labels, params, val, test)}
    print(seed, out, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("synthetic", "fruit-voc"), default="synthetic")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--apple-images", type=int, default=120, help="synthetic: the workshop's 120")
    ap.add_argument("--test-images", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=TrainParams.epochs)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    load0, t0 = os.getloadavg(), time.perf_counter()
    runs = {s: (synthetic if args.case == "synthetic" else fruit_voc)(args, int(s)) for s in args.seeds.split(",")}
    print(write_result(f"threshold_{args.case.replace('-', '_')}",
                       {"params": vars(args), "load_before": load0, "wall_s": round(time.perf_counter() - t0, 1),
                        "load_after": os.getloadavg(), "runs": runs}))


if __name__ == "__main__":
    main()
