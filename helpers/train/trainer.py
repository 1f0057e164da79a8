"""Training loop for the detectors: `train_detector(train_items, val_items, labels, params)`.

Built like torchvision's references/detection: an explicit `train_one_epoch` and a
validation step, arguments checked up front. Validation F1 is measured with the same
decoding the devices run (`helpers.inference.detector.decode`), drives early stopping and picks the
score threshold written into the model card. Weights are averaged (EMA): on small data
sets the average is steadier than the last step.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from helpers.errors import DatasetError
from helpers.geometry import BBox
from helpers.inference.detector import COLORS, decode, input_channels, preprocessing_for, to_channels
from helpers.train.augment import AugmentParams, augment
from helpers.train.boxcoding import boxes_to_arrays, encode
from helpers.train.data import Item, dataset_hash, validate_items
from helpers.train.evaluate import detection_counts
from helpers.train.model import ARCHS, LOG_LTRB_RANGE, STRIDE, FomoBox, count_parameters

INPUT_SIZES = (96, 160, 320)
VAL_DECODE_THRESHOLD = 0.05


@dataclass
class TrainParams:
    """Training settings; every field is written into the model card.

    The defaults are the workshop setting chosen by measurement (bench/bench_synthetic.py,
    bench/results/, docs/training.md): 160 px input, width 0.5, 40 epochs (early stopping on
    validation F1 in the last quarter). On the two-class synthetic benchmark that is apple F1
    0.92-0.96 / banana 1.0 in about 130 s; 96 px (width 0.35) trains ~3x faster but reached
    apple F1 0.85 (small apples are ~11 px, so IoU 0.5 is hard); 192 px gained nothing; 320 px
    costs ~5x the training time per image and 4x the latency (6.0 vs 1.4 ms).
    """

    arch: str = "fomo-box"
    input_size: int = 160
    color: str = "RGB"  # colour depth, as Edge Impulse's image block: "RGB" or "grayscale"
    width: float = 0.5
    epochs: int = 40
    batch_size: int = 16
    lr: float = 4e-3
    weight_decay: float = 5e-4
    seed: int = 0
    patience: int = 10  # epochs without a better validation F1 before stopping
    # Early stopping acts only from here on. None: the last quarter of `epochs`, where the cosine
    # schedule has brought the learning rate down. Stopping sooner (measured: 8 epochs of patience
    # from epoch 8) ended runs at a high learning rate on a noisy 60-image validation F1 and cost
    # 0.05-0.08 apple F1 on the two-class synthetic benchmark.
    min_epochs: int | None = None
    time_budget_s: float | None = None  # stop after this much training time, keep the best
    # nanodet-ft only: "cpu" counts the process's CPU seconds instead of wall time. On a shared
    # machine with threads=1 that is an upper bound of the wall time the run takes alone.
    budget_clock: str = "wall"
    ema_decay: float = 0.99  # 0 turns weight averaging off
    score_thresholds: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
    # How the card's score threshold is chosen from `score_thresholds` on validation (`best_threshold`):
    # "plateau" (middle of the F1 plateau), "plateau-per-class" (also one per class with enough
    # objects: the card's `class_thresholds`) or "max" (lowest threshold with the best F1, the old rule).
    # Per class is not the default: on the benchmarks it moved test F1 by one object either way
    # (synthetic banana 0.996 -> 1.0, real-photo banana 0.54 -> 0.53; docs/training.md).
    threshold_rule: str = "plateau"
    augment: AugmentParams = field(default_factory=AugmentParams)
    pretrained: str | None = None  # None, "synthetic" (cached under the workspace) or a .pt path
    pretrain_images: int = 600
    pretrain_epochs: int = 25
    val_fraction: float = 0.2  # used only when no validation items are given
    threads: int | None = None  # torch threads; None: settings' torch_threads

    def check(self) -> None:
        """Raise ValueError on settings the trainer cannot use."""
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.arch == "fomo-box" and (self.input_size % 32 or self.input_size < 64):
            raise ValueError(f"input_size must be a multiple of 32 and >= 64 (e.g. {INPUT_SIZES}), got {self.input_size}")
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {', '.join(COLORS)}, got {self.color!r}")
        if self.arch == "ssdlite320" and self.color != "RGB":
            raise ValueError("ssdlite320 takes RGB input; use color='RGB' or arch='fomo-box'")
        if self.arch == "nanodet-ft":
            if self.color != "RGB":
                raise ValueError("nanodet-ft starts from COCO weights trained on colour: use color='RGB'")
            if self.input_size % 32 or self.input_size < 96:
                raise ValueError(f"nanodet-ft input_size must be a multiple of 32 and >= 96 (e.g. 224, 320, 416), "
                                 f"got {self.input_size}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {', '.join(THRESHOLD_RULES)}, got {self.threshold_rule!r}")
        if self.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"budget_clock must be 'wall' or 'cpu', got {self.budget_clock!r}")

    def first_stop_epoch(self) -> int:
        """The first epoch after which early stopping may end training."""
        return self.min_epochs if self.min_epochs is not None else max(1, math.ceil(0.75 * self.epochs))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score_thresholds"] = list(self.score_thresholds)
        return d


@dataclass
class TrainResult:
    """The trained network (averaged weights, eval mode) and what happened while training."""

    model: torch.nn.Module
    labels: list[str]
    params: TrainParams
    history: list[dict[str, Any]]
    best_epoch: int
    val_f1: float
    score_threshold: float
    train_time_s: float
    dataset_hash: str
    val_metrics: dict[str, Any] = field(default_factory=dict)
    num_parameters: int = 0
    pretrained: dict[str, Any] = field(default_factory=dict)  # starting weights' source, version, hash, licence

    def card(self, **extra: Any) -> dict[str, Any]:
        """The model-card fields training knows; `export_onnx` adds the file's hash."""
        arch = self.params.arch
        if arch == "nanodet-ft":
            from helpers.train.nanodet import NANODET_PREPROCESSING, STRIDES

            head: dict[str, Any] = {"type": "gfl", "strides": list(STRIDES), "outputs": ["boxes", "scores"]}
            prep, nms = dict(NANODET_PREPROCESSING), 0.6
        else:
            head = {"type": "ssd" if arch == "ssdlite320" else "centernet", "stride": STRIDE,
                    "outputs": ["boxes", "scores"] if arch == "ssdlite320" else ["heatmap", "ltrb"]}
            prep, nms = preprocessing_for(self.params.color), 0.45
        val_metrics = {k: v for k, v in self.val_metrics.items() if k != "threshold_choice"}
        choice = self.val_metrics.get("threshold_choice")
        card = {
            "labels": list(self.labels),
            "input_size": self.params.input_size,
            "color": self.params.color,
            "preprocessing": prep,
            "score_threshold": self.score_threshold,
            "nms_iou": nms,
            "arch": arch,
            "head": head,
            "version": None,
            "metrics": {"validation": val_metrics, "best_epoch": self.best_epoch,
                        "train_time_s": round(self.train_time_s, 1), "num_parameters": self.num_parameters},
            "dataset": {"hash": self.dataset_hash},
            "training": self.params.to_dict(),
            "parent_version": None,
        }
        if choice:
            # How `score_threshold` was chosen; per-class thresholds, where chosen, override it per
            # label in `helpers.inference.detector` decoding (readers that know only score_threshold still work).
            card["threshold_choice"] = {k: v for k, v in choice.items() if k != "class_thresholds"}
            if choice.get("class_thresholds"):
                card["class_thresholds"] = dict(choice["class_thresholds"])
        if self.pretrained:
            card["pretrained"] = dict(self.pretrained)
        card.update(extra)
        return card


    def export(self, out_dir: str | Path, **card_extra: Any) -> Path:
        """Write model.onnx + model.json into `out_dir` (see `helpers.train.export.export_onnx`)."""
        from helpers.train.export import export_onnx

        return export_onnx(self.model, out_dir, self.card(**card_extra))


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


