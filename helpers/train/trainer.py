"""The trainer's shared parts: the recipe (`TrainParams`), its result (`TrainResult`) and the
pieces every architecture's loop uses (best-epoch keeping, weight averaging, input tensors).

Built like torchvision's references/detection: each architecture has an explicit loop
(`helpers.train.fomo`, `.ssd`, `.finetune`); `helpers.train.run.train_detector` checks the
arguments up front and picks the loop. Validation F1 is measured with the same decoding the
devices run (`helpers.inference.onnx.decode`), drives early stopping and picks the score
threshold written into the model card (`helpers.train.threshold`). Weights are averaged (EMA):
on small data sets the average is steadier than the last step.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from helpers.config import load_settings
from helpers.geometry import BBox
from helpers.inference.onnx import COLORS, preprocessing_for, to_channels
from helpers.train.augment import AugmentParams
from helpers.train.data import Item
from helpers.train.export import export_onnx
from helpers.train.model import ARCHS, STRIDE
from helpers.train.nanodet import NANODET_PREPROCESSING, STRIDES
from helpers.train.threshold import THRESHOLD_RULES

INPUT_SIZES = (96, 160, 320)


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
    # A fixed score threshold for the card instead of one chosen on validation (validation F1 is then
    # measured at it). Required with val_fraction 0, where there is no validation to choose one.
    score_threshold: float | None = None
    augment: AugmentParams = field(default_factory=AugmentParams)
    # None, or starting weights: a .pt file (fomo-box; `helpers.sim.pretrain.synthetic_pretrained` makes one
    # from synthetic renders) or a NanoDet checkpoint (nanodet-ft; None: the COCO weights of `make weights`).
    pretrained: str | None = None
    pretrain_images: int = 600
    pretrain_epochs: int = 25
    # Used only when no validation items are given. 0 (nanodet-ft only): no validation at all; every
    # image trains, the last epoch's averaged weights are kept (no early stopping) and
    # `score_threshold` must be set: a recipe whose epochs and threshold were chosen by k-fold
    # validation beforehand (docs/training.md, "Training on every photo").
    val_fraction: float = 0.2
    threads: int | None = None  # torch threads; None: settings' torch_threads
    # fomo-box: augment the next batch on a second thread while torch trains on this one (the same
    # random draws in the same order, so the same model). None: only with one torch thread. Measured
    # (bench/bench_train_prefetch.py, 2 cores, 160 px): 1 thread 0.93x the serial time, 2 threads
    # (OMP_WAIT_POLICY=PASSIVE) 1.35x: the third thread takes the core a sleeping torch thread needs.
    prefetch: bool | None = None

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
        if self.score_threshold is not None and not 0 < self.score_threshold < 1:
            raise ValueError(f"score_threshold must be between 0 and 1 (e.g. 0.45), got {self.score_threshold}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1) (e.g. 0.2), got {self.val_fraction}")
        if self.val_fraction == 0 and self.arch != "nanodet-ft":
            raise ValueError(f"val_fraction 0 (no validation) is for nanodet-ft only; {self.arch} stops early and "
                             "picks its threshold on validation: use e.g. 0.2 (CLI: --val-fraction)")
        if self.val_fraction == 0 and self.score_threshold is None:
            raise ValueError("val_fraction 0 leaves no validation to choose the score threshold: set score_threshold "
                             "(CLI: --score-threshold; nanodet-ft's k-fold choice is 0.45, docs/training.md) or use "
                             "val_fraction 0.2")
        if self.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"budget_clock must be 'wall' or 'cpu', got {self.budget_clock!r}")
        if self.pretrained and self.pretrained != "coco" and not Path(self.pretrained).is_file():
            raise ValueError(f"pretrained weights {self.pretrained!r} are not a file: give a .pt file (synthetic "
                             "pre-training: helpers.sim.pretrain.synthetic_pretrained returns one) or None")

    def threshold_candidates(self) -> tuple[float, ...]:
        """The score thresholds validation chooses from: `score_threshold` alone when it is fixed."""
        return (float(self.score_threshold),) if self.score_threshold is not None else tuple(self.score_thresholds)

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
    val_f1: float | None  # None: trained without validation (val_fraction 0)
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
            # label in `helpers.inference.onnx` decoding (readers that know only score_threshold still work).
            card["threshold_choice"] = {k: v for k, v in choice.items() if k != "class_thresholds"}
            if choice.get("class_thresholds"):
                card["class_thresholds"] = dict(choice["class_thresholds"])
        if self.pretrained:
            card["pretrained"] = dict(self.pretrained)
        card.update(extra)
        return card

    def export(self, out_dir: str | Path, **card_extra: Any) -> Path:
        """Write model.onnx + model.json into `out_dir` (see `helpers.train.export.export_onnx`)."""
        return export_onnx(self.model, out_dir, self.card(**card_extra))


# ----------------------------------------------------------------------------- what every architecture's loop shares
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
        self._pairs: tuple[Any, ...] | None = None
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        # Ramp the decay so the average is not dominated by the random init on short runs.
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if self._pairs is None or self._pairs[0] is not model:
            # The state dicts' tensors share storage with the weights and buffers, which the
            # optimiser and batch norm update in place: collect them once, not at every step.
            msd, own = model.state_dict(), self.module.state_dict()
            floats = [k for k, v in own.items() if v.dtype.is_floating_point]
            others = [k for k, v in own.items() if not v.dtype.is_floating_point]
            self._pairs = (model, [own[k] for k in floats], [msd[k] for k in floats],
                           [own[k] for k in others], [msd[k] for k in others])
        _, avg, src, avg_other, src_other = self._pairs
        # The same arithmetic as `avg.mul_(d).add_(src, alpha=1 - d)` per tensor, in one call per step.
        torch._foreach_mul_(avg, d)
        torch._foreach_add_(avg, src, alpha=1 - d)
        for a, b in zip(avg_other, src_other):
            a.copy_(b)


def to_tensor(images: np.ndarray, color: str = "RGB") -> torch.Tensor:
    """(N, S, S, 3) uint8 -> normalised (N, C, S, S) float, as `helpers.inference.onnx.preprocess`."""
    p = preprocessing_for(color)
    x = torch.from_numpy(to_channels(images, p)).mul_(p["scale"])
    x = (x - torch.tensor(p["mean"])) / torch.tensor(p["std"])
    # NHWC memory under an NCHW view: channels-last convolutions (depthwise ones above all)
    # run about 1.5x faster on CPU, and the numpy layout is already this one.
    return x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def shrink(items: Sequence[Item], max_side: int) -> list[Item]:
    """Downscale big photos once (boxes too) so per-epoch augmentation stays cheap."""
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


def set_threads(params: TrainParams) -> int:
    """Set torch's thread count from `params.threads` (else the settings' `torch_threads`); returns it."""
    n = params.threads or load_settings().torch_threads
    torch.set_num_threads(max(1, int(n)))
    return n
