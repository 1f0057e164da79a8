"""Training `fomo-box`, our CenterNet-style detector (`helpers.train.model.FomoBox`): losses,
batches, the epoch loop, validation with the device's decoding, and starting weights."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from helpers.geometry import BBox
from helpers.inference.onnx import decode, input_channels, preprocessing_for
from helpers.train.augment import AugmentParams, augment
from helpers.train.boxcoding import boxes_to_arrays, encode
from helpers.train.data import Item, dataset_hash
from helpers.train.model import LOG_LTRB_RANGE, FomoBox, count_parameters
from helpers.train.threshold import best_threshold
from helpers.train.trainer import BestEpoch, ModelEMA, TrainParams, TrainResult, set_threads, shrink, to_tensor

VAL_DECODE_THRESHOLD = 0.05


# ----------------------------------------------------------------------------- losses
def focal_heat_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    pos = target.eq(1).float()
    neg = 1 - pos
    logp = F.logsigmoid(logits)
    log1mp = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = (logp * (1 - p) ** 2 * pos).sum()
    # (1 - target)^4 lowers the penalty near a centre: a peak one cell off is almost right.
    neg_loss = (log1mp * p**2 * (1 - target) ** 4 * neg).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1.0)


def box_loss(pred_log: torch.Tensor, target_log: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 on log distances at the regression cells, Gaussian-weighted."""
    w = weight[:, None]
    return (torch.abs(pred_log.clamp(*LOG_LTRB_RANGE) - target_log) * w).sum() / (w.sum() * 4).clamp(min=1.0)


def _batch_targets(items: Sequence[Item], idx: Sequence[int], labels: Sequence[str], size: int,
                   rng: np.random.Generator | None, aug: AugmentParams, color: str = "RGB"):
    imgs, heats, regs, weights = [], [], [], []
    for i in idx:
        rgb, boxes = items[i]
        xyxy, cls = boxes_to_arrays(boxes, labels)
        img, bx, cl = augment(rgb, xyxy, cls, size, rng, aug)
        h, r, w = encode(bx, cl, len(labels), size)
        imgs.append(img)
        heats.append(h)
        regs.append(r)
        weights.append(w)
    return (to_tensor(np.stack(imgs), color), torch.from_numpy(np.stack(heats)), torch.from_numpy(np.stack(regs)),
            torch.from_numpy(np.stack(weights)))


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    items: Sequence[Item], labels: Sequence[str], params: TrainParams,
                    rng: np.random.Generator, ema: ModelEMA | None) -> float:
    """One pass over `items` in random order with augmentation; returns the mean loss."""
    model.train()
    order = rng.permutation(len(items))
    bs = params.batch_size
    # Drop a last batch of one: batch norm cannot normalise a single image's statistics well.
    batches = [order[k:k + bs] for k in range(0, len(order), bs)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches = batches[:-1]
    total, n = 0.0, 0

    def make(idx: Sequence[int]):
        return _batch_targets(items, idx, labels, params.input_size, rng, params.augment, params.color)

    # With `prefetch` the next batch is augmented on a second thread while torch trains on this one
    # (OpenCV and numpy release the GIL; augmentation is about a fifth of an epoch at 160 px). One
    # producer thread, batches in order, so the random draws and the result are those of the serial loop.
    prefetch = params.prefetch if params.prefetch is not None else torch.get_num_threads() == 1
    if not prefetch:
        for idx in batches:
            total += _train_step(model, optimizer, scheduler, ema, *make(idx)) * len(idx)
            n += len(idx)
        return total / max(n, 1)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="augment") as pool:
        pending = pool.submit(make, batches[0]) if batches else None
        for k, idx in enumerate(batches):
            batch = pending.result()
            pending = pool.submit(make, batches[k + 1]) if k + 1 < len(batches) else None
            total += _train_step(model, optimizer, scheduler, ema, *batch) * len(idx)
            n += len(idx)
    return total / max(n, 1)


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, ema: ModelEMA | None,
                x: torch.Tensor, heat_t: torch.Tensor, reg_t: torch.Tensor, w_t: torch.Tensor) -> float:
    """One optimisation step on a prepared batch; returns its loss."""
    heat_p, reg_p = model(x)
    loss = focal_heat_loss(heat_p, heat_t) + box_loss(reg_p, reg_t, w_t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimizer.step()
    scheduler.step()
    if ema is not None:
        ema.update(model)
    return float(loss.detach())


@torch.no_grad()
def predict_items(model: torch.nn.Module, items: Sequence[Item], labels: Sequence[str], input_size: int,
                  score_threshold: float = VAL_DECODE_THRESHOLD, batch_size: int = 32,
                  color: str = "RGB") -> list[list[BBox]]:
    """Boxes for each item with the torch model, decoded exactly as on the device."""
    model.eval()
    out: list[list[BBox]] = []
    for k in range(0, len(items), batch_size):
        chunk = items[k:k + batch_size]
        imgs = np.stack([cv2.resize(rgb, (input_size, input_size),
                                    interpolation=cv2.INTER_AREA if max(rgb.shape[:2]) > input_size else cv2.INTER_LINEAR)
                         for rgb, _ in chunk])
        heat, reg = model.export_forward(to_tensor(imgs, color))
        for j, (rgb, _) in enumerate(chunk):
            out.append(decode(heat[j].numpy(), reg[j].numpy(), labels, (rgb.shape[1], rgb.shape[0]), input_size,
                              score_threshold))
    return out


# ----------------------------------------------------------------------------- starting weights
def load_matching_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], labels: Sequence[str],
                          source_labels: Sequence[str]) -> int:
    """Copy every weight whose name and shape match; map heat-map rows by label name.

    Returns:
        How many tensors were copied.
    """
    own = model.state_dict()
    copied = 0
    for k, v in state.items():
        if k not in own:
            continue
        if own[k].shape == v.shape and not k.startswith("heat.1."):
            own[k] = v.clone()
            copied += 1
        elif k.startswith("heat.1."):
            # The last heat-map conv has one row per class: reuse the rows of shared labels.
            for i, name in enumerate(labels):
                if name in source_labels:
                    own[k][i] = v[list(source_labels).index(name)]
            copied += 1
    model.load_state_dict(own)
    return copied




