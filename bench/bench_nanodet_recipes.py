"""(e) nanodet-ft recipe search on the real photos: input size, epochs, layer rates, augmentation, seed.

Each recipe fine-tunes from the COCO weights on bench_nanodet.py's split (80/20 by file prefix,
15 % of the training part for validation) with 900 CPU seconds of one thread, then the exported
ONNX model is evaluated on the test split. Choose a recipe by its *validation* F1 (the test split
only reports); several recipes run at once on a 2-core machine (`--jobs`), each on one thread.

    .venv/bin/python bench/bench_nanodet_recipes.py --recipes base_224 lr_scale_224 --jobs 2
Writes bench/results/nanodet_recipe_search.json (one entry per recipe; reruns replace entries).

With `--folds K` each recipe is trained K times over all the photos instead, each fold of
`bench_fruit_voc.stratified_folds` the test photos once (15 % of the rest validates), and
bench/results/nanodet_kfold.json gets every fold and the mean and spread of the test F1: a figure
that predicts unseen photos better than one 48-photo split, and the way to compare recipes.

    .venv/bin/python bench/bench_nanodet_recipes.py --folds 5 --recipes lr_scale_224_60 --jobs 2   # ~40 min
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, RESULTS, short, write_result  # noqa: I001

# Overrides of finetune.recommended_params (and of module constants under "_module").
RECIPES: dict[str, dict] = {
    "base_320_40": {"input_size": 320, "epochs": 40, "_module": {"LR_SCALE": {"backbone.": 0.05, "fpn.": 0.1}}},
    "base_224_60": {"input_size": 224, "epochs": 60, "_module": {"LR_SCALE": {"backbone.": 0.05, "fpn.": 0.1}}},
    "base_224_60_seed1": {"input_size": 224, "epochs": 60, "seed": 1,
                          "_module": {"LR_SCALE": {"backbone.": 0.05, "fpn.": 0.1}}},
    "frozen_stem_224_70": {"input_size": 224, "epochs": 70,
                           "_module": {"LR_SCALE": {"backbone.": 0.05, "fpn.": 0.1},
                                       "FROZEN_PREFIXES": ["backbone.stem", "backbone.stages.0"]}},
    "strong_aug_224_60": {"input_size": 224, "epochs": 60, "augment": {"zoom": [0.5, 1.7], "shift": 0.3, "hue_deg": 4.0},
                          "_module": {"LR_SCALE": {"backbone.": 0.05, "fpn.": 0.1}}},
    # the recipe recommended_params gives now (LR_SCALE backbone 0.1, neck 0.2)
    "lr_scale_224_60": {"input_size": 224, "epochs": 60},
    "lr_scale_224_60_seed1": {"input_size": 224, "epochs": 60, "seed": 1},
    # the k-fold runs of lr_scale_224_60 stopped at 60 epochs after ~650 of the 900 CPU s: the rest of the budget
    "lr_scale_224_85": {"input_size": 224, "epochs": 85},
    # the recipe with strong_aug's wider scale jitter and shift (zoom 0.5-1.7, shift 0.3, hue 4 degrees): bananas,
    # the weak class over the folds (0.76 +- 0.12), appear at many sizes and cut by the frame
    "lr_scale_strong_aug_224_60": {"input_size": 224, "epochs": 60,
                                   "augment": {"zoom": [0.5, 1.7], "shift": 0.3, "hue_deg": 4.0}},
    # the k-fold models fit their own training photos only to F1 0.92-0.93 (banana recall 0.83): under-fitting, so
    # (a) the backbone and neck at a quarter and a half of the head's rate (0.1 / 0.2 before), and
    "lr_scale_fast_224_60": {"input_size": 224, "epochs": 60, "_module": {"LR_SCALE": {"backbone.": 0.25, "fpn.": 0.5}}},
    # (b) multi-scale training: each batch at 160-288 px (the same pixels per epoch on average), exported at 224
    "multiscale_224_60": {"input_size": 224, "epochs": 60, "_module": {"MULTI_SCALE": [160, 192, 224, 256, 288]}},
    # the recipe trained on every training photo (192 a fold instead of 163 + 29 validating: val_fraction 0), the
    # last epoch kept, at the score threshold lr_scale_224_60's validation chose on the same fold ("_threshold_from")
    "lr_scale_224_60_all": {"input_size": 224, "epochs": 60, "_threshold_from": "lr_scale_224_60"},
    # is it the input size? 256 px (1.3x the pixels of 224, the runner's int8 ~13 ms: over the 12.4 ms row)
    "lr_scale_256_60": {"input_size": 256, "epochs": 60},
    "lr_scale_strong_aug_224_60_all": {"input_size": 224, "epochs": 60,
                                       "augment": {"zoom": [0.5, 1.7], "shift": 0.3, "hue_deg": 4.0},
                                       "_threshold_from": "lr_scale_strong_aug_224_60"},
}


def chosen_threshold(recipe: str, fold: tuple[int, int] | None) -> float:
    """The score threshold `recipe`'s own validation chose on this fold (or on the 80/20 split), from its results."""
    if fold is None:
        return float(json.loads((RESULTS / "nanodet_recipe_search.json").read_text())["runs"][recipe]["test"]["score_threshold"])
    runs = json.loads((RESULTS / "nanodet_kfold.json").read_text())["runs"]
    return float(runs[recipe]["folds"][str(fold[0])]["test"]["score_threshold"])


