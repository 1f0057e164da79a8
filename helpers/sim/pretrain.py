"""Synthetic pre-training: fomo-box weights learned on renders of the simulated world.

Training itself knows no simulated world: it takes a weights file (`TrainParams.pretrained`).
`synthetic_pretrained` makes that file once per recipe, cached under the workspace, with
`<name>.json` beside it naming the labels the weights were trained on (apple, banana), so
fine-tuning maps the heat-map rows by label name (`helpers.train.fomo.load_pretrained`).

    _, _, path = synthetic_pretrained(params)
    result = train_detector(items, None, labels, dataclasses.replace(params, pretrained=str(path)))
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.config import load_settings
from helpers.sim.scenes import render_dataset, story_scenes
from helpers.train.run import train_detector
from helpers.train.trainer import TrainParams

PRETRAIN_LABELS = ["apple", "banana"]


def synthetic_pretrained(params: TrainParams, workspace: str | Path | None = None,
                         progress: bool = True) -> tuple[dict[str, torch.Tensor], list[str], Path]:
    """(state dict, labels, .pt path) of weights pre-trained on synthetic apple+banana renders.

    Cached under `workspace` (default: the settings' workspace) in `models/pretrained/`. The cache
    key holds everything that changes the weights (arch, colour, input size, width, image count,
    epochs, seed), so a changed recipe never reuses stale weights.
    """
    ws = Path(workspace) if workspace else load_settings().workspace
    labels = list(PRETRAIN_LABELS)
    key = (f"{params.arch}_{params.color}_s{params.input_size}_w{params.width}_n{params.pretrain_images}"
           f"_e{params.pretrain_epochs}_seed{params.seed}_v1")
    path = ws / "models" / "pretrained" / f"{key}.pt"
    side_card = path.with_suffix(".json")
    if path.is_file():
        if not side_card.is_file():  # cached before the labels were written beside the weights
            side_card.write_text(json.dumps({"labels": labels}))
        return torch.load(path, map_location="cpu", weights_only=True), labels, path
    scenes = story_scenes("apples_bananas")
    side = max(params.input_size, 160)
    data = render_dataset(params.pretrain_images, scenes, size=(side, side), seed=params.seed + 7919)
    val = render_dataset(max(20, params.pretrain_images // 10), scenes, size=(side, side), seed=params.seed + 104729)
    pre = TrainParams(**{**params.to_dict(), "augment": params.augment, "pretrained": None,
                         "epochs": params.pretrain_epochs, "score_thresholds": (0.4,), "time_budget_s": None})
    result = train_detector(data, val, labels, pre, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    side_card.write_text(json.dumps({"labels": labels}))
    tmp = path.with_suffix(".tmp")
    torch.save(result.model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache
    return result.model.state_dict(), labels, path
