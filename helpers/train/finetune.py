"""Fine-tuning `nanodet-ft`: COCO-pretrained NanoDet on the studio's classes.

The starting point is `helpers.train.pretrained` (the COCO weights converted from TF.js, or
a user checkpoint); the head keeps COCO's rows for classes COCO knows, by name
(`nanodet.adapt_head`). Training is NanoDet's own recipe made small: ATSS assignment
(top-9 nearest cells per level, IoU above mean + std, centre inside the box), Quality Focal
Loss on the class scores (target: the predicted box's IoU), GIoU and Distribution Focal Loss
on the box bins, AdamW with warm-up and a cosine decay, weight averaging (EMA), and the same
box-preserving augmentation, validation F1, threshold choice and card as `fomo-box`.

The learning-rate schedule follows training time as well as steps: with `time_budget_s`
the cosine reaches its tail when the budget runs out, so a budgeted run always ends on
decayed weights. Every layer trains, at rates scaled by depth (`LR_SCALE`): the head at the
full rate (1e-3), the neck at a fifth (2e-4), the backbone at a tenth (1e-4). Measured on the
real photos (docs/training.md): with the backbone frozen the training set itself stayed at
F1 0.73 (the network could not fit it); at 1e-4 for the head nothing moved; over 60 epochs
the backbone at 1e-4 beat 5e-5 (validation F1 0.81 vs 0.80, test 0.92 vs 0.90).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from helpers.errors import ModelError
from helpers.geometry import BBox
from helpers.inference.onnx import decode_ssd, to_channels
from helpers.train.augment import AugmentParams, augment
from helpers.train.boxcoding import boxes_to_arrays
from helpers.train.data import Item, dataset_hash
from helpers.train.nanodet import (
    COCO_LABELS,
    NANODET_PREPROCESSING,
    REG_MAX,
    STRIDES,
    NanoDet,
    adapt_head,
    distribution_to_distance,
    grid_points,
)
from helpers.train.pretrained import load_coco_state
from helpers.train.threshold import best_threshold
from helpers.train.trainer import BestEpoch, ModelEMA, TrainParams, TrainResult, set_threads, shrink

ARCH = "nanodet-ft"
INPUT_SIZES = (224, 320, 416)
# Parameter name prefixes that do not train (none: see LR_SCALE).
FROZEN_PREFIXES: tuple[str, ...] = ()
# Learning-rate multipliers by parameter name prefix (the rest: 1). The published weights have
# batch norm folded in, so there is no normalisation to absorb AdamW's per-weight steps: the
# neck's 1x1 weights are about 0.02 in size, and at the head's rate a hundred steps would move
# them by a large part of that (measured: validation F1 fell from 0.66 to 0.62 over three
# epochs with the deeper backbone stages at 2e-4). At a twentieth of the head's 1e-3 the
# backbone adapts without losing COCO's features (validation F1 0.79 against 0.75 frozen); over
# 60 epochs (224 px, 900 CPU s) a tenth for the backbone and a fifth for the neck did better
# still: validation F1 0.81 vs 0.80, test F1 0.92 vs 0.90 (banana 0.90 vs 0.85), seed 0.
LR_SCALE = {"backbone.": 0.1, "fpn.": 0.2}
# ATSS anchor side in strides: NanoDet-g's octave_base_scale. Measured on the COCO weights:
# with 5 (NanoDet-m's value) ATSS put each fruit one level coarser than the level where the
# COCO head detects it best (IoU 0.9), and fine-tuning lowered validation F1 epoch after epoch
# while it moved the detections; with 8 the assigned cells are the ones already firing.
ANCHOR_SCALE = 8.0
LOSS_WEIGHTS = {"qfl": 1.0, "giou": 2.0, "dfl": 0.25}
# Multi-scale training: each batch at one of these input sizes (multiples of 32), drawn from the
# run's seeded generator; validation, threshold choice and export stay at `input_size`. Empty:
# every batch at `input_size`.
MULTI_SCALE: tuple[int, ...] = ()


def recommended_params(**overrides: Any) -> TrainParams:
    """`TrainParams` for fine-tuning (measured on the real-photo bench; see docs/training.md)."""
    base: dict[str, Any] = {"arch": ARCH, "input_size": 224, "epochs": 60, "batch_size": 8, "lr": 1e-3,
                            "weight_decay": 0.05, "ema_decay": 0.98, "patience": 8,
                            "augment": AugmentParams(zoom=(0.6, 1.5), hue_deg=4.0),
                            "score_thresholds": (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)}
    base.update(overrides)
    return TrainParams(**base)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) RGB uint8 -> NanoDet's normalised BGR (N, 3, S, S), channels-last."""
    p = NANODET_PREPROCESSING
    x = torch.from_numpy(to_channels(images, p)).mul_(p["scale"])
    x = (x - torch.tensor(p["mean"])) / torch.tensor(p["std"])
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- assignment and losses
def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-6)