def run_recipe(name: str, over: dict, dataset: str, budget: float, models: str,
               fold: tuple[int, int] | None = None) -> dict:
    """Train and evaluate one recipe in this process (called in a child per recipe, or per fold)."""
    from bench_nanodet import load_split

    import helpers.train.finetune as ft
    from helpers.train.augment import AugmentParams
    from helpers.train.evaluate import evaluate_model
    from helpers.train.export import export_result
    from helpers.train.run import train_detector

    over = json.loads(json.dumps(over))
    for k, v in over.pop("_module", {}).items():
        setattr(ft, k, tuple(v) if k in ("FROZEN_PREFIXES", "MULTI_SCALE") else v)
    if "augment" in over:
        over["augment"] = AugmentParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in over["augment"].items()})
    labels, train, val, test, _ = load_split(Path(dataset), 0, fold)
    base = over.pop("_threshold_from", None)
    if base:  # no validation: every training photo trains, at the threshold `base` chose on this fold's validation
        over.update(val_fraction=0.0, score_threshold=chosen_threshold(base, fold))
        train, val = train + val, []
    params = ft.recommended_params(**{"threads": 1, "time_budget_s": budget, "budget_clock": "cpu", **over})
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_detector(train, val, labels, params, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(models) / (f"recipe_{name}" if fold is None else f"recipe_{name}_fold{fold[0]}of{fold[1]}")
    export_result(res, out)
    rep = short(evaluate_model(str(out), test).to_dict())
    return {"params": params.to_dict(), "lr_scale": dict(ft.LR_SCALE), "frozen": list(ft.FROZEN_PREFIXES),
            "best_epoch": res.best_epoch, "epochs_run": len(res.history) - 1, "val_f1": res.val_f1,
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "load_avg_start": load0,
            "load_avg_end": os.getloadavg(), "split": {"train": len(train), "val": len(val), "test": len(test)},
            "test": rep, "history": res.history}


def kfold_summary(folds: list[dict]) -> dict:
    """Mean, spread (sample standard deviation), min and max of the folds' test F1, overall and per class."""
    import numpy as np

    def stats(values: list[float]) -> dict:
        v = np.array(values, dtype=float)
        return {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4),
                "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}

    classes = sorted({c for f in folds for c in f["test"]["per_class"]})
    return {"folds": len(folds), "test_f1": stats([f["test"]["overall_f1"] for f in folds]),
            # None: trained without validation (val_fraction 0)
            "val_f1": stats(vals) if (vals := [f["val_f1"] for f in folds if f["val_f1"] is not None]) else None,
            "test_map50": stats([f["test"]["map50"] for f in folds if f["test"].get("map50") is not None]),
            "per_class_test_f1": {c: stats([f["test"]["per_class"][c]["f1"] for f in folds
                                            if c in f["test"]["per_class"]]) for c in classes},
            "train_cpu_s": stats([f["train_cpu_s"] for f in folds])}


def child(name: str, args, fold: int | None = None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--one", name, "--time-budget", str(args.time_budget), "--dataset", args.dataset,
           "--models", args.models]
    if fold is not None:
        cmd += ["--fold", str(fold), "--folds", str(args.folds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(REPO))


def finished(pending: list, start, jobs: int):
    """Run `start(key)` children, `jobs` at once; yield (key, the child's RESULT) as each ends.

    Raises:
        SystemExit: a child failed or printed no result.
    """
    active: dict = {}
    while pending or active:
        while pending and len(active) < jobs:
            key = pending.pop(0)
            active[key] = start(key)
        time.sleep(5)
        for key, proc in list(active.items()):
            if proc.poll() is None:
                continue
            out = proc.stdout.read() if proc.stdout else ""
            del active[key]
            line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"{key} failed (exit {proc.returncode})")
            yield key, json.loads(line[len("RESULT "):])


def kfold(args) -> None:
    """Every recipe on every fold, `--jobs` at once; the folds and their summary per recipe."""
    pending = [(name, i) for name in args.recipes for i in range(args.folds)]
    prev = RESULTS / "nanodet_kfold.json"
    runs: dict[str, dict] = json.loads(prev.read_text()).get("runs", {}) if prev.is_file() else {}
    if prev.is_file() and json.loads(prev.read_text()).get("k") != args.folds:
        runs = {}  # folds of another k are another split: not comparable, not kept
    runs.update({name: {"overrides": RECIPES[name], "folds": {}} for name in args.recipes})  # reruns replace
    meta = {"time_budget_cpu_s": args.time_budget, "k": args.folds,
            "split": "bench_fruit_voc.stratified_folds (by file prefix, seed 0); 15 % of the training folds validate"}
    for (name, i), r in finished(pending, lambda key: child(key[0], args, key[1]), args.jobs):
        r.pop("history", None)
        runs[name]["folds"][str(i)] = r
        print(f"{name} fold {i}: val F1 {r['val_f1'] or float('nan'):.3f}, test F1 {r['test']['overall_f1']:.3f}", flush=True)
        runs[name]["summary"] = kfold_summary(list(runs[name]["folds"].values()))
        write_result("nanodet_kfold", {**meta, "runs": runs})
    print(write_result("nanodet_kfold", {**meta, "runs": runs}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--jobs", type=int, default=2, help="recipes trained at once (one thread each)")
    ap.add_argument("--time-budget", type=float, default=900.0, help="CPU seconds of training per recipe")
    ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "fruit-voc-train"))
    ap.add_argument("--models", default="/tmp/edgeloop-bench-models")
    ap.add_argument("--folds", type=int, default=0,
                    help="k-fold cross-validation over all the photos (k >= 2): each recipe trained k times, each "
                         "fold's photos the test set once; writes nanodet_kfold.json with the mean and spread")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run a single recipe, print its JSON
    ap.add_argument("--fold", type=int, default=None, help=argparse.SUPPRESS)  # internal: with --one and --folds
    args = ap.parse_args()
    if args.one:
        fold = None if args.fold is None else (args.fold, args.folds)
        print("RESULT " + json.dumps(run_recipe(args.one, RECIPES[args.one], args.dataset, args.time_budget, args.models,
                                                fold)))
        return
    name_out = "nanodet_kfold" if args.folds else "nanodet_recipe_search"
    if not Path(args.dataset).is_dir():
        print(write_result(name_out, {"skipped": f"dataset folder {args.dataset} is absent"}))
        return
    if args.folds:
        kfold(args)
        return
    prev = RESULTS / "nanodet_recipe_search.json"
    runs = json.loads(prev.read_text()).get("runs", {}) if prev.is_file() else {}
    for name, r in finished(list(args.recipes), lambda name: child(name, args), args.jobs):
        runs[name] = {"overrides": RECIPES[name], **r}
        print(f"{name}: val F1 {r['val_f1'] or float('nan'):.3f}, test F1 {r['test']['overall_f1']:.3f} "
              f"{ {k: v['f1'] for k, v in r['test']['per_class'].items()} }", flush=True)
        write_result("nanodet_recipe_search", {"time_budget_cpu_s": args.time_budget, "runs": runs})
    print(write_result("nanodet_recipe_search", {"time_budget_cpu_s": args.time_budget, "runs": runs}))


if __name__ == "__main__":
    main()