# ----------------------------------------------------------------------------- helpers
class BestEpoch:
    """Which epoch's weights to keep, and when to stop early.

    Validation F1 on a few dozen images is noisy, and early epochs run at a high learning
    rate: once training reaches the schedule's tail (`params.first_stop_epoch()`), only tail
    epochs compete, so a lucky early epoch never wins over the decayed weights. Before the
    tail the best epoch so far is kept, for runs a time budget or callback ends early. Ties go
    to the later epoch (longer-averaged weights place boxes better).
    """

    def __init__(self, params: TrainParams):
        self.first_stop = params.first_stop_epoch()
        self.patience = params.patience
        self.f1, self.epoch, self.threshold, self.metrics = -1.0, 0, 0.5, {}
        self.state: dict[str, torch.Tensor] | None = None
        self._in_tail = False

    def update(self, epoch: int, f1: float, threshold: float, metrics: dict[str, Any],
               model: torch.nn.Module) -> bool:
        """Record an epoch's validation result; True when its weights are kept."""
        if epoch >= self.first_stop and not self._in_tail:
            self._in_tail, self.f1 = True, -1.0
        if f1 < self.f1:
            return False
        self.f1, self.epoch, self.threshold, self.metrics = f1, epoch, threshold, metrics
        self.state = copy.deepcopy(model.state_dict())
        return True

    def should_stop(self, epoch: int) -> bool:
        return self._in_tail and epoch - self.epoch >= self.patience


