"""ONNX export with a parity check, and the model card written beside it."""
from __future__ import annotations

import datetime as _dt
import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from helpers.errors import ModelError
from helpers.inference.card import CARD_NAME, ONNX_NAME, sha256_file
from helpers.inference.onnx import input_channels
from helpers.train.model import ExportWrapper, SSDExportWrapper
from helpers.train.nanodet import NanoDet

OPSET = 17
PARITY_TOLERANCE = 1e-3


def git_commit(repo: str | Path | None = None) -> str | None:
    """`git rev-parse HEAD` of the checkout, or None outside a git checkout."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _wrap(model: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """The module to trace and its output names, by head type."""
    if isinstance(model, NanoDet):
        return ExportWrapper(model).eval(), ["boxes", "scores"]
    if hasattr(model, "export_forward"):
        return ExportWrapper(model).eval(), ["heatmap", "ltrb"]
    if isinstance(model, SSDExportWrapper):
        return model.eval(), ["boxes", "scores"]
    raise ModelError(f"cannot export {type(model).__name__}: not a helpers.train model")


def parity_check(onnx_path: str | Path, module: torch.nn.Module, input_size: int, seed: int = 0,
                 channels: int = 3) -> float:
    """Max abs difference between onnxruntime and torch outputs on a random input."""
    shape = (1, channels, input_size, input_size)
    x = torch.from_numpy(np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32))
    with torch.no_grad():
        ref = [t.numpy() for t in module(x)]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(ref, got)))


def export_onnx(model: torch.nn.Module, out_dir: str | Path, card: dict[str, Any]) -> Path:
    """Write `model.onnx` + `model.json` into `out_dir`; returns the ONNX path.

    The card gets `onnx_sha256`, `created_at`, `git_commit` and `export` (opset, parity) added;
    `version` stays None until the studio registers the model.

    Raises:
        ModelError: the card lacks labels/input_size, or onnxruntime disagrees with torch by
            more than 1e-3 (a broken export must not reach a device).
    """
    for key in ("labels", "input_size"):
        if not card.get(key):
            raise ModelError(f"model card needs {key!r} before export")
    size = int(card["input_size"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module, names = _wrap(model)
    module = module.cpu().eval()
    onnx_path = out / ONNX_NAME
    tmp = out / (ONNX_NAME + ".tmp")
    channels = input_channels(card.get("preprocessing"))
    dummy = torch.zeros(1, channels, size, size)
    with torch.no_grad(), warnings.catch_warnings():
        # dynamo=False: the TorchScript exporter is deterministic and needs no onnxscript;
        # torch 2.9+ warns that it is the legacy path, which is known and chosen.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (dummy,), str(tmp), input_names=["input"], output_names=names,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    diff = parity_check(tmp, module, size, channels=channels)
    if not diff <= PARITY_TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"ONNX export differs from torch by {diff:.2e} (> {PARITY_TOLERANCE}); not written")
    tmp.replace(onnx_path)
    full = dict(card)
    full.setdefault("version", None)
    full.setdefault("parent_version", None)
    full["onnx_sha256"] = sha256_file(onnx_path)
    full["created_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    full["git_commit"] = git_commit()
    full["export"] = {"opset": OPSET, "torch": torch.__version__, "parity_max_abs_diff": diff,
                      "outputs": names}
    card_tmp = out / (CARD_NAME + ".tmp")
    card_tmp.write_text(json.dumps(full, indent=2, sort_keys=True, default=_json_default))
    card_tmp.replace(out / CARD_NAME)
    return onnx_path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def export_result(result: Any, out_dir: str | Path, **card_extra: Any) -> Path:
    """Export a `TrainResult`: its model and its card (plus `card_extra` fields)."""
    return export_onnx(result.model, out_dir, result.card(**card_extra))


def update_card(model_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into an exported model's `model.json` (atomic replace); returns the card.

    The ONNX bytes (and so `onnx_sha256`) are unchanged: metrics measured after export, such
    as the test-split evaluation, can be added without re-exporting.
    """
    path = Path(model_dir) / CARD_NAME
    card = json.loads(path.read_text())
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(card.get(k), dict):
            card[k] = {**card[k], **v}
        else:
            card[k] = v
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True, default=_json_default))
    tmp.replace(path)
    return card
