"""(c) onnxruntime latency at 1 thread: fomo-box at 96/160/320 and, with torchvision, SSDLite320.

Latency depends on the architecture, not the weights, so untrained networks are exported.
Measured through `OnnxDetector.detect` (preprocess + inference + decode) on a 320x320 frame.

    .venv/bin/python bench/bench_latency.py
Writes bench/results/latency.json.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import write_result  # noqa: I001


def measure(model, card: dict, runs: int) -> dict:
    from helpers.inference.onnx import OnnxDetector
    from helpers.sim.scenes import SceneStream
    from helpers.train.evaluate import measure_latency
    from helpers.train.export import export_onnx
    from helpers.train.model import count_parameters

    with tempfile.TemporaryDirectory() as d:
        export_onnx(model, d, card)
        det = OnnxDetector(d, threads=1)
        frames = [SceneStream(["apple", "banana"], seed=i).next_frame()[0] for i in range(4)]
        lat = measure_latency(det, frames, runs=runs, warmup=10)
        size = (Path(d) / "model.onnx").stat().st_size
    return {**lat, "onnx_bytes": size, "parameters": count_parameters(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--width", type=float, default=0.5)
    args = ap.parse_args()
    import torch

    from helpers.errors import MissingExtra
    from helpers.train.model import FomoBox, SSDExportWrapper, build_ssdlite

    torch.manual_seed(0)
    res: dict = {"fomo-box": {}}
    for size in (96, 160, 320):
        res["fomo-box"][str(size)] = measure(FomoBox(2, args.width).eval(),
                                             {"labels": ["apple", "banana"], "input_size": size}, args.runs)
        print("fomo-box", size, res["fomo-box"][str(size)])
    try:
        ssd = build_ssdlite(2, 320).eval()
    except MissingExtra:
        res["ssdlite320"] = "skipped: torchvision not installed"
    else:
        res["ssdlite320"] = measure(SSDExportWrapper(ssd, 320).eval(),
                                    {"labels": ["apple", "banana"], "input_size": 320, "head": {"type": "ssd"}},
                                    max(20, args.runs // 5))
    print(res["ssdlite320"])
    print(write_result("latency", {"width": args.width, "frame": [320, 320], "results": res}))


if __name__ == "__main__":
    main()