def load_pretrained(path: str | Path, labels: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict, its labels) of a starting-weights file.

    The labels come from `<name>.json` beside the `.pt` ({"labels": [...]}, as
    `helpers.sim.pretrain` writes); without one the weights are taken to have `labels`.
    """
    p = Path(path)
    state = torch.load(p, map_location="cpu", weights_only=True)
    side = p.with_suffix(".json")
    src_labels = json.loads(side.read_text())["labels"] if side.is_file() else list(labels)
    return state, list(src_labels)


def train_fomo(train_items: Sequence[Item], val_items: Sequence[Item], labels: Sequence[str], params: TrainParams,
               progress: bool = True, callback: Callable[[dict[str, Any]], Any] | None = None) -> TrainResult:
    """Train fomo-box on checked items (`helpers.train.run.train_detector` checks and splits them)."""
    set_threads(params)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    ds_hash = dataset_hash(train_items + val_items)
    train_items = shrink(train_items, params.input_size * 2)
    channels = input_channels(preprocessing_for(params.color))
    model = FomoBox(len(labels), params.width, in_channels=channels).to(memory_format=torch.channels_last)
    if params.pretrained:
        state, src_labels = load_pretrained(params.pretrained, labels)
        load_matching_weights(model, state, labels, src_labels)
    ema = ModelEMA(model, params.ema_decay) if params.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = max(1, len(train_items) // params.batch_size + (len(train_items) % params.batch_size >= 2))
    total = steps_per_epoch * params.epochs
    warm = min(total // 10 + 1, 3 * steps_per_epoch)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 5 %
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    gts = [list(b) for _, b in val_items]
    history: list[dict[str, Any]] = []
    best = BestEpoch(params)
    t0 = time.perf_counter()
    bar = None
    if progress:
        bar = tqdm(total=params.epochs, desc=f"train {params.arch} {params.input_size}px", unit="epoch")
    try:
        for epoch in range(1, params.epochs + 1):
            loss = train_one_epoch(model, optimizer, scheduler, train_items, labels, params, rng, ema)
            eval_model = ema.module if ema is not None else model
            preds = predict_items(eval_model, val_items, labels, params.input_size, color=params.color)
            f1, thr, metrics = best_threshold(gts, preds, labels, params.threshold_candidates(), params.threshold_rule)
            elapsed = time.perf_counter() - t0
            rec = {"epoch": epoch, "loss": round(loss, 5), "val_f1": round(f1, 4), "score_threshold": thr,
                   "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(elapsed, 1)}
            history.append(rec)
            best.update(epoch, f1, thr, metrics, eval_model)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", val_f1=f"{f1:.3f}", best=f"{best.f1:.3f}")
            if callback is not None and callback(rec) is False:
                break
            if best.should_stop(epoch):
                break
            if params.time_budget_s is not None and elapsed >= params.time_budget_s:
                break
    finally:
        if bar is not None:
            bar.close()
    final = FomoBox(len(labels), params.width, in_channels=channels)
    final.load_state_dict(best.state)
    final.eval()
    return TrainResult(model=final, labels=labels, params=params, history=history, best_epoch=best.epoch,
                       val_f1=best.f1, score_threshold=best.threshold, train_time_s=time.perf_counter() - t0,
                       dataset_hash=ds_hash, val_metrics=best.metrics, num_parameters=count_parameters(final))
