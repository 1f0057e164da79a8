"""(b) Real photos: ../shared/datasets/fruit-voc-train split 80/20 (stratified by file prefix).

F1@0.5 and mAP per class and training time, optionally after synthetic pre-training.
Skips cleanly (writes a "skipped" result) when the folder is absent.

    .venv/bin/python bench/bench_fruit_voc.py [--input-size 160] [--epochs 60] [--pretrained synthetic]
Writes bench/results/fruit_voc_<input-size>[_pretrained].json.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from common import REPO, short, write_result  # noqa: I001

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "fruit-voc-train"


def stratified_split(dataset, test_fraction: float, seed: int):
    """80/20 by file-name prefix (apple_, banana_, orange_, mixed_), so every kind is tested."""
    import numpy as np

    groups: dict[str, list] = {}
    for it in dataset.items:
        groups.setdefault(it.name.split("_")[0], []).append(it)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for _, items in sorted(groups.items()):
        order = rng.permutation(len(items))
        n_test = max(1, round(len(items) * test_fraction))
        test += [items[i] for i in order[:n_test]]
        train += [items[i] for i in order[n_test:]]
    return train, test


def stratified_folds(dataset, k: int, seed: int) -> list[list]:
    """`k` test folds by file-name prefix: each kind of photo is spread over every fold, each photo in one."""
    import numpy as np

    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    groups: dict[str, list] = {}
    for it in dataset.items:
        groups.setdefault(it.name.split("_")[0], []).append(it)
    rng = np.random.default_rng(seed)
    folds: list[list] = [[] for _ in range(k)]
    start = 0
    for _, items in sorted(groups.items()):
        for j, i in enumerate(rng.permutation(len(items))):
            folds[(start + j) % k].append(items[i])
        start += len(items)  # the next kind continues where this one stopped: folds stay even in size
    return folds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--input-size", type=int, default=160)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--time-budget", type=float, default=None)
    ap.add_argument("--pretrained", default="none", help="none | synthetic | a .pt file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workspace", default="/tmp/edgeloop-bench-ws", help="pre-trained weights cache")
    ap.add_argument("--models", default="/tmp/edgeloop-bench-models")
    args = ap.parse_args()
    name = f"fruit_voc_{args.input_size}" + ("_pretrained" if args.pretrained != "none" else "")
    src = Path(args.dataset)
    if not src.is_dir():
        print(write_result(name, {"skipped": f"dataset folder {src} is absent"}))
        return

    from helpers.datasets import import_dataset
    from helpers.sim.pretrain import synthetic_pretrained
    from helpers.train.data import decode_image, split_items
    from helpers.train.evaluate import evaluate_model
    from helpers.train.export import export_result
    from helpers.train.run import train_detector
    from helpers.train.trainer import TrainParams

    dataset, report = import_dataset(src, "voc")
    labels = sorted(dataset.labels)
    tr, te = stratified_split(dataset, 0.2, args.seed)
    to_items = lambda its: [(decode_image(i.image_bytes, i.name), list(i.boxes)) for i in its]  # noqa: E731
    train_all, test = to_items(tr), to_items(te)
    train, val = split_items(train_all, 0.15, args.seed)
    params = TrainParams(input_size=args.input_size, width=args.width, epochs=args.epochs, seed=args.seed,
                         time_budget_s=args.time_budget, threads=args.threads, patience=15)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.pretrained == "synthetic":  # pre-training (cached in --workspace) counts in the training time
        _, _, weights = synthetic_pretrained(params, workspace=args.workspace, progress=False)
        params = dataclasses.replace(params, pretrained=str(weights))
    elif args.pretrained != "none":
        params = dataclasses.replace(params, pretrained=args.pretrained)
    result = train_detector(train, val, labels, params, progress=False, callback=lambda r: print(r, flush=True))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = Path(args.models) / name
    export_result(result, out)
    rep = evaluate_model(str(out), test).to_dict()
    print(write_result(name, {
        "params": vars(args), "labels": labels, "import": report.summary(),
        "train_images": len(train), "val_images": len(val), "test_images": len(test),
        "epochs_run": len(result.history), "best_epoch": result.best_epoch, "val_f1": result.val_f1,
        # wall time includes synthetic pre-training when it was not cached yet
        "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "test": short(rep),
        "history": result.history,
    }))


if __name__ == "__main__":
    main()