class ModelEMA:
    """Exponential moving average of the weights (and BN buffers), warmed up over early steps."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = 0
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        # Ramp the decay so the average is not dominated by the random init on short runs.
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def to_tensor(images: np.ndarray, color: str = "RGB") -> torch.Tensor:
    """(N, S, S, 3) uint8 -> normalised (N, C, S, S) float, as `helpers.inference.detector.preprocess`."""
    p = preprocessing_for(color)
    x = torch.from_numpy(to_channels(images, p)).mul_(p["scale"])
    x = (x - torch.tensor(p["mean"])) / torch.tensor(p["std"])
    # NHWC memory under an NCHW view: channels-last convolutions (depthwise ones above all)
    # run about 1.5x faster on CPU, and the numpy layout is already this one.
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _shrink(items: Sequence[Item], max_side: int) -> list[Item]:
    """Downscale big photos once (boxes too) so per-epoch augmentation stays cheap."""
    import cv2

    out = []
    for rgb, boxes in items:
        h, w = rgb.shape[:2]
        s = max_side / max(h, w)
        if s < 1:
            rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            sx, sy = rgb.shape[1] / w, rgb.shape[0] / h
            boxes = [BBox(b.label, b.x * sx, b.y * sy, b.width * sx, b.height * sy) for b in boxes]
        out.append((rgb, list(boxes)))
    return out


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
    for idx in batches:
        x, heat_t, reg_t, w_t = _batch_targets(items, idx, labels, params.input_size, rng, params.augment,
                                             params.color)
        heat_p, reg_p = model(x)
        loss = focal_heat_loss(heat_p, heat_t) + box_loss(reg_p, reg_t, w_t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        total += float(loss.detach()) * len(idx)
        n += len(idx)
    return total / max(n, 1)


@torch.no_grad()
def predict_items(model: torch.nn.Module, items: Sequence[Item], labels: Sequence[str], input_size: int,
                  score_threshold: float = VAL_DECODE_THRESHOLD, batch_size: int = 32,
                  color: str = "RGB") -> list[list[BBox]]:
    """Boxes for each item with the torch model, decoded exactly as on the device."""
    import cv2

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


THRESHOLD_RULES = ("plateau", "plateau-per-class", "max")
MIN_CLASS_OBJECTS = 20  # a class gets its own threshold only when validation holds this many of its objects


def plateau_middle(f1s: Sequence[float], tolerance: float) -> tuple[int, int, int]:
    """(chosen, first, last) indices: the middle of the F1 plateau around the best F1.

    The plateau is the run of neighbouring thresholds whose F1 is within `tolerance` of the
    best. On a small validation split F1 is flat over a wide range of thresholds and the
    lowest (or highest) of a tie sits at the edge of a cliff that the next images fall off;
    the plateau's middle is the choice furthest from both edges.
    """
    if not f1s:
        raise ValueError("no thresholds to choose from")
    k = max(range(len(f1s)), key=lambda i: (f1s[i], -i))
    floor = f1s[k] - tolerance
    lo = k
    while lo > 0 and f1s[lo - 1] >= floor:
        lo -= 1
    hi = k
    while hi < len(f1s) - 1 and f1s[hi + 1] >= floor:
        hi += 1
    return (lo + hi) // 2, lo, hi


def _metrics(per: dict[str, Any], overall: Any) -> dict[str, Any]:
    return {"f1": overall.f1, "precision": overall.precision, "recall": overall.recall,
            "per_class": {n: {"f1": m.f1, "precision": m.precision, "recall": m.recall} for n, m in per.items()}}


def best_threshold(gts: Sequence[Sequence[BBox]], preds: Sequence[Sequence[BBox]], labels: Sequence[str],
                   thresholds: Sequence[float], rule: str = "plateau") -> tuple[float, float, dict[str, Any]]:
    """(F1, threshold, metrics) of the score threshold chosen on validation at IoU 0.5.

    Rules:
        "plateau": the middle of the overall F1 plateau (thresholds within 1/N of the best F1,
            N = validation objects: about what one object more or less changes).
        "plateau-per-class": as "plateau", and each class with at least MIN_CLASS_OBJECTS
            validation objects gets the middle of its own F1 plateau (`class_thresholds`).
        "max": the lowest threshold with the best F1 (the rule before; kept for comparison).

    F1 and metrics are those at the chosen threshold(s); `metrics["threshold_choice"]` records
    how it was chosen (rule, images, objects per class, plateau, per-class thresholds).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    thresholds = sorted(float(t) for t in thresholds)
    curve = [detection_counts(gts, [[b for b in p if (b.value or 0) >= thr] for p in preds], labels)
             for thr in thresholds]
    f1s = [overall.f1 for _, overall in curve]
    objects = {n: sum(1 for g in gts for b in g if b.label == n) for n in labels}
    n_obj = sum(objects.values())
    if rule == "max":
        k = max(range(len(f1s)), key=lambda i: (f1s[i], -i))
        lo = hi = k
        tol = 0.0
    else:
        tol = 1.0 / max(1, n_obj)
        k, lo, hi = plateau_middle(f1s, tol)
    thr = thresholds[k]
    choice: dict[str, Any] = {"rule": rule, "images": len(gts), "objects": objects, "tolerance": round(tol, 4),
                              "plateau": [thresholds[lo], thresholds[hi]], "best_f1": round(max(f1s), 4),
                              "grid": [thresholds[0], thresholds[-1]]}
    per, overall = curve[k]
    if rule == "plateau-per-class":
        class_thr: dict[str, float] = {}
        for n in labels:
            if objects[n] < MIN_CLASS_OBJECTS:
                continue
            kc, lc, hc = plateau_middle([c[0][n].f1 for c in curve], 1.0 / objects[n])
            class_thr[n] = thresholds[kc]
            choice.setdefault("per_class", {})[n] = {"threshold": thresholds[kc], "objects": objects[n],
                                                     "plateau": [thresholds[lc], thresholds[hc]]}
        choice["class_thresholds"] = class_thr
        if class_thr:
            cut = {n: class_thr.get(n, thr) for n in labels}
            per, overall = detection_counts(
                gts, [[b for b in p if (b.value or 0) >= cut.get(b.label, thr)] for p in preds], labels)
    metrics = _metrics(per, overall)
    metrics["threshold_choice"] = choice
    return overall.f1, thr, metrics


