"""The notebooks the pipeline runs, each profile's parameters, `--param` overrides and cell time limits."""
from __future__ import annotations

import ast
from typing import Any

from helpers.errors import ConfigError

NOTEBOOKS = ["01_setup_hub", "02_build_collector", "03_label_review", "04_train", "05_deploy", "06_retrain_banana"]

# Parameters per profile and notebook. `smoke` proves every stage quickly (CI); `workshop` is
# the tutorial's story (120 apple and 120 banana images, two devices). The thresholds of the
# checks sit just under what the reference runs measure (README, "Headless runs"), so a real
# regression turns a check line False and the run fails.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "01_setup_hub": {"device_ids": ["pi-1", "pi-2"]},
        "02_build_collector": {"apple_images": 60, "capture_rate_hz": 10.0},
        "03_label_review": {"labeler": "oracle"},
        "04_train": {"epochs": 30, "batch_size": 8, "input_size": 160, "min_f1": 0.9},
        "05_deploy": {"rollout_timeout_s": 120},
        "06_retrain_banana": {"labeler": "oracle", "banana_images": 80, "capture_rate_hz": 10.0, "epochs": 35, "batch_size": 8,
                              "min_f1": 0.85},
    },
    "workshop": {
        "01_setup_hub": {"device_ids": ["pi-1", "pi-2"]},
        "02_build_collector": {"apple_images": 120, "capture_rate_hz": 10.0},
        "03_label_review": {"labeler": "oracle"},
        # 30 epochs, not the recipe's 40 (TrainParams): measured on the demo's own snapshots (docs/training.md,
        # "The workshop's epochs"), 04's apple model (97 training images, 23 test) scored test F1 1.0 at
        # 30 and at 40 (seeds 0, 1), 06's two-class one (192 training, 50 test) 0.970 / 0.970 at 30 and
        # 0.933 / 0.958 at 40; each saves a quarter of its training (04: 41 -> 29 s, 06: 117 -> 85 s).
        "04_train": {"epochs": 30, "batch_size": 16, "input_size": 160, "min_f1": 0.9},
        "05_deploy": {"rollout_timeout_s": 180},
        "06_retrain_banana": {"labeler": "oracle", "banana_images": 120, "capture_rate_hz": 10.0, "epochs": 30, "batch_size": 16,
                              "min_f1": 0.85},
    },
}

# Cell time limits. A cell may run `--cell-timeout` seconds (default 900) plus, in the notebooks
# that train, SECONDS_PER_IMAGE_EPOCH for every image and epoch of the training it does: a
# generous multiple of what 2 busy cores take (about 0.09 s measured with another process
# beside it), so a slow machine is never failed for being slow, while a hung cell still ends.
SECONDS_PER_IMAGE_EPOCH = 0.5
TRAINING_WORK = {"04_train": ("02_build_collector", "apple_images"), "06_retrain_banana": (None, "banana_images")}


def _parse_value(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare word: a string


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """`["04.epochs=1", "06_retrain_banana.min_f1=0.9"]` -> {notebook: {name: value}}.

    Raises:
        ConfigError: an item without `NOTEBOOK.NAME=VALUE`, or a notebook that does not exist.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        nb, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--param {item!r}: write NOTEBOOK.NAME=VALUE, e.g. --param 04.epochs=1")
        match = [n for n in NOTEBOOKS if n.startswith(nb.strip())]
        if len(match) != 1:
            raise ConfigError(f"--param {item!r}: {nb!r} matches {match or 'no notebook'} of {NOTEBOOKS}")
        if any(w in name.lower() for w in ("key", "secret", "password", "token", "connection")):
            raise ConfigError(f"--param {item!r}: secrets are never parameters (papermill writes parameters "
                              "into the notebook); set them in the environment or .env")
        out.setdefault(match[0], {})[name.strip()] = _parse_value(raw.strip())
    return out


def parameters_for(profile: str, notebook: str, seed: int = 0,
                   overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The papermill parameters of one notebook in a profile (with `--param` overrides)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {sorted(PROFILES)}")
    return {"seed": seed, **PROFILES[profile][notebook], **(overrides or {}).get(notebook, {})}


def cell_timeout_for(notebook: str, params_by_nb: dict[str, dict[str, Any]], base: int) -> int:
    """Seconds one cell of `notebook` may run: `base`, plus the training work where it trains."""
    if notebook not in TRAINING_WORK:
        return base
    source_nb, count_key = TRAINING_WORK[notebook]
    own = params_by_nb.get(notebook, {})
    images = int(params_by_nb.get(source_nb or notebook, {}).get(count_key, 120))
    if notebook == "06_retrain_banana":  # trains on the apples and the bananas
        images += int(params_by_nb.get("02_build_collector", {}).get("apple_images", 120))
    epochs = int(own.get("epochs", 40))
    return int(base + SECONDS_PER_IMAGE_EPOCH * images * epochs)


def select(only: str | None) -> list[str]:
    """The notebooks `--only` names ("01,02"; all of them when empty), in pipeline order."""
    if not only:
        return list(NOTEBOOKS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = []
    for w in wanted:
        match = [n for n in NOTEBOOKS if n.startswith(w)]
        if len(match) != 1:
            raise ConfigError(f"--only {w!r} matches {match or 'no notebook'}; use numbers like 01,02 from {NOTEBOOKS}")
        chosen.append(match[0])
    return [n for n in NOTEBOOKS if n in chosen]
