"""(e) nanodet-ft recipe search on the real photos: input size, epochs, layer rates, augmentation, seed.

Each recipe fine-tunes from the COCO weights on bench_nanodet.py's split (80/20 by file prefix,
15 % of the training part for validation) with 900 CPU seconds of one thread, then the exported
ONNX model is evaluated on the test split. Choose a recipe by its *validation* F1 (the test split
only reports); several recipes run at once on a 2-core machine (`--jobs`), each on one thread.

    .venv/bin/python bench/bench_nanodet_recipes.py --recipes base_224 lr_scale_224 --jobs 2
Writes bench/results/nanodet_recipe_search.json (one entry per recipe; reruns replace entries).
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
}


def run_recipe(name: str, over: dict, dataset: str, budget: float, models: str) -> dict:
    """Train and evaluate one recipe in this process (called in a child per recipe)."""
    from bench_nanodet import load_split

    import helpers.train.finetune as ft
    from helpers.train.augment import AugmentParams
    from helpers.train.evaluate import evaluate_model
    from helpers.train.export import export_result
    from helpers.train.run import train_detector

    over = json.loads(json.dumps(over))
    for k, v in over.pop("_module", {}).items():
        setattr(ft, k, tuple(v) if k == "FROZEN_PREFIXES" else v)
    if "augment" in over:
        over["augment"] = AugmentParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in over["augment"].items()})
    labels, train, val, test, _ = load_split(Path(dataset), 0)
    params = ft.recommended_params(**{"threads": 1, "time_budget_s": budget, "budget_clock": "cpu", **over})
    load0 = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    res = train_detector(train, val, labels, params, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(models) / f"recipe_{name}"
    export_result(res, out)
    rep = short(evaluate_model(str(out), test).to_dict())
    return {"params": params.to_dict(), "lr_scale": dict(ft.LR_SCALE), "frozen": list(ft.FROZEN_PREFIXES),
            "best_epoch": res.best_epoch, "epochs_run": len(res.history) - 1, "val_f1": res.val_f1,
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "load_avg_start": load0,
            "load_avg_end": os.getloadavg(), "test": rep, "history": res.history}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--jobs", type=int, default=2, help="recipes trained at once (one thread each)")
    ap.add_argument("--time-budget", type=float, default=900.0, help="CPU seconds of training per recipe")
    ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "fruit-voc-train"))
    ap.add_argument("--models", default="/tmp/edgeloop-bench-models")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run a single recipe, print its JSON
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_recipe(args.one, RECIPES[args.one], args.dataset, args.time_budget, args.models)))
        return
    if not Path(args.dataset).is_dir():
        print(write_result("nanodet_recipe_search", {"skipped": f"dataset folder {args.dataset} is absent"}))
        return
    prev = RESULTS / "nanodet_recipe_search.json"
    runs = json.loads(prev.read_text()).get("runs", {}) if prev.is_file() else {}
    pending = list(args.recipes)
    active: dict[str, subprocess.Popen] = {}
    while pending or active:
        while pending and len(active) < args.jobs:
            name = pending.pop(0)
            active[name] = subprocess.Popen(
                [sys.executable, __file__, "--one", name, "--time-budget", str(args.time_budget), "--dataset", args.dataset,
                 "--models", args.models], stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        time.sleep(5)
        for name, proc in list(active.items()):
            if proc.poll() is None:
                continue
            out = proc.stdout.read() if proc.stdout else ""
            del active[name]
            line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"recipe {name} failed (exit {proc.returncode})")
            runs[name] = {"overrides": RECIPES[name], **json.loads(line[len("RESULT "):])}
            r = runs[name]
            print(f"{name}: val F1 {r['val_f1']:.3f}, test F1 {r['test']['overall_f1']:.3f} "
                  f"{ {k: v['f1'] for k, v in r['test']['per_class'].items()} }", flush=True)
            write_result("nanodet_recipe_search", {"time_budget_cpu_s": args.time_budget, "runs": runs})
    print(write_result("nanodet_recipe_search", {"time_budget_cpu_s": args.time_budget, "runs": runs}))


if __name__ == "__main__":
    main()
