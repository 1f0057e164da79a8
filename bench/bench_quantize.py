"""int8 settings for nanodet-ft, chosen on the non-test photos, reported on the test photos.

The trained `nanodet-ft` of bench_runner.py (`--models`, default out/runner-bench/nanodet-ft:
224 px, trained on bench_nanodet.py's split of ../shared/datasets/fruit-voc-train) is quantized
with each setting of onnxruntime's `quantize_static` below, into a folder of its own, and both
networks are measured the same way: F1 at the card's thresholds on the validation photos (15 % of
the training part) and on the 48 test photos, CPU ms per 640x480 frame at one thread (preprocess + inference + decode), and the agreement of its
boxes with the float network's (F1, float's boxes as truth) on all 192 non-test photos: what
quantizing changed, on four times the photos a validation F1 sees (one box there is 0.01-0.02 F1).
Among the settings faster than float, those within AGREEMENT_NOISE of the best agreement are
equally good; the fastest of them (the fewest float layers) is the pick. Its test figures are what
it predicts for photos nobody tuned on (48 photos: one box is 0.01-0.02 F1).

    .venv/bin/python bench/bench_quantize.py            # ~8 min when the model exists
Writes bench/results/quantize.json. The machine's load is recorded beside the timings.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import REPO, write_result  # noqa: I001

#: agreement differences below this are a box or two on 192 photos: settings within it are equally good
AGREEMENT_NOISE = 0.005
STEM_STAGE0 = ["/backbone/stem", "/backbone/stages.0"]
SETTINGS = {  # name -> quantize_model keyword arguments
    "u8 minmax 7-bit (before)": {"calibration": "minmax", "reduce_range": True, "float_prefixes": []},
    "u8 minmax 7-bit, all images": {"calibration": "minmax", "reduce_range": True, "float_prefixes": [],
                                    "max_images": 10_000},
    "u8 percentile 7-bit": {"calibration": "percentile", "reduce_range": True, "float_prefixes": []},
    "u8 entropy 7-bit": {"calibration": "entropy", "reduce_range": True, "float_prefixes": []},
    "u8 minmax 8-bit": {"calibration": "minmax", "reduce_range": False, "float_prefixes": []},
    "s8 minmax 8-bit": {"calibration": "minmax", "activations": "int8", "reduce_range": False, "float_prefixes": []},
    "u8u8 minmax 8-bit": {"calibration": "minmax", "weights": "uint8", "reduce_range": False, "float_prefixes": []},
    "u8 minmax 7-bit, stem float": {"calibration": "minmax", "reduce_range": True, "float_prefixes": STEM_STAGE0[:1]},
    "u8 minmax 7-bit, stem + stage 0 float": {"calibration": "minmax", "reduce_range": True,
                                              "float_prefixes": STEM_STAGE0},
    "u8 minmax 7-bit, stem + stages 0-1 float": {"calibration": "minmax", "reduce_range": True,
                                                 "float_prefixes": STEM_STAGE0 + ["/backbone/stages.1"]},
}


def measure(model_file: Path, items, frames) -> dict:
    from helpers.inference.onnx import OnnxDetector
    from helpers.train.evaluate import evaluate_model
    from helpers.train.quantize import frame_ms

    report = evaluate_model(str(model_file), items, threads=1, latency_runs=0)
    return {"f1": round(report.overall.f1, 4), "map50": round(float(report.map50 or 0.0), 4),
            "per_class_f1": {k: round(v.f1, 4) for k, v in report.per_class.items()},
            "ms_per_frame": frame_ms(OnnxDetector(model_file, threads=1), frames)}


def agreement(model_file: Path, float_dets, items) -> float:
    """F1 of the int8 network's boxes against the float network's on the same photos: what quantizing
    changed, whatever the labels say (on many more photos than the held-out ones)."""
    from helpers.inference.onnx import OnnxDetector
    from helpers.train.evaluate import detection_counts

    det = OnnxDetector(model_file, threads=1)
    mine = [det.detect(rgb) for rgb, _ in items]
    labels = sorted({b.label for d in float_dets + mine for b in d})
    return round(detection_counts(float_dets, mine, labels)[1].f1, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(REPO / "out" / "runner-bench" / "nanodet-ft"),
                    help="a trained nanodet-ft folder (bench/bench_runner.py writes it)")
    ap.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "fruit-voc-train"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="quantize")
    args = ap.parse_args()
    src = Path(args.models)
    if not (src / "model.onnx").is_file():
        raise SystemExit(f"no trained model in {src}: run `.venv/bin/python bench/bench_runner.py` first (make bench-models)")
    if not Path(args.dataset).is_dir():
        raise SystemExit(f"the photos are not at {args.dataset}: give --dataset")

    from bench_nanodet import load_split

    from helpers.inference.card import INT8_ONNX_NAME, ONNX_NAME
    from helpers.train.quantize import camera_frames, quantize_model

    labels, train, val, test, _ = load_split(Path(args.dataset), args.seed)
    frames = camera_frames([rgb for rgb, _ in test])
    load_start = os.getloadavg()
    from helpers.inference.onnx import OnnxDetector

    seen = train + val  # every photo but the test ones
    float_det = OnnxDetector(src / ONNX_NAME, threads=1)
    float_dets = [float_det.detect(rgb) for rgb, _ in seen]
    results: dict = {"float": {"val": measure(src / ONNX_NAME, val, frames), "test": measure(src / ONNX_NAME, test, frames)}}
    print("float", json.dumps(results["float"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as tmp:
        for name, kw in SETTINGS.items():
            work = Path(tmp) / "m"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            for f in ("model.onnx", "model.json"):
                shutil.copy(src / f, work / f)
            kw = dict(kw)
            max_images = kw.pop("max_images", None)
            t0 = time.perf_counter()
            quantize_model(work, [rgb for rgb, _ in train], seed=args.seed, **kw,
                           **({"max_images": max_images} if max_images else {}))
            seconds = round(time.perf_counter() - t0, 1)
            q = work / INT8_ONNX_NAME
            results[name] = {"settings": {**kw, "calibration_images": min(max_images or 64, len(train))},
                             "quantize_s": seconds, "agreement_with_float": agreement(q, float_dets, seen),
                             "val": measure(q, val, frames), "test": measure(q, test, frames)}
            print(name, json.dumps(results[name]), flush=True)
    f = results["float"]
    rows = []
    for name, r in results.items():
        if name == "float":
            continue
        r["val_f1_lost"] = round(f["val"]["f1"] - r["val"]["f1"], 4)
        r["test_f1_lost"] = round(f["test"]["f1"] - r["test"]["f1"], 4)
        r["faster"] = r["test"]["ms_per_frame"]["p50"] < f["test"]["ms_per_frame"]["p50"]
        rows.append((r["test"]["ms_per_frame"]["p50"], -r["agreement_with_float"], name))
    faster = [row for row in rows if results[row[2]]["faster"]]
    best = max((-row[1] for row in faster), default=0.0)
    pick = min((row for row in faster if -row[1] >= best - AGREEMENT_NOISE), default=None)
    write_result(args.name, {
        "what": "nanodet-ft 224 px int8 settings (onnxruntime quantize_static, QDQ, per-channel weights, the head's "
                "last convolutions and decoding float): F1 on validation (the choice) and test photos, CPU ms per "
                "640x480 frame at one thread",
        "model": str(src), "split": {"train": len(train), "val": len(val), "test": len(test)}, "labels": labels,
        "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "pick_rule": f"among the settings faster than float, those within {AGREEMENT_NOISE} of the best agreement with "
                     "the float network's boxes on the non-test photos; of them the fastest (the fewest float layers); "
                     "test figures reported, never used to choose",
        "pick": None if pick is None else {"setting": pick[2], "agreement_with_float": -pick[1],
                                           "val_f1_lost": results[pick[2]]["val_f1_lost"],
                                           "test_f1_lost": results[pick[2]]["test_f1_lost"],
                                           "ms_per_frame_p50": pick[0]},
        "results": results})
    print("pick:", pick)


if __name__ == "__main__":
    main()
