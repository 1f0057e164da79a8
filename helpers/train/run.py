"""A training run: `train_detector` (check the data, pick the architecture's loop) and
`train_and_export` (data in, model folder out, evaluated)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from helpers.errors import DatasetError
from helpers.train.data import Item, load_dataset_dir, load_studio_snapshot, split_items, validate_items
from helpers.train.evaluate import evaluate_model
from helpers.train.export import export_result, update_card
from helpers.train.finetune import train_nanodet
from helpers.train.fomo import train_fomo
from helpers.train.ssd import train_ssd
from helpers.train.trainer import TrainParams, TrainResult

# Architectures exported with an int8 network beside the float one by default (`helpers.train.quantize`):
# nanodet-ft runs at 17 ms per frame in float on one core here, 11 ms in int8.
QUANTIZED_ARCHS = ("nanodet-ft",)

# The loop of each architecture in `helpers.train.model.ARCHS`.
ARCH_TRAINERS: dict[str, Callable[..., TrainResult]] = {
    "fomo-box": train_fomo,
    "ssdlite320": train_ssd,
    "nanodet-ft": train_nanodet,
}


def train_detector(train_items: Sequence[Item], val_items: Sequence[Item] | None, labels: Sequence[str],
                   params: TrainParams | None = None, progress: bool = True,
                   callback: Callable[[dict[str, Any]], Any] | None = None) -> TrainResult:
    """Train a detector on (rgb, boxes) pairs.

    Args:
        train_items: training images with their boxes (image pixels).
        val_items: validation images; None or empty: split `params.val_fraction` off the training set
            (none with val_fraction 0: nanodet-ft then keeps the last epoch and `params.score_threshold`).
        labels: class names, in the order of the model's outputs.
        params: the recipe (defaults: the workshop setting); `params.pretrained` names starting weights.
        progress: show a tqdm bar over epochs.
        callback: called after each epoch with {"epoch", "loss", "val_f1", "score_threshold",
            "lr", "elapsed_s"} (for a live plot); return False from it to stop training.

    Returns:
        TrainResult with the best (EMA) model by validation F1.

    Raises:
        DatasetError: empty data, a single image, a class with no boxes, unknown labels.
        ValueError: invalid params.
    """
    params = params or TrainParams()
    params.check()
    labels = list(labels)
    train_items = list(train_items)
    val_items = list(val_items or [])
    if len(set(labels)) != len(labels):
        raise DatasetError(f"labels {labels} contain duplicates")
    validate_items(train_items + val_items, labels, "dataset")
    if not val_items and params.val_fraction > 0:
        train_items, val_items = split_items(train_items, params.val_fraction, params.seed)
    validate_items(train_items, labels, "training split", min_images=1)
    return ARCH_TRAINERS[params.arch](train_items, val_items, labels, params, progress=progress, callback=callback)


def train_and_export(out: str | Path, dataset: str | Path | None = None, fmt: str = "auto",
                     params: Any = None, progress: bool = True, studio: Any = None,
                     callback: Any = None, quantize: bool | None = None, **card_extra: Any) -> dict[str, Any]:
    """Load data, train, export to `out`, evaluate the ONNX; returns a JSON-able summary.

    With `quantize` (default: for the architectures in `QUANTIZED_ARCHS`), `model.int8.onnx` is
    written beside `model.onnx`, calibrated on the training images, both are evaluated on the
    same photos, and the card's `runtime` names the one a device loads and why
    (`helpers.train.quantize.quantize_and_choose`).

    The data is the dataset folder `dataset`, else `studio`'s current snapshot (anything with
    `.snapshot()` and `.get_image(sample_id)`; its test split is the test set). Validation for
    early stopping is split off the training images, never the test split.

    Raises:
        ValueError: neither `dataset` nor `studio` is given.
    """
    if dataset is None and studio is None:
        raise ValueError("train_and_export needs data: pass dataset=<folder> or studio=<a studio client> "
                         "(e.g. helpers.studio.get_studio('local'))")
    params = params or TrainParams()
    if dataset is not None:
        train, test, labels = load_dataset_dir(dataset, fmt)
        source = {"path": str(dataset), "format": fmt}
    else:
        train, test, labels, snap_id = load_studio_snapshot(studio)
        source = {"studio_snapshot": snap_id}
    validate_items(train + test, labels, "dataset")
    train, val = split_items(train, params.val_fraction, params.seed) if params.val_fraction > 0 else (train, [])
    result = train_detector(train, val, labels, params, progress=progress, callback=callback)
    card_extra.setdefault("dataset", {"hash": result.dataset_hash, **source,
                                      "train_images": len(train), "val_images": len(val), "test_images": len(test)})
    onnx_path = export_result(result, out, **card_extra)
    # The test split, else validation; with neither (val_fraction 0, no test split) the training images,
    # named as such in the card: a fit check, not a measure of unseen photos.
    eval_items, eval_on = (test, "test") if test else (val, "validation") if val else (train, "train")
    report = evaluate_model(str(out), eval_items, progress=progress)
    metrics = {"eval_split": eval_on, eval_on: _short_metrics(report.to_dict())}
    update_card(out, metrics=metrics)
    runtime = None
    if quantize if quantize is not None else params.arch in QUANTIZED_ARCHS:
        from helpers.train.quantize import quantize_and_choose

        runtime = quantize_and_choose(out, [rgb for rgb, _ in train], eval_items, split=eval_on, seed=params.seed)
    return {"onnx": str(onnx_path), "card": str(Path(out) / "model.json"), "labels": labels, "runtime": runtime,
            "val_f1": result.val_f1, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "train_time_s": round(result.train_time_s, 1), "score_threshold": result.score_threshold,
            "evaluation": {"split": eval_on, **_short_metrics(report.to_dict())}}


def _short_metrics(d: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluation report (what the card carries)."""
    return {"f1": d["overall"]["f1"], "precision": d["overall"]["precision"], "recall": d["overall"]["recall"],
            "map50": d["map50"], "map": d["map"], "images": d["images"],
            "per_class": {k: {m: v[m] for m in ("f1", "precision", "recall", "ap50", "ap")}
                          for k, v in d["per_class"].items()},
            "confusion": d["confusion"], "latency_ms": d["latency_ms"]}
