"""The training job's epoch lines: written by the local studio's job, parsed by the notebook's live plot.

Each line is readable and parseable: `parse_epoch_line` turns it back into the record
`helpers.train.run.train_detector` passes its callback.
"""
from __future__ import annotations

import math
import re
from typing import Any

EPOCH_RE = re.compile(r"^Epoch (?P<epoch>\d+)/(?P<epochs>\d+): loss (?P<loss>\S+), validation F1 (?P<val_f1>\S+), "
                      r"score threshold (?P<score_threshold>\S+), lr (?P<lr>\S+), (?P<elapsed_s>\S+) s$")


def format_epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """One epoch of `train_detector`'s callback records as a log line (same rounding as the record)."""
    def num(key: str, fmt: str) -> str:
        v = rec.get(key)
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(float(v), fmt)

    return (f"Epoch {int(rec['epoch'])}/{int(epochs)}: loss {num('loss', '.5f')}, validation F1 {num('val_f1', '.4f')}, "
            f"score threshold {num('score_threshold', '.2f')}, lr {num('lr', '.4g')}, {num('elapsed_s', '.1f')} s")


def parse_epoch_line(line: str) -> dict[str, Any] | None:
    """The record of an epoch line written by `format_epoch_line`; None for any other line."""
    m = EPOCH_RE.match(line.strip())
    if m is None:
        return None
    try:
        rec: dict[str, Any] = {"epoch": int(m["epoch"]), "epochs": int(m["epochs"])}
        for key in ("loss", "val_f1", "score_threshold", "lr", "elapsed_s"):
            rec[key] = float(m[key])
    except ValueError:
        return None
    return rec


__all__ = ["EPOCH_RE", "format_epoch_line", "parse_epoch_line"]