def giou_aligned(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(IoU, GIoU) of matching rows of two (N, 4) xyxy box sets."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1) - inter
    iou = inter / union.clamp(min=1e-6)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    return iou, iou - (hull - union) / hull.clamp(min=1e-6)


def atss_assign(points: torch.Tensor, strides: torch.Tensor, level_counts: Sequence[int], gt: torch.Tensor,
                topk: int = 9) -> torch.Tensor:
    """ATSS: the ground-truth index each cell regresses (-1: background).

    Per level the `topk` cells nearest each box's centre are candidates; a candidate is
    positive when its anchor's IoU with the box is at least the candidates' mean + std and its
    centre lies inside the box. A cell claimed by two boxes takes the one of higher IoU.
    """
    a = points.shape[0]
    out = torch.full((a,), -1, dtype=torch.long)
    if len(gt) == 0:
        return out
    half = strides[:, None] * ANCHOR_SCALE / 2
    anchors = torch.cat([points - half, points + half], 1)
    ious = box_iou(anchors, gt)  # (A, n)
    centres = (gt[:, :2] + gt[:, 2:]) / 2
    dist = torch.cdist(points, centres)  # (A, n)
    cands, start = [], 0
    for c in level_counts:
        k = min(topk, c)
        cands.append(dist[start:start + c].topk(k, dim=0, largest=False).indices + start)
        start += c
    cand = torch.cat(cands, 0)  # (K, n)
    cand_iou = ious.gather(0, cand)
    thr = cand_iou.mean(0) + cand_iou.std(0)
    px, py = points[cand, 0], points[cand, 1]
    inside = (px > gt[:, 0]) & (px < gt[:, 2]) & (py > gt[:, 1]) & (py < gt[:, 3])
    pos = (cand_iou >= thr[None]) & inside
    # A box no candidate passes for (thin or cut by the border) would be trained as background:
    # give it its best inside candidate instead.
    lonely = ~pos.any(0)
    if lonely.any():
        best_inside = torch.where(inside, cand_iou, torch.full_like(cand_iou, -1.0)).argmax(0)
        for g in lonely.nonzero().flatten().tolist():
            if inside[best_inside[g], g]:
                pos[best_inside[g], g] = True
    score = torch.full((a, len(gt)), -1.0)
    gi = torch.arange(len(gt))[None].expand_as(cand)
    score[cand[pos], gi[pos]] = cand_iou[pos]
    best, idx = score.max(1)
    out[best >= 0] = idx[best >= 0]
    return out


def gfl_loss(cls: torch.Tensor, reg: torch.Tensor, points: torch.Tensor, strides: torch.Tensor,
             level_counts: Sequence[int], targets: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, float]]:
    """Quality Focal + GIoU + Distribution Focal loss (GFL, as NanoDet trains).

    Args:
        cls: (N, A, C) class logits; reg: (N, A, 4, REG_MAX+1) bin logits.
        targets: per image (boxes (n, 4) xyxy in input pixels, classes (n,)).
    """
    n, a, c = cls.shape
    assigned = torch.stack([atss_assign(points, strides, level_counts, b) for b, _ in targets])  # (N, A)
    pos = assigned >= 0
    num_pos = max(int(pos.sum()), 1)
    score_t = torch.zeros_like(cls)
    if pos.any():
        bi, ai = pos.nonzero(as_tuple=True)
        gi = assigned[bi, ai]
        gt_boxes = torch.stack([targets[b][0][g] for b, g in zip(bi.tolist(), gi.tolist())])
        gt_cls = torch.stack([targets[b][1][g] for b, g in zip(bi.tolist(), gi.tolist())])
        p, s = points[ai], strides[ai][:, None]
        reg_pos = reg[bi, ai]  # (P, 4, R+1)
        d = distribution_to_distance(reg_pos) * s
        pred = torch.cat([p - d[:, :2], p + d[:, 2:]], 1)
        iou, giou = giou_aligned(pred, gt_boxes)
        score_t[bi, ai, gt_cls] = iou.detach().clamp(min=1e-6)
        weight = torch.sigmoid(cls[bi, ai].detach()).max(-1).values
        wsum = weight.sum().clamp(min=1e-6)
        loss_giou = ((1 - giou) * weight).sum() / wsum
        t = torch.cat([p - gt_boxes[:, :2], gt_boxes[:, 2:] - p], 1) / s
        t = t.clamp(0, REG_MAX - 0.01)
        left = t.floor().long()
        wl = (left + 1).float() - t
        logits = reg_pos.reshape(-1, REG_MAX + 1)
        dfl = (F.cross_entropy(logits, left.reshape(-1), reduction="none") * wl.reshape(-1)
               + F.cross_entropy(logits, (left + 1).reshape(-1), reduction="none") * (1 - wl).reshape(-1))
        loss_dfl = (dfl.reshape(-1, 4).mean(1) * weight).sum() / wsum
    else:
        loss_giou = loss_dfl = cls.sum() * 0
    prob = torch.sigmoid(cls)
    qfl = F.binary_cross_entropy_with_logits(cls, score_t, reduction="none") * (prob - score_t).abs().pow(2)
    loss_qfl = qfl.sum() / num_pos
    w = LOSS_WEIGHTS
    total = w["qfl"] * loss_qfl + w["giou"] * loss_giou + w["dfl"] * loss_dfl
    return total, {"qfl": float(loss_qfl.detach()), "giou": float(loss_giou.detach()), "dfl": float(loss_dfl.detach()),
                   "pos": num_pos}


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def predict_items(model: NanoDet, items: Sequence[Item], labels: Sequence[str], size: int,
                  score_threshold: float = 0.05, batch_size: int = 16) -> list[list[BBox]]:
    """Boxes per item from the torch model, decoded as the device decodes the ONNX."""
    model.eval()
    out: list[list[BBox]] = []
    for k in range(0, len(items), batch_size):
        chunk = items[k:k + batch_size]
        imgs = np.stack([augment(rgb, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), size, None)[0]
                         for rgb, _ in chunk])
        boxes, scores = model.export_forward(to_tensor(imgs))
        for j, (rgb, _) in enumerate(chunk):
            out.append(decode_ssd(boxes[j].numpy(), scores[j].numpy(), labels, (rgb.shape[1], rgb.shape[0]), size,
                                  score_threshold, nms_iou=0.6))
    return out


