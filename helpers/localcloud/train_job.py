"""The local studio's training job: `python -m helpers.localcloud.train_job --workspace WS --out DIR --params JSON`.

Started by `POST /v1/api/{projectId}/jobs/train/keras/{learnId}` (the stand-in of Edge Impulse's
`JobsApi.train_keras_job`) as a background process. It trains `helpers.train` on the studio's
labeled snapshot with the impulse's settings, exports `model.onnx` + `model.json` into `--out`,
evaluates the ONNX file on the snapshot's test split, and prints one line per epoch and a
closing summary on stdout: the job log that `JobsApi.get_jobs_logs` serves. Exit status 0 on
success, 2 with `error: ...` on a dataset or settings problem.

The impulse's settings become exactly the `TrainParams` a notebook builds in its kernel for the
same values (`train_params`): `nanodet-ft` starts from `finetune.recommended_params`, every
other architecture from the `TrainParams` defaults. So the same seed gives the same model.

Each epoch line (`format_epoch_line`) is readable and parseable: `parse_epoch_line` turns it
back into the record `helpers.train.trainer.train_detector` passes its callback, so the
notebook's live plot runs from the job's log (`helpers.ui.JobLog`).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

EPOCH_RE = re.compile(r"^Epoch (?P<epoch>\d+)/(?P<epochs>\d+): loss (?P<loss>\S+), validation F1 (?P<val_f1>\S+), "
                      r"score threshold (?P<score_threshold>\S+), lr (?P<lr>\S+), (?P<elapsed_s>\S+) s$")


def format_epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """One epoch of `train_detector`'s callback records as a log line (same rounding as the record)."""
    def num(key: str, fmt: str) -> str:
        v = rec.get(key)
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(float(v), fmt)

    return (f"Epoch {int(rec['epoch'])}/{int(epochs)}: loss {num('loss', '.5f')}, validation F1 {num('val_f1', '.4f')}, "
            f"score threshold {num('score_threshold', '.2f')}, lr {num('lr', '.4g')}, {num('elapsed_s', '.1f')} s")


def parse_epoch_line(line: str) -> dict[str, Any] | None:
    """The record of an epoch line written by `format_epoch_line`; None for any other line."""
    m = EPOCH_RE.match(line.strip())
    if m is None:
        return None
    try:
        rec: dict[str, Any] = {"epoch": int(m["epoch"]), "epochs": int(m["epochs"])}
        for key in ("loss", "val_f1", "score_threshold", "lr", "elapsed_s"):
            rec[key] = float(m[key])
    except ValueError:
        return None
    return rec


def train_params(p: dict[str, Any]) -> Any:
    """`TrainParams` from the job's settings (the impulse: arch, epochs, learningRate, batchSize,
    inputSize, color, seed, valFraction, timeBudgetS), built as the notebooks build them."""
    from helpers.train.trainer import TrainParams

    budget = p.get("timeBudgetS")
    kw: dict[str, Any] = {"arch": p["arch"], "epochs": int(p["epochs"]), "lr": float(p["learningRate"]),
                          "batch_size": int(p["batchSize"]), "input_size": int(p["inputSize"]), "color": p["color"],
                          "seed": int(p.get("seed", 0)), "val_fraction": float(p.get("valFraction", 0.2)),
                          "time_budget_s": None if budget in (None, "") else float(budget)}
    if kw["arch"] == "nanodet-ft":
        from helpers.train.finetune import recommended_params

        return recommended_params(**kw)
    return TrainParams(**kw)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.localcloud.train_job")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", required=True,
                    help="JSON: arch, epochs, learningRate, batchSize, inputSize, color, seed, valFraction, timeBudgetS")
    args = ap.parse_args(argv)
    from helpers.errors import EdgeLoopError
    from helpers.studio import get_studio
    from helpers.train.cli import train_and_export

    p = json.loads(args.params)
    try:
        params = train_params(p)
        params.check()
        from helpers.config import load_settings

        threads = params.threads or load_settings(args.workspace).torch_threads
        budget = f", time budget {params.time_budget_s:g} s" if params.time_budget_s else ""
        print(f"Training {params.arch} on the studio's labeled samples: {params.epochs} training cycles, "
              f"learning rate {params.lr}, batch size {params.batch_size}, {params.input_size}x{params.input_size} {params.color}, "
              f"seed {params.seed}, validation {params.val_fraction:g}{budget}, {threads} torch threads", flush=True)

        def on_epoch(rec: dict[str, Any]) -> None:
            print(format_epoch_line(rec, params.epochs), flush=True)

        studio = get_studio("local", workspace=args.workspace)
        summary = train_and_export(args.out, None, params=params, progress=False, studio=studio, callback=on_epoch,
                                   studio_job={"source": "local studio training job"})
    except (EdgeLoopError, ValueError, KeyError) as e:
        print(f"error: {e}", flush=True)
        return 2
    ev = summary["evaluation"]
    print(f"Finished training: best epoch {summary['best_epoch']} of {summary['epochs_run']}, validation F1 "
          f"{summary['val_f1']:.4f} at score threshold {summary['score_threshold']}, {summary['train_time_s']:.1f} s; "
          f"{ev['split']} F1 {ev['f1']:.3f}, mAP50 {ev['map50']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
