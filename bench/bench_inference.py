"""Single-thread latency of each architecture at its sizes, beside SSDLite320, with the F1 each has measured.

Latency: `OnnxDetector.detect` on a 640x480 frame (preprocess + inference + decode), onnxruntime
and OpenCV at one thread, in a fresh process per network (`bench_nanodet.run_runner`): the CPU
time of the thread per frame (what a frame costs on an idle core) and the wall time. Latency
depends on the network, not its weights, so the sizes without a trained model are untrained
exports of the same networks (`fomo-box` 96/160/320, `nanodet-ft` 224/320/416); the trained
models of bench_runner.py (out/runner-bench/: fomo-box 160, nanodet-ft 224 float and int8) are
measured too. SSDLite320 needs torchvision (`make bench-ssd`): its row is read from
bench/results/latency.json (network on a 320x320 frame), which names its date and load.

F1: never measured here; each row names the result file it is read from (real photos: the
80/20 split of ../shared/datasets/fruit-voc-train, 48 test photos; SSDLite320 has F1 only on
the synthetic apple + banana set, so fomo-box's F1 on that set is given beside it).

    .venv/bin/python bench/bench_inference.py [--runs 100] [--seed 0]

Writes bench/results/inference.json (`--name`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import REPO, RESULTS, write_result  # noqa: I001  (bench/ is the script's folder)

LABELS = ["apple", "banana", "orange"]


def read(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def f1_sources() -> dict[str, dict]:
    """(arch, size[, variant]) key -> {"f1", "per_class", "file", "what"} from the existing result files."""
    out: dict[str, dict] = {}
    runner = read("runner.json")
    if runner and "results" in runner:
        for key, name in (("fomo-box 160", "fomo-box"), ("nanodet-ft 224 float", "nanodet-ft float"),
                          ("nanodet-ft 224 int8", "nanodet-ft int8")):
            r = runner["results"].get(name)
            if r:
                out[key] = {"f1": r["f1"], "per_class": r.get("per_class_f1"), "file": "runner.json",
                            "what": "real photos, 48 test photos (bench_runner.py's models)", "date": runner["created_at"]}
    choice = read("nanodet_choice.json")
    if choice and choice.get("finetune", {}).get("test"):
        t = choice["finetune"]["test"]
        out["nanodet-ft 224 float (900 CPU s)"] = {
            "f1": t["overall_f1"], "per_class": {k: v["f1"] for k, v in t["per_class"].items()},
            "file": "nanodet_choice.json", "what": "real photos, 48 test photos, fine-tuned 900 CPU s",
            "date": choice["created_at"]}
    ft320 = read("nanodet_finetune_320.json")
    if ft320 and ft320.get("finetune", {}).get("test"):
        t = ft320["finetune"]["test"]
        out["nanodet-ft 320 float"] = {"f1": t["overall_f1"], "per_class": {k: v["f1"] for k, v in t["per_class"].items()},
                                       "file": "nanodet_finetune_320.json", "date": ft320["created_at"],
                                       "what": "real photos, 48 test photos, fine-tuned 300 CPU s (an older recipe)"}
    if choice and choice.get("zero_shot"):
        z = choice["zero_shot"]
        out["nanodet 416 zero-shot COCO"] = {"f1": z["overall_f1"], "per_class": {k: v["f1"] for k, v in z["per_class"].items()},
                                             "file": "nanodet_choice.json", "date": choice["created_at"],
                                             "what": "real photos, 48 test photos, COCO NanoDet-g not fine-tuned"}
    ssd = read("synthetic_ssdlite320_320.json")
    if ssd and ssd.get("results", {}).get("apples_bananas", {}).get("test"):
        t = ssd["results"]["apples_bananas"]["test"]
        out["ssdlite320 320"] = {"f1": t["overall_f1"], "per_class": {k: v["f1"] for k, v in t["per_class"].items()},
                                 "file": "synthetic_ssdlite320_320.json", "date": ssd["created_at"],
                                 "what": "synthetic apple + banana renders, 150 test images"}
    syn = read("synthetic_160.json")
    if syn and syn.get("results", {}).get("apples_bananas", {}).get("test"):
        t = syn["results"]["apples_bananas"]["test"]
        out["fomo-box 160 synthetic"] = {"f1": t["overall_f1"], "per_class": {k: v["f1"] for k, v in t["per_class"].items()},
                                         "file": "synthetic_160.json", "date": syn["created_at"],
                                         "what": "synthetic apple + banana renders, 150 test images"}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100, help="timed frames per network")
    p.add_argument("--models", default=str(REPO / "out" / "runner-bench"), help="bench_runner.py's trained models")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the untrained exports")
    p.add_argument("--name", default="inference")
    args = p.parse_args()
    import torch
    from bench_nanodet import run_runner
    from bench_runner import variant_folders

    from helpers.train.export import export_onnx
    from helpers.train.model import FomoBox
    from helpers.train.nanodet import NANODET_PREPROCESSING, NanoDet

    load_start = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load {load_start}", flush=True)
    torch.manual_seed(args.seed)
    rows: list[dict] = []
    f1 = f1_sources()
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp_s:
        tmp = Path(tmp_s)
        nets = []
        for size in (96, 160, 320):
            md = tmp / f"fomo_{size}"
            export_onnx(FomoBox(len(LABELS), 0.5).eval(), md, {"labels": LABELS, "input_size": size})
            nets.append(("fomo-box", size, "untrained export", md, f1.get(f"fomo-box {size}")))
        for size in (224, 320, 416):
            md = tmp / f"nanodet_{size}"
            export_onnx(NanoDet(len(LABELS)).eval(), md, {"labels": LABELS, "input_size": size, "score_threshold": 0.5,
                                                          "preprocessing": NANODET_PREPROCESSING, "head": {"type": "gfl"}})
            # the F1 of the best model of this network at this size that a result file holds
            best = {224: "nanodet-ft 224 float (900 CPU s)", 320: "nanodet-ft 320 float", 416: "nanodet 416 zero-shot COCO"}
            nets.append(("nanodet-ft", size, "untrained export, float", md, f1.get(best[size])))
        models = Path(args.models)
        if (models / "fomo-box" / "model.json").is_file() and (models / "nanodet-ft" / "model.json").is_file():
            for name, folder in variant_folders(models, tmp / "trained").items():
                size = json.loads((folder / "model.json").read_text())["input_size"]
                key = "fomo-box 160" if name == "fomo-box" else f"nanodet-ft {size} {name.split()[-1]}"
                nets.append((name.split()[0], size, f"trained ({name}, bench_runner.py)", folder, f1.get(key)))
        else:
            print(f"no trained models under {models}: run bench/bench_runner.py once to add their rows", flush=True)
        for arch, size, kind, folder, f1row in nets:
            t = run_runner(str(folder), args.runs)
            row = {"arch": arch, "input_size": size, "model": kind, "cpu_ms_p50": round(t["cpu_ms_median"], 2),
                   "wall_ms_p50": round(t["median_ms"], 2), "wall_ms_p95": round(t["p95_ms"], 2), "runs": t["runs"],
                   "onnx_bytes": t["onnx_bytes"], "load_avg": t["load_avg"], "f1": f1row}
            print(json.dumps({k: row[k] for k in ("arch", "input_size", "model", "cpu_ms_p50", "wall_ms_p50")}), flush=True)
            rows.append(row)
    lat = read("latency.json") or {}
    ssd = (lat.get("results") or {}).get("ssdlite320")
    if ssd:
        rows.append({"arch": "ssdlite320", "input_size": 320, "model": "from latency.json (bench_latency.py in .venv-ssd)",
                     "cpu_ms_p50": None, "wall_ms_p50": round(ssd["median"], 2), "wall_ms_p95": round(ssd["p95"], 2),
                     "runs": ssd["runs"], "onnx_bytes": ssd["onnx_bytes"], "load_avg": lat["machine"]["load_avg_1_5_15"],
                     "measured_at": lat["created_at"], "file": "latency.json", "f1": f1.get("ssdlite320 320"),
                     "f1_fomo_box_same_set": f1.get("fomo-box 160 synthetic")})
    path = write_result(args.name, {
        "what": "OnnxDetector.detect on a 640x480 frame (preprocess + inference + decode), onnxruntime and OpenCV at 1 "
                "thread, fresh process per network: CPU ms of the thread (idle-core cost) and wall ms; F1 read from the "
                "named result files",
        "params": vars(args), "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "f1_sources": f1, "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
