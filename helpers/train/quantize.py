"""int8 post-training quantization of an exported model, and the card's choice of which network a device runs.

`quantize_model(model_dir, images)` writes `model.int8.onnx` beside `model.onnx` with
onnxruntime's `quantize_static`: QDQ format, uint8 activations and per-channel int8 weights
(7-bit range, `reduce_range`: x86 CPUs without VNNI saturate u8 x s8 products otherwise), the
activation ranges calibrated (min/max) on training images run through the model's own
preprocessing (`CalibrationReader`). The head's last 1x1 convolutions (class logits and box
distance bins) and the decoding after them (softmax over bins, strides, sigmoid) stay float
(`float_nodes`): quantized, they cost nanodet-ft 0.015 F1 more on the real photos for no
measurable time (bench/results/runner.json). So do the architecture's first layers
(`FLOAT_PREFIXES`: nanodet-ft's stem and first stage), whose error every later layer carries.

`choose_runtime(model_dir, eval_items)` evaluates both networks on the same photos (F1 at the
card's thresholds, CPU milliseconds per 640x480 frame at one thread, preprocess + inference +
decode) and writes the card's `variants` and `runtime`: int8 when it loses at most
`MAX_F1_LOSS` F1 and is faster, else float, with the reason in words
(`helpers.inference.card` resolves the file).

No torch here: this runs wherever onnxruntime does.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from helpers.errors import ModelError
from helpers.geometry import BBox
from helpers.inference.card import CARD_NAME, INT8_ONNX_NAME, ONNX_NAME, read_card, sha256_file
from helpers.inference.onnx import OnnxDetector, preprocess

#: the most F1 the int8 network may lose against the float one and still be chosen
MAX_F1_LOSS = 0.01
#: calibration images used at most (min/max calibration settles well before this)
MAX_CALIBRATION_IMAGES = 64
#: per architecture, the first layers kept float: the quantization error they make is carried
#: through every layer after them. nanodet-ft with its stem and first stage float agrees with the
#: float network on 0.978 of the boxes of 192 photos (all int8: 0.959) and costs 10.5 ms per frame
#: instead of 9.9 (float 15.5): bench/bench_quantize.py, bench/results/quantize.json.
FLOAT_PREFIXES: dict[str, tuple[str, ...]] = {"nanodet-ft": ("/backbone/stem", "/backbone/stages.0")}
#: the frame the card's per-frame time is measured on (a camera's 640x480)
FRAME_SIZE = (640, 480)


class CalibrationReader:
    """onnxruntime's `CalibrationDataReader` protocol over RGB images, preprocessed as the model is at run time."""

    def __init__(self, images: Sequence[np.ndarray], input_name: str, input_size: int,
                 preprocessing: dict[str, Any] | None):
        self._images = list(images)
        self._input_name = input_name
        self._size = input_size
        self._preprocessing = preprocessing
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._images):
            return None
        rgb = self._images[self._pos]
        self._pos += 1
        return {self._input_name: preprocess(rgb, self._size, self._preprocessing)}

    def rewind(self) -> None:
        self._pos = 0


def float_nodes(model: Any) -> list[str]:
    """Names of the nodes kept float: the head's last convolutions and the decoding after them.

    A head's last convolution is a Conv from which no other Conv can be reached; everything
    reachable from one is decoding.
    """
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def below(node: Any) -> list[Any]:
        seen: dict[str, Any] = {}
        stack = [c for out in node.output for c in consumers.get(out, [])]
        while stack:
            n = stack.pop()
            if n.name in seen:
                continue
            seen[n.name] = n
            stack.extend(c for out in n.output for c in consumers.get(out, []))
        return list(seen.values())

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    last = [c for c in convs if not any(n.op_type == "Conv" for n in below(c))]
    return sorted({c.name for c in last} | {n.name for c in last for n in below(c)})


