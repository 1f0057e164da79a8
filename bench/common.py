"""Shared bits of the benchmarks: where results go and what machine produced them."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:  # `python bench/x.py` from a checkout without an install
    sys.path.insert(0, str(REPO))


def machine() -> dict[str, Any]:
    """CPU count and load: timings on a shared machine mean little without them."""
    import onnxruntime
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "load_avg_1_5_15": load, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json (atomic) and return its path."""
    from helpers.train.export import git_commit

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": name, "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "git_commit": git_commit(REPO), "machine": machine(), **data}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    tmp.replace(path)
    return path


def short(report: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers of an EvalReport dict."""
    return {
        "overall_f1": round(report["overall"]["f1"], 4),
        "per_class": {k: {m: (round(v[m], 4) if isinstance(v[m], float) else v[m])
                          for m in ("f1", "precision", "recall", "ap50", "ap", "support")}
                      for k, v in report["per_class"].items()},
        "map50": report["map50"], "map": report["map"], "confusion": report["confusion"],
        "latency_ms": report["latency_ms"], "score_threshold": report["score_threshold"], "images": report["images"],
    }
