""""Choose a different model": the trade-off between the learning blocks, from the bench.

Notebook 04 shows this table before training, as the Edge Impulse Studio lists its models
with their accuracy, latency and size. The figures are not typed in here: they are read from
the benchmark run that measured them together (`bench/bench_nanodet.py`, written by
`make bench-nanodet` into `bench/results/nanodet_choice.json`): the same real photos, the same
80/20 split, the same machine and load, fomo-box from scratch and after synthetic
pre-training beside the COCO-pretrained `nanodet-ft`, and each model's runner cost.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.config import REPO_ROOT
from helpers.errors import DatasetError

CHOICE_RESULT = REPO_ROOT / "bench" / "results" / "nanodet_choice.json"


def _row(model: str, arch: str, start: str, size: int, test: dict[str, Any], train_s: float | None,
         runner: dict[str, Any] | None, onnx_bytes: int | None) -> dict[str, Any]:
    per = test.get("per_class", {})
    return {
        "model": model, "arch": arch, "starts from": start, "input": f"{size} px",
        "F1@0.5": round(float(test["overall_f1"]), 3),
        "per class": ", ".join(f"{k} {float(v['f1']):.2f}" for k, v in sorted(per.items())),
        "mAP@0.5": round(float(test["map50"]), 3),
        "training (CPU s)": "-" if train_s is None else round(float(train_s)),
        "ms / frame (1 thread)": "-" if runner is None else round(float(runner["cpu_ms_median"]), 1),
        "runner RSS (MB)": "-" if runner is None else round(float(runner["peak_rss_mb"])),
        "model (MB)": "-" if onnx_bytes is None else round(onnx_bytes / 1e6, 1),
    }


def model_choices(path: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per model choice: F1, per-class F1, mAP@0.5, training cost, latency, memory, size.

    Args:
        path: a `bench_nanodet.py` result with the `finetune`, `baselines` and `runner` phases
            (default: the committed `bench/results/nanodet_choice.json`).

    Raises:
        DatasetError: the result file is missing or lacks a phase (names the command to run).
    """
    p = Path(path) if path is not None else CHOICE_RESULT
    if not p.is_file():
        raise DatasetError(f"no benchmark result at {p}: run `make bench-nanodet` (needs `make weights` and "
                           "../shared/datasets/fruit-voc-train) to measure the model choices")
    data = json.loads(p.read_text())
    missing = [k for k in ("finetune", "baselines", "runner") if k not in data]
    if missing:
        raise DatasetError(f"{p} lacks the phase(s) {', '.join(missing)}: rerun "
                           "`bench/bench_nanodet.py --phases zeroshot,finetune,baselines,runner --name nanodet_choice`")
    runner, base, ft = data["runner"], data["baselines"], data["finetune"]
    fomo_runner = runner.get("fomo-box_160")
    rows = []
    for key, start in (("from_scratch", "random weights"), ("synthetic_pretrained", "synthetic renders")):
        b = base[key]
        rows.append(_row("fomo-box", "fomo-box", start, b["input_size"], b["test"], b.get("train_cpu_s"), fomo_runner,
                         b.get("onnx_bytes")))
    if "zero_shot" in data:
        z = data["zero_shot"]
        rows.append(_row("COCO zero-shot (label assist)", "nanodet", "COCO, not trained here", 416,
                         {"overall_f1": z["overall_f1"], "per_class": z["per_class"], "map50": z["map50"]}, None,
                         runner.get("coco_zero_shot_416"), runner.get("coco_zero_shot_416", {}).get("onnx_bytes")))
    size = int(ft["params"]["input_size"])
    rows.append(_row("nanodet-ft", "nanodet-ft", "COCO (make weights)", size, ft["test"], ft.get("train_cpu_s"),
                     runner.get("nanodet-ft", {}).get(str(size)), ft.get("onnx_bytes")))
    return rows


def measured_on(path: str | Path | None = None) -> str:
    """One line: where and when the choice figures were measured (dataset, split, machine load)."""
    p = Path(path) if path is not None else CHOICE_RESULT
    data = json.loads(p.read_text())
    m = data.get("machine", {})
    ft = data.get("finetune", {})
    load = ft.get("load_avg_start") or m.get("load_avg_1_5_15")
    return (f"measured {data.get('created_at', '?')[:10]} on {m.get('cpus', '?')} CPU cores (load {load[0]:.1f}), "
            f"real photos ({ft.get('train_images')} train / {ft.get('val_images')} val / {ft.get('test_images')} test), "
            f"commit {str(data.get('git_commit', '?'))[:8]}: {p.name}")