def quantize_model(model_dir: str | Path, images: Sequence[np.ndarray], max_images: int = MAX_CALIBRATION_IMAGES,
                   seed: int = 0, *, calibration: str = "minmax", activations: str = "uint8",
                   weights: str = "int8", reduce_range: bool = True, float_prefixes: Sequence[str] | None = None) -> Path:
    """Write `model.int8.onnx` beside `model.onnx`, calibrated on `images`; returns its path.

    The card gets `variants.float` and `variants.int8` (`file`, `sha256`; int8 also
    `quantization`: format, types, calibration images and method, the nodes kept float), so
    `OnnxDetector` accepts either file; `runtime` is left to `choose_runtime`.

    Args:
        model_dir: an exported ONNX model folder (`model.onnx` + `model.json`).
        images: RGB uint8 training images (never test images) to calibrate the activation ranges on.
        max_images: at most this many, drawn with `seed`.
        seed: which images when there are more than `max_images`.
        calibration: how activation ranges are set: `minmax`, `percentile` (99.999th) or `entropy`.
        activations: `uint8` or `int8` (onnxruntime's x86 kernels turn S8S8 into U8S8).
        weights: `int8` or `uint8` (U8U8: no u8 x s8 saturation on x86 without VNNI, full 8 bits).
        reduce_range: 7-bit weights (x86 without VNNI saturates u8 x s8 products otherwise).
        float_prefixes: nodes whose names start with one of these stay float too (default: the
            architecture's `FLOAT_PREFIXES`).

    Raises:
        ModelError: no images, the folder is not an ONNX model, or onnxruntime cannot quantize it.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if calibration not in methods or activations not in types or weights not in types:
        raise ValueError(f"calibration must be one of {sorted(methods)}, activations and weights one of {sorted(types)}; "
                         f"got {calibration!r}, {activations!r}, {weights!r}")
    out = Path(model_dir)
    src = out / ONNX_NAME
    card = read_card(out)
    if card.get("format", "onnx") != "onnx" or not src.is_file():
        raise ModelError(f"{out} is not an exported ONNX model folder ({ONNX_NAME} + {CARD_NAME}): nothing to quantize")
    if not images:
        raise ModelError("int8 calibration needs training images: pass the training split's RGB images")
    picked = list(images)
    if len(picked) > max_images:
        idx = np.random.default_rng(seed).choice(len(picked), max_images, replace=False)
        picked = [picked[i] for i in sorted(idx.tolist())]
    size = int(card["input_size"])
    model = onnx.load(str(src))
    input_name = model.graph.input[0].name
    prefixes = tuple(FLOAT_PREFIXES.get(card.get("arch", ""), ()) if float_prefixes is None else float_prefixes)
    keep_float = sorted(set(float_nodes(model)) | {n.name for n in model.graph.node
                                                   if any(n.name.startswith(p) for p in prefixes)})
    dest = out / INT8_ONNX_NAME
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(Path(tmp) / INT8_ONNX_NAME),
                            CalibrationReader(picked, input_name, size, card.get("preprocessing")),
                            quant_format=QuantFormat.QDQ, activation_type=types[activations],
                            weight_type=types[weights], per_channel=True, reduce_range=reduce_range,
                            nodes_to_exclude=keep_float, calibrate_method=methods[calibration],
                            extra_options={"CalibPercentile": 99.999} if calibration == "percentile" else None)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as e:
            raise ModelError(f"onnxruntime could not quantize {src}: {e}") from e
        (Path(tmp) / INT8_ONNX_NAME).replace(dest)
    variants = dict(card.get("variants") or {})
    variants["float"] = {**variants.get("float", {}), "file": ONNX_NAME, "sha256": sha256_file(src)}
    variants["int8"] = {"file": INT8_ONNX_NAME, "sha256": sha256_file(dest), "bytes": dest.stat().st_size,
                        "quantization": {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                                         "activations": activations,
                                         "weights": f"{weights} per channel, {7 if reduce_range else 8}-bit range",
                                         "calibration": {"method": methods[calibration].name, "images": len(picked),
                                                         "split": "train"},
                                         "float_nodes": keep_float, "seconds": round(time.perf_counter() - t0, 1)}}
    _write_card(out, {**card, "variants": variants})
    return dest


def frame_ms(detector: OnnxDetector, frames: Sequence[np.ndarray], runs: int = 30, warmup: int = 5) -> dict[str, float]:
    """CPU milliseconds of this thread per `detect` (preprocess + inference + decode): with one
    onnxruntime thread that is what a frame costs on an idle core, however busy the machine is.
    OpenCV runs on this thread too meanwhile (its pool would hide the resize's time)."""
    import cv2

    pool = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for k in range(warmup):
            detector.detect(frames[k % len(frames)])
        cpu = []
        for k in range(runs):
            t0 = time.thread_time()
            detector.detect(frames[k % len(frames)])
            cpu.append((time.thread_time() - t0) * 1000)
    finally:
        cv2.setNumThreads(pool)
    return {"p50": round(float(np.median(cpu)), 2), "p95": round(float(np.percentile(cpu, 95)), 2), "runs": runs}


def camera_frames(images: Sequence[np.ndarray], n: int = 4) -> list[np.ndarray]:
    """Up to `n` images squashed to a camera's 640x480 (the frame the per-frame times are for)."""
    import cv2

    return [cv2.resize(img, FRAME_SIZE, interpolation=cv2.INTER_AREA) for img in list(images)[:n]]


def choose_runtime(model_dir: str | Path, eval_items: Sequence[tuple[np.ndarray, Sequence[BBox]]],
                   split: str = "test", max_f1_loss: float = MAX_F1_LOSS) -> dict[str, Any]:
    """Evaluate float and int8 on the same photos and write the card's choice; returns `runtime`.

    Each variant gets `f1`, `per_class_f1`, `map50`, `images`, `split` and `ms_per_frame` (CPU
    time at one thread on 640x480 frames). int8 is chosen when its F1 is at most `max_f1_loss`
    below float's and it is faster; the card's `runtime.why` says so in numbers.

    Raises:
        ModelError: the folder has no `model.int8.onnx` (run `quantize_model` first) or no photos were given.
    """
    from helpers.train.evaluate import evaluate_model

    out = Path(model_dir)
    if not (out / INT8_ONNX_NAME).is_file():
        raise ModelError(f"{out / INT8_ONNX_NAME} is missing: run quantize_model({str(out)!r}, training images) first")
    if not eval_items:
        raise ModelError("choose_runtime needs photos with boxes to measure F1 on (the test split)")
    frames = camera_frames([rgb for rgb, _ in eval_items])
    card = read_card(out)
    variants = dict(card.get("variants") or {})
    measured: dict[str, dict[str, Any]] = {}
    for name, file in (("float", ONNX_NAME), ("int8", INT8_ONNX_NAME)):
        report = evaluate_model(str(out / file), eval_items, threads=1, latency_runs=0).to_dict()
        ms = frame_ms(OnnxDetector(out / file, threads=1), frames)
        measured[name] = {"f1": round(report["overall"]["f1"], 4), "map50": float(report["map50"]),
                          "per_class_f1": {k: round(v["f1"], 4) for k, v in report["per_class"].items()},
                          "images": report["images"], "split": split, "ms_per_frame": ms}
        variants[name] = {**variants.get(name, {}), **measured[name]}
    f, q = measured["float"], measured["int8"]
    loss = round(f["f1"] - q["f1"], 4)
    faster = q["ms_per_frame"]["p50"] < f["ms_per_frame"]["p50"]
    pick = "int8" if loss <= max_f1_loss and faster else "float"
    numbers = (f"F1 {q['f1']:.3f} int8 vs {f['f1']:.3f} float on {f['images']} {split} photos "
               f"({-loss:+.3f}; at most -{max_f1_loss} allowed), {q['ms_per_frame']['p50']:.1f} vs "
               f"{f['ms_per_frame']['p50']:.1f} ms per 640x480 frame at 1 thread")
    why = (f"int8: {numbers}" if pick == "int8" else
           f"float: int8 {'loses too much F1' if loss > max_f1_loss else 'is not faster here'}: {numbers}")
    runtime = {"variant": pick, "file": variants[pick]["file"], "why": why, "max_f1_loss": max_f1_loss}
    _write_card(out, {**read_card(out), "variants": variants, "runtime": runtime})
    return runtime


def quantize_and_choose(model_dir: str | Path, train_images: Sequence[np.ndarray],
                        eval_items: Sequence[tuple[np.ndarray, Sequence[BBox]]], split: str = "test",
                        seed: int = 0) -> dict[str, Any]:
    """`quantize_model` on the training images, then `choose_runtime` on `eval_items`; returns `runtime`."""
    quantize_model(model_dir, train_images, seed=seed)
    return choose_runtime(model_dir, eval_items, split=split)


def _write_card(model_dir: Path, card: dict[str, Any]) -> None:
    path = model_dir / CARD_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True))
    tmp.replace(path)


__all__ = ["FLOAT_PREFIXES", "MAX_F1_LOSS", "CalibrationReader", "camera_frames", "choose_runtime", "float_nodes", "frame_ms",
           "quantize_and_choose", "quantize_model"]
