"""Command lines: `python -m helpers.train` and `python -m helpers.evaluate`.

Both print a JSON summary on stdout, progress (tqdm) on stderr, and exit with status 2 and
a one-line `error: ...` naming the fix on a dataset or model problem.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers.errors import DatasetError, EdgeLoopError
from helpers.studio import get_studio
from helpers.train.data import load_dataset_dir
from helpers.train.evaluate import evaluate_model

FORMAT_CHOICES = ("auto", "ei", "voc", "coco")


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def train_main(argv: Sequence[str] | None = None) -> int:
    # The training modules import torch: only here, so `python -m helpers.evaluate` runs without it.
    from helpers.train.finetune import recommended_params
    from helpers.train.model import ARCHS
    from helpers.train.run import train_and_export
    from helpers.train.trainer import TrainParams

    ap = argparse.ArgumentParser(prog="python -m helpers.train",
                                 description="Train a fruit detector and export model.onnx + model.json. "
                                             "`python -m helpers.train fetch-weights` (or `make weights`) gets the "
                                             "COCO weights `--arch nanodet-ft` fine-tunes from.")
    ap.add_argument("--dataset", help="dataset folder; default: the local studio's current snapshot")
    ap.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="dataset layout (default: auto)")
    ap.add_argument("--out", required=True, help="output folder for model.onnx and model.json")
    ap.add_argument("--arch", default="fomo-box", choices=ARCHS)
    ap.add_argument("--epochs", type=int, default=None, help="maximum epochs (early stopping may end sooner)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="square input side: 96, 160 or 320 (fomo-box); 224, 320 or 416 (nanodet-ft)")
    ap.add_argument("--color", default="RGB", choices=["RGB", "grayscale"],
                    help="colour depth of the input, as Edge Impulse's image block (default: RGB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=float, default=None, help="backbone width multiplier (fomo-box)")
    ap.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    ap.add_argument("--pretrained", default="none",
                    help="fomo-box: 'none' or a .pt file (synthetic pre-training: "
                         "helpers.sim.pretrain.synthetic_pretrained writes one under the workspace); nanodet-ft: "
                         "the COCO weights from `make weights` (default) or a NanoDet .pt checkpoint")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: EDGELOOP_TORCH_THREADS)")
    ap.add_argument("--val-fraction", type=float, default=None,
                    help="share of the training images held out for validation (default 0.2); 0 (nanodet-ft): "
                         "train on every image, keep the last epoch, with --score-threshold")
    ap.add_argument("--score-threshold", type=float, default=None,
                    help="fixed score threshold for the card (default: chosen on validation)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    kw: dict[str, Any] = {"arch": args.arch, "seed": args.seed, "threads": args.threads, "color": args.color,
                          "time_budget_s": args.time_budget,
                          "pretrained": None if args.pretrained in ("", "none") else args.pretrained}
    if args.arch == "ssdlite320":
        kw["input_size"] = 320
    for name, val in (("epochs", args.epochs), ("input_size", args.input_size), ("width", args.width),
                      ("val_fraction", args.val_fraction), ("score_threshold", args.score_threshold)):
        if val is not None:
            kw[name] = val
    try:
        if args.arch == "nanodet-ft":
            kw.pop("width", None)
            params = recommended_params(**kw)
        else:
            params = TrainParams(**kw)
        params.check()
        studio = None if args.dataset else get_studio("local")  # no --dataset: the local studio's snapshot
        summary = train_and_export(args.out, args.dataset, args.format, params, progress=not args.quiet, studio=studio)
    except (EdgeLoopError, ValueError) as e:
        return _fail(e)
    print(json.dumps(summary, indent=2))
    return 0


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.evaluate",
                                 description="Evaluate an exported model (model.onnx + model.json) on a dataset.")
    ap.add_argument("--model", required=True, help="model folder (model.onnx + model.json) or the .onnx file")
    ap.add_argument("--dataset", required=True, help="dataset folder")
    ap.add_argument("--format", default="auto", choices=FORMAT_CHOICES)
    ap.add_argument("--split", default="all", choices=("all", "train", "test"),
                    help="which split of the dataset to evaluate on (default: all images)")
    ap.add_argument("--json", dest="json_out", help="also write the full report to this file")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads (latency is measured with these)")
    ap.add_argument("--score-threshold", type=float, default=None, help="default: the card's")
    ap.add_argument("--allow-unknown-labels", action="store_true",
                    help="accept dataset classes the model does not know (they show in the confusion matrix)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        train, test, labels = load_dataset_dir(args.dataset, args.format)
        items = {"all": train + test, "train": train, "test": test}[args.split]
        if not items:
            raise DatasetError(f"the dataset's {args.split} split has no images; try --split all")
        report = evaluate_model(args.model, items, threads=args.threads, score_threshold=args.score_threshold,
                                progress=not args.quiet, allow_unknown_labels=args.allow_unknown_labels)
    except (EdgeLoopError, ValueError) as e:
        return _fail(e)
    text = json.dumps(report.to_dict(), indent=2)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text)
    print(text)
    return 0


__all__ = ["train_main", "evaluate_main"]