def param_groups(model: NanoDet, frozen: Sequence[str] | None = None,
                 lr_scale: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups: `{"params", "scale"}` per learning-rate multiplier.

    Parameters under a `frozen` prefix stop requiring gradients (autograd then skips their
    backward pass); the rest take the multiplier of their first matching `lr_scale` prefix, or 1.
    Defaults: `FROZEN_PREFIXES`, `LR_SCALE`. The training loop sets each group's rate to
    lr x scale x the schedule's factor.
    """
    frozen = tuple(FROZEN_PREFIXES if frozen is None else frozen)
    lr_scale = LR_SCALE if lr_scale is None else lr_scale
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen))
        if p.requires_grad:
            scale = next((v for k, v in lr_scale.items() if name.startswith(k)), 1.0)
            groups.setdefault(scale, []).append(p)
    return [{"params": ps, "scale": sc} for sc, ps in sorted(groups.items())]


def build_model(labels: Sequence[str], checkpoint: str | None = None,
                workspace: Any = None) -> tuple[NanoDet, dict[str, Any], list[str]]:
    """NanoDet for `labels` from the COCO weights (or `checkpoint`); (model, provenance, labels from COCO)."""
    state, prov = load_coco_state(checkpoint=checkpoint)
    n_src = state["head.gfl.0.bias"].shape[0] - 4 * (REG_MAX + 1)
    src_labels = COCO_LABELS if n_src == len(COCO_LABELS) else tuple(f"class{i}" for i in range(n_src))
    state, reused = adapt_head(state, labels, src_labels)
    model = NanoDet(len(labels))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"starting weights do not fit NanoDet: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model, prov, reused


def train_nanodet(train_items: Sequence[Item], val_items: Sequence[Item], labels: Sequence[str], params: TrainParams,
                  progress: bool = True, callback: Callable[[dict[str, Any]], Any] | None = None) -> TrainResult:
    """Fine-tune NanoDet from COCO weights; returns a `TrainResult` (card includes `pretrained`).

    Raises:
        WeightsMissing: the COCO weights were never fetched (`make weights`) and no
            `params.pretrained` checkpoint file was given.
    """
    size = params.input_size
    ckpt = params.pretrained if params.pretrained not in (None, "", "coco") else None
    model, prov, reused = build_model(labels, ckpt)
    model = model.to(memory_format=torch.channels_last)
    set_threads(params)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    ds_hash = dataset_hash(list(train_items) + list(val_items))
    train_items = shrink(train_items, size * 2)
    val_items = list(val_items)
    groups = param_groups(model)
    trainable = [p for g in groups for p in g["params"]]
    ema = ModelEMA(model, params.ema_decay) if params.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(groups, lr=params.lr, weight_decay=params.weight_decay)
    bs = params.batch_size
    steps_per_epoch = max(1, len(train_items) // bs + (len(train_items) % bs >= 2))
    total = steps_per_epoch * params.epochs
    warm = min(total // 10 + 1, 2 * steps_per_epoch)
    grids = {sz: (*grid_points(sz), [math.ceil(sz / s) ** 2 for s in STRIDES]) for sz in (size, *MULTI_SCALE)}
    gts = [list(b) for _, b in val_items]
    history: list[dict[str, Any]] = []
    best = BestEpoch(params)
    clock = time.process_time if params.budget_clock == "cpu" else time.perf_counter
    t0, c0, p0 = time.perf_counter(), clock(), time.process_time()
    step = last_epoch = 0

    def lr_factor() -> float:  # warm-up, then cosine to 5 % over steps or time, whichever ends first
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, total - warm)
        if params.time_budget_s:
            frac = max(frac, (clock() - c0) / params.time_budget_s)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    # No validation (val_fraction 0): every image trains, the threshold is the recipe's and the last
    # epoch's averaged weights are kept (`TrainParams.val_fraction`).
    validating = bool(val_items)
    # Epoch 0: the starting weights as they are (for COCO's classes, the zero-shot score).
    if validating:
        f1, thr, metrics = best_threshold(gts, predict_items(model, val_items, labels, size), labels,
                                          params.threshold_candidates(), params.threshold_rule)
        history.append({"epoch": 0, "val_f1": round(f1, 4), "score_threshold": thr, "elapsed_s": 0.0})
        best.update(0, f1, thr, metrics, model)
    else:
        history.append({"epoch": 0, "score_threshold": params.score_threshold, "elapsed_s": 0.0})
    if callback is not None:
        callback(history[0])
    bar = None
    if progress:
        bar = tqdm(total=params.epochs, desc=f"train {ARCH} {size}px", unit="epoch")
    try:
        for epoch in range(1, params.epochs + 1):
            model.train()
            order = rng.permutation(len(train_items))
            batches = [order[k:k + bs] for k in range(0, len(order), bs)]
            if len(batches) > 1 and len(batches[-1]) < 2:
                batches = batches[:-1]
            tot, n_img, parts = 0.0, 0, {"qfl": 0.0, "giou": 0.0, "dfl": 0.0}
            for idx in batches:
                imgs, targets = [], []
                bsize = int(rng.choice(MULTI_SCALE)) if MULTI_SCALE else size
                points, strides, counts = grids[bsize]
                for i in idx:
                    rgb, boxes = train_items[i]
                    xyxy, cl = boxes_to_arrays(boxes, labels)
                    img, bx, c = augment(rgb, xyxy, cl, bsize, rng, params.augment)
                    imgs.append(img)
                    targets.append((torch.from_numpy(bx).float().reshape(-1, 4), torch.from_numpy(c).long()))
                for g in optimizer.param_groups:
                    g["lr"] = params.lr * g["scale"] * lr_factor()
                cls, reg = model(to_tensor(np.stack(imgs)))
                loss, info = gfl_loss(cls, reg, points, strides, counts, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 35.0)
                optimizer.step()
                step += 1
                if ema is not None:
                    ema.update(model)
                tot += float(loss.detach()) * len(idx)
                n_img += len(idx)
                for k in parts:
                    parts[k] += info[k] * len(idx)
            eval_model = ema.module if ema is not None else model
            last_epoch = epoch
            val: dict[str, Any] = {}
            if validating:
                preds = predict_items(eval_model, val_items, labels, size)
                f1, thr, metrics = best_threshold(gts, preds, labels, params.threshold_candidates(),
                                                  params.threshold_rule)
                val = {"val_f1": round(f1, 4), "score_threshold": thr}
            elapsed = time.perf_counter() - t0
            spent = clock() - c0
            rec = {"epoch": epoch, "loss": round(tot / max(n_img, 1), 5),
                   **(val or {"score_threshold": params.score_threshold}),
                   "lr": max(g["lr"] for g in optimizer.param_groups), "elapsed_s": round(elapsed, 1),
                   "cpu_s": round(time.process_time() - p0, 1), **{k: round(v / max(n_img, 1), 4) for k, v in parts.items()}}
            history.append(rec)
            if validating:
                best.update(epoch, f1, thr, metrics, eval_model)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}",
                                **({"val_f1": f"{f1:.3f}", "best": f"{best.f1:.3f}"} if validating else {}))
            if callback is not None and callback(rec) is False:
                break
            if validating and best.should_stop(epoch):
                break
            if params.time_budget_s is not None and spent >= params.time_budget_s:
                break
    finally:
        if bar is not None:
            bar.close()
    final = NanoDet(len(labels))
    if validating:
        final.load_state_dict(best.state)
        kept, val_f1, threshold, val_metrics = best.epoch, best.f1, best.threshold, best.metrics
    else:
        final.load_state_dict((ema.module if ema is not None else model).state_dict())
        threshold = float(params.score_threshold)
        kept, val_f1 = last_epoch, None
        val_metrics = {"threshold_choice": {"rule": "fixed", "images": 0, "score_threshold": threshold}}
    final.eval()
    result = TrainResult(model=final, labels=list(labels), params=params, history=history, best_epoch=kept,
                         val_f1=val_f1, score_threshold=threshold, train_time_s=time.perf_counter() - t0,
                         dataset_hash=ds_hash, val_metrics=val_metrics,
                         num_parameters=sum(p.numel() for p in final.parameters()),
                         pretrained={**prov, "head_rows_from_coco": reused})
    return result