# ----------------------------------------------------------------------------- pre-training
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


def synthetic_pretrained(params: TrainParams, workspace: str | Path | None = None,
                         progress: bool = True) -> tuple[dict[str, torch.Tensor], list[str], Path]:
    """Weights pre-trained on synthetic apple+banana renders, cached under the workspace.

    The cache key holds everything that changes the weights (arch, input size, width, image
    count, epochs, seed), so a changed recipe never reuses stale weights.
    """
    from helpers.config import load_settings
    from helpers.sim.synthetic import render_dataset, story_scenes

    ws = Path(workspace) if workspace else load_settings().workspace
    labels = ["apple", "banana"]
    key = (f"{params.arch}_{params.color}_s{params.input_size}_w{params.width}_n{params.pretrain_images}"
           f"_e{params.pretrain_epochs}_seed{params.seed}_v1")
    path = ws / "models" / "pretrained" / f"{key}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True), labels, path
    scenes = story_scenes("apples_bananas")
    side = max(params.input_size, 160)
    data = render_dataset(params.pretrain_images, scenes, size=(side, side), seed=params.seed + 7919)
    val = render_dataset(max(20, params.pretrain_images // 10), scenes, size=(side, side), seed=params.seed + 104729)
    pre = TrainParams(**{**params.to_dict(), "augment": params.augment, "pretrained": None,
                         "epochs": params.pretrain_epochs, "score_thresholds": (0.4,), "time_budget_s": None})
    result = train_detector(data, val, labels, pre, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(result.model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache
    return result.model.state_dict(), labels, path


# ----------------------------------------------------------------------------- main entry
def _set_threads(params: TrainParams) -> int:
    from helpers.config import load_settings

    n = params.threads or load_settings().torch_threads
    torch.set_num_threads(max(1, int(n)))
    return n


def train_detector(train_items: Sequence[Item], val_items: Sequence[Item] | None, labels: Sequence[str],
                   params: TrainParams | None = None, progress: bool = True,
                   callback: Callable[[dict[str, Any]], Any] | None = None,
                   workspace: str | Path | None = None) -> TrainResult:
    """Train a detector on (rgb, boxes) pairs.

    Args:
        train_items: training images with their boxes (image pixels).
        val_items: validation images; None or empty: split `params.val_fraction` off the training set.
        labels: class names, in the order of the model's outputs.
        params: the recipe (defaults: the workshop setting).
        progress: show a tqdm bar over epochs.
        callback: called after each epoch with {"epoch", "loss", "val_f1", "score_threshold",
            "lr", "elapsed_s"} (for a live plot); return False from it to stop training.
        workspace: where pre-trained weights are cached (default: the settings' workspace).

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
    if not val_items:
        from helpers.train.data import split_items

        train_items, val_items = split_items(train_items, params.val_fraction, params.seed)
    validate_items(train_items, labels, "training split", min_images=1)
    if params.arch == "ssdlite320":
        from helpers.train.ssd import train_ssd

        return train_ssd(train_items, val_items, labels, params, progress=progress, callback=callback)
    if params.arch == "nanodet-ft":
        from helpers.train.finetune import train_nanodet

        return train_nanodet(train_items, val_items, labels, params, progress=progress, callback=callback)
    _set_threads(params)
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    ds_hash = dataset_hash(train_items + val_items)
    train_items = _shrink(train_items, params.input_size * 2)
    channels = input_channels(preprocessing_for(params.color))
    model = FomoBox(len(labels), params.width, in_channels=channels).to(memory_format=torch.channels_last)
    if params.pretrained:
        if params.pretrained == "synthetic":
            state, src_labels, _ = synthetic_pretrained(params, workspace, progress)
        else:
            state, src_labels = torch.load(params.pretrained, map_location="cpu", weights_only=True), labels
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
        from tqdm.auto import tqdm

        bar = tqdm(total=params.epochs, desc=f"train {params.arch} {params.input_size}px", unit="epoch")
    try:
        for epoch in range(1, params.epochs + 1):
            loss = train_one_epoch(model, optimizer, scheduler, train_items, labels, params, rng, ema)
            eval_model = ema.module if ema is not None else model
            preds = predict_items(eval_model, val_items, labels, params.input_size, color=params.color)
            f1, thr, metrics = best_threshold(gts, preds, labels, params.score_thresholds, params.threshold_rule)
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
