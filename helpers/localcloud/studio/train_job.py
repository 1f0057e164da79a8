"""The local studio's training job: `python -m helpers.localcloud.studio.train_job --workspace WS --out DIR --params JSON`.

Started by `POST /v1/api/{projectId}/jobs/train/keras/{learnId}` (the stand-in of Edge Impulse's
`JobsApi.train_keras_job`) as a background process. It trains `helpers.train` on the studio's
labeled snapshot, read straight from the studio's own store (`StoreSnapshots`), with the
impulse's settings, exports `model.onnx` + `model.json` into `--out`, evaluates the ONNX file on
the snapshot's test split, and prints one line per epoch and a closing summary on stdout: the
job log that `JobsApi.get_jobs_logs` serves. Exit status 0 on success, 2 with `error: ...` on a
dataset or settings problem.

The impulse's settings become exactly the `TrainParams` a notebook builds in its kernel for the
same values (`train_params`): `nanodet-ft` starts from `finetune.recommended_params`, every
other architecture from the `TrainParams` defaults. So the same seed gives the same model.

Each epoch line is `helpers.protocol.joblog.format_epoch_line`'s, so the notebook's live plot
runs from the job's log (`helpers.ui.JobLog`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import load_settings
from helpers.endpoints import cloud_dir
from helpers.errors import EdgeLoopError
from helpers.geometry import BBox, boxes_from_dicts
from helpers.localcloud.common.db import Store
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store
from helpers.protocol.joblog import format_epoch_line
from helpers.train.finetune import recommended_params
from helpers.train.run import train_and_export
from helpers.train.trainer import TrainParams


@dataclass(frozen=True)
class SnapshotItem:
    """One labeled sample of a snapshot, as `helpers.train` reads it."""

    sample_id: int
    filename: str
    split: str  # "train" | "test"
    boxes: list[BBox] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    id: str
    labels: list[str]
    items: list[SnapshotItem]


class StoreSnapshots:
    """The studio's labeled samples straight from its store: what `train_and_export(studio=...)` reads.

    `snapshot()` freezes the labeled samples as `POST /api/snapshots` does (same id for the same
    content); `get_image(sample_id)` gives a sample's file.
    """

    def __init__(self, db: Store, files: Path):
        self.db, self.files = db, Path(files)

    @classmethod
    def of_workspace(cls, workspace: str | Path) -> StoreSnapshots:
        d = cloud_dir(workspace)
        return cls(Store(d / "state.db"), d / "files")

    def snapshot(self) -> Snapshot:
        body = store.create_snapshot(self.db)
        items = [SnapshotItem(sample_id=int(i["sample_id"]), filename=i["filename"], split=i["split"],
                              boxes=boxes_from_dicts(i["boxes"])) for i in body["items"]]
        return Snapshot(id=body["id"], labels=list(body["labels"]), items=items)

    def get_image(self, sample_id: int) -> bytes:
        with self.db.read() as conn:
            row = store.get_sample(conn, int(sample_id))
        return store.sample_bytes(self.files, row)

    def close(self) -> None:
        self.db.close()


def train_params(p: dict[str, Any]) -> TrainParams:
    """`TrainParams` from the job's settings (the impulse: arch, epochs, learningRate, batchSize,
    inputSize, color, seed, valFraction, timeBudgetS), built as the notebooks build them."""
    budget = p.get("timeBudgetS")
    kw: dict[str, Any] = {"arch": p["arch"], "epochs": int(p["epochs"]), "lr": float(p["learningRate"]),
                          "batch_size": int(p["batchSize"]), "input_size": int(p["inputSize"]), "color": p["color"],
                          "seed": int(p.get("seed", 0)), "val_fraction": float(p.get("valFraction", 0.2)),
                          "time_budget_s": None if budget in (None, "") else float(budget)}
    if kw["arch"] == "nanodet-ft":
        return recommended_params(**kw)
    return TrainParams(**kw)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.localcloud.studio.train_job")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", required=True,
                    help="JSON: arch, epochs, learningRate, batchSize, inputSize, color, seed, valFraction, timeBudgetS")
    args = ap.parse_args(argv)
    p = json.loads(args.params)
    try:
        params = train_params(p)
        params.check()
        threads = params.threads or load_settings(args.workspace).torch_threads
        budget = f", time budget {params.time_budget_s:g} s" if params.time_budget_s else ""
        print(f"Training {params.arch} on the studio's labeled samples: {params.epochs} training cycles, "
              f"learning rate {params.lr}, batch size {params.batch_size}, {params.input_size}x{params.input_size} {params.color}, "
              f"seed {params.seed}, validation {params.val_fraction:g}{budget}, {threads} torch threads", flush=True)

        def on_epoch(rec: dict[str, Any]) -> None:
            print(format_epoch_line(rec, params.epochs), flush=True)

        snapshots = StoreSnapshots.of_workspace(args.workspace)
        try:
            summary = train_and_export(args.out, None, params=params, progress=False, studio=snapshots, callback=on_epoch,
                                       studio_job={"source": "local studio training job"})
        finally:
            snapshots.close()
    except ApiError as e:
        print(f"error: {e.message}", flush=True)
        return 2
    except (EdgeLoopError, ValueError, KeyError) as e:
        print(f"error: {e}", flush=True)
        return 2
    ev = summary["evaluation"]
    val = "none (no validation)" if summary["val_f1"] is None else f"{summary['val_f1']:.4f}"
    print(f"Finished training: best epoch {summary['best_epoch']} of {summary['epochs_run']}, validation F1 "
          f"{val} at score threshold {summary['score_threshold']}, {summary['train_time_s']:.1f} s; "
          f"{ev['split']} F1 {ev['f1']:.3f}, mAP50 {ev['map50']:.3f}", flush=True)
    return 0


__all__ = ["Snapshot", "SnapshotItem", "StoreSnapshots", "main", "train_params"]

if __name__ == "__main__":
    sys.exit(main())
