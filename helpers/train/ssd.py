"""Training torchvision's SSDLite320-MobileNetV3 (the tutorial's model class), for comparison.

Needs the `[ssd]` extra (torchvision). The network is trained with torchvision's own losses
and exported through `SSDExportWrapper` (boxes + softmax scores, no data-dependent ops), so
the device decodes it with the same OpenCV NMS as `fomo-box` and the metrics are comparable.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from helpers.geometry import BBox
from helpers.inference.onnx import decode_ssd
from helpers.train.augment import augment
from helpers.train.boxcoding import boxes_to_arrays
from helpers.train.data import Item, dataset_hash
from helpers.train.model import SSDExportWrapper, build_ssdlite, count_parameters
from helpers.train.threshold import best_threshold
from helpers.train.trainer import BestEpoch, TrainParams, TrainResult, set_threads, shrink, to_tensor


def _inputs(items: Sequence[Item], idx: Sequence[int], labels: Sequence[str], size: int,
            rng: np.random.Generator | None, params: Any):
    """Images as 0..1 float tensors (torchvision's transform normalises them) and targets."""
    images, targets = [], []
    for i in idx:
        rgb, boxes = items[i]
        xyxy, cls = boxes_to_arrays(boxes, labels)
        img, bx, cl = augment(rgb, xyxy, cls, size, rng, params.augment)
        images.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
        # torchvision reserves class 0 for the background.
        targets.append({"boxes": torch.from_numpy(bx).float().reshape(-1, 4),
                        "labels": torch.from_numpy(cl + 1).long()})
    return images, targets


@torch.no_grad()
def _predict(wrapper: SSDExportWrapper, items: Sequence[Item], labels: Sequence[str], size: int,
             thr: float) -> list[list[BBox]]:
    wrapper.eval()
    out = []
    for rgb, _ in items:
        img, _, _ = augment(rgb, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), size, None)
        boxes, scores = wrapper(to_tensor(img[None]))
        out.append(decode_ssd(boxes[0].numpy(), scores[0].numpy(), labels, (rgb.shape[1], rgb.shape[0]), size, thr))
    return out


def train_ssd(train_items: Sequence[Item], val_items: Sequence[Item], labels: Sequence[str], params: TrainParams,
              progress: bool = True, callback: Callable[[dict[str, Any]], Any] | None = None) -> TrainResult:
    """Train SSDLite320 from scratch; returns a `TrainResult` whose model is the export wrapper.

    Raises:
        MissingExtra: torchvision is not installed (`pip install .[ssd]`).
    """
    size = params.input_size
    model = build_ssdlite(len(labels), size)  # raises MissingExtra first, before any work
    set_threads(params)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    ds_hash = dataset_hash(list(train_items) + list(val_items))
    train_items = shrink(train_items, size * 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    steps = max(1, math.ceil(len(train_items) / params.batch_size)) * params.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=steps, pct_start=0.1)
    gts = [list(b) for _, b in val_items]
    history: list[dict[str, Any]] = []
    best = BestEpoch(params)
    t0 = time.perf_counter()
    bar = None
    if progress:
        bar = tqdm(total=params.epochs, desc=f"train ssdlite320 {size}px", unit="epoch")
    try:
        for epoch in range(1, params.epochs + 1):
            model.train()
            order = rng.permutation(len(train_items))
            total, n = 0.0, 0
            for k in range(0, len(order), params.batch_size):
                idx = order[k:k + params.batch_size]
                if len(idx) < 2:  # batch norm needs two images
                    continue
                images, targets = _inputs(train_items, idx, labels, size, rng, params)
                losses = model(images, targets)
                loss = sum(losses.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(idx)
                n += len(idx)
            wrapper = SSDExportWrapper(model, size)
            preds = _predict(wrapper, val_items, labels, size, 0.05)
            f1, thr, metrics = best_threshold(gts, preds, labels, params.threshold_candidates(), params.threshold_rule)
            elapsed = time.perf_counter() - t0
            rec = {"epoch": epoch, "loss": round(total / max(n, 1), 5), "val_f1": round(f1, 4),
                   "score_threshold": thr, "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(elapsed, 1)}
            history.append(rec)
            best.update(epoch, f1, thr, metrics, model)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", val_f1=f"{f1:.3f}")
            if callback is not None and callback(rec) is False:
                break
            if best.should_stop(epoch):
                break
            if params.time_budget_s is not None and elapsed >= params.time_budget_s:
                break
    finally:
        if bar is not None:
            bar.close()
    model.load_state_dict(best.state)
    model.eval()
    wrapper = SSDExportWrapper(model, size).eval()
    return TrainResult(model=wrapper, labels=list(labels), params=params, history=history, best_epoch=best.epoch,
                       val_f1=best.f1, score_threshold=best.threshold, train_time_s=time.perf_counter() - t0,
                       dataset_hash=ds_hash, val_metrics=best.metrics, num_parameters=count_parameters(model))
