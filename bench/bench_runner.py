"""The runner on a small device: per model, ms per 640x480 frame at one thread, peak RSS of a real runner process, F1.

Models (`fomo-box` 160 px, `nanodet-ft` 224 px float and its int8 network) trained on
bench_nanodet.py's split of ../shared/datasets/fruit-voc-train (stratified 80/20 by file prefix,
seed 0; 15 % of the training part for validation) and measured on the same 48 test photos:

  ms/frame   `OnnxDetector.detect` (preprocess + inference + decode) on the test photos squashed to
             640x480, onnxruntime and OpenCV at 1 thread, in a fresh process: the CPU time of the
             thread per frame (what a frame costs on an idle core; this machine is shared) and the
             wall time, p50 and p95; `--repeats` runs, the fastest reported, all kept with their load;
  peak RSS   VmHWM of a real runner process (`python -m helpers.device.module`, MODE=infer,
             MODEL_PATH, the folder camera replaying the same 640x480 photos, INFER_RATE_HZ=20),
             read from /proc/<pid>/status after `--seconds` of running. Not `ru_maxrss`: a child
             started by fork+exec inherits its parent's peak there (a bench process holding torch
             reports ~390 MB for any child), which is where the 372-395 MB once reported came from;
  F1         `evaluate_model` on the test photos at the card's thresholds.

With `--before REF` (default: the commit before this runner work) the same runner is measured
with that commit's `helpers/` (extracted with `git archive`, read-only) for the float models, so
before and after are one run on one machine state.

Trained models are reused from `--models` (default out/runner-bench/): `fomo-box/` and
`nanodet-ft/`; a missing one is trained with a bounded budget (`--fomo-budget`, `--nanodet-budget`
CPU seconds of one thread) and nanodet-ft gets its int8 network (`helpers.train.quantize`),
calibrated on the training photos, the card choosing one.

    .venv/bin/python bench/bench_runner.py            # writes bench/results/runner.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_result  # noqa: I001

DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "fruit-voc-train"
DEFAULT_BEFORE = "7744c55"
#: the Raspberry Pi 4 (Cortex-A72, 1.5 GHz) per-core slowdown against this machine's core, and where it comes from
PI4_FACTOR = 4.0
PI4_SOURCE = ("a serial 4096x4096 float64 matrix product takes 66.1 s on a Raspberry Pi 4B and 17.8 s on a 2018 "
              "Mac mini's Core i5-8500B (3.7x; zhonguncle.github.io, 'Performance Record of Raspberry Pi 4B', 2023); "
              "one core of this AMD EPYC is about as fast as that i5's, rounded up to 4x for the A72's lack of the "
              "int8 dot-product instructions (ARMv8.0) the int8 kernels use on newer cores")

TIMING_SNIPPET = r"""
import json, sys, time
import cv2, numpy as np
cv2.setNumThreads(1)
from helpers.inference.onnx import OnnxDetector
det = OnnxDetector(sys.argv[1], threads=1)
if sys.argv[3] == "ort-defaults":  # onnxruntime's default options but one thread: what the arena and mem pattern cost
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    det.session = ort.InferenceSession(str(det.onnx_path), sess_options=o, providers=["CPUExecutionProvider"])
frames = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in sys.argv[4:]]
for f in frames[:8]:
    det.detect(f)
cpu, wall = [], []
for i in range(int(sys.argv[2])):
    f = frames[i % len(frames)]
    t, c = time.perf_counter(), time.thread_time()
    det.detect(f)
    wall.append((time.perf_counter() - t) * 1000); cpu.append((time.thread_time() - c) * 1000)
pct = lambda v, q: round(float(np.percentile(v, q)), 2)
status = open("/proc/self/status").read()
print(json.dumps({"cpu_ms": {"p50": pct(cpu, 50), "p95": pct(cpu, 95)}, "wall_ms": {"p50": pct(wall, 50), "p95": pct(wall, 95)},
                  "runs": len(cpu), "variant": det.variant, "file": det.onnx_path.name,
                  "vmhwm_mb": int(status.split("VmHWM:")[1].split()[0]) / 1024}))
"""


def status_mb(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: round(int(text.split(f"{k}:")[1].split()[0]) / 1024, 1) for k in ("VmHWM", "VmRSS")}


def runner_peak(model_dir: Path, frames_dir: Path, seconds: float, workdir: Path, code: Path = REPO) -> dict:
    """Run a real runner process on the folder camera; its VmHWM after `seconds`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EdgeHub", "IOTEDGE_"))}
    env.update({"MODE": "infer", "MODEL_PATH": str(model_dir), "CAMERA_SOURCE": "folder", "CAMERA_PATH": str(frames_dir),
                "CAMERA_SIZE": "640x480", "PORT": "0", "MODULE_WORKDIR": str(workdir), "INFER_RATE_HZ": "20",
                "TELEMETRY_INTERVAL_S": "2", "THREADS": "1", "PYTHONPATH": str(code)})
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "runner.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "helpers.device.module"], cwd=str(code), env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"the runner exited with {proc.returncode}: {log.read_text()[-2000:]}")
        mem = status_mb(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    reported = json.loads((workdir / "reported.json").read_text()) if (workdir / "reported.json").is_file() else {}
    return {"peak_rss_mb": mem["VmHWM"], "rss_mb_at_end": mem["VmRSS"], "seconds": seconds,
            "frames": reported.get("frames"), "runner_latency_ms": reported.get("latency_ms"),
            "load_avg": os.getloadavg()}


def frame_timing(model: Path, frames: list[Path], runs: int, options: str = "edgeloop") -> dict:
    """`detect` per frame in a fresh process: `options` "edgeloop" (`session_options`) or "ort-defaults"."""
    proc = subprocess.run([sys.executable, "-c", TIMING_SNIPPET, str(model), str(runs), options, *map(str, frames)],
                          capture_output=True, text=True, cwd=str(REPO), timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"timing failed: {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_avg": os.getloadavg()}


def train_fomo(out: Path, args, labels, train, val) -> None:
    from helpers.train.export import export_result
    from helpers.train.run import train_detector
    from helpers.train.trainer import TrainParams

    params = TrainParams(input_size=160, width=0.5, epochs=60, seed=args.seed, threads=1, patience=15,
                         time_budget_s=args.fomo_budget, budget_clock="cpu")
    export_result(train_detector(train, val, labels, params, progress=False), out)


def train_nanodet(out: Path, args, labels, train, val) -> None:
    from helpers.train.export import export_result
    from helpers.train.finetune import recommended_params
    from helpers.train.run import train_detector

    params = recommended_params(input_size=224, seed=args.seed, threads=1, time_budget_s=args.nanodet_budget,
                                budget_clock="cpu")
    export_result(train_detector(train, val, labels, params, progress=False), out)


def ensure_models(args, labels, train, val, test) -> dict:
    """The model folders (reused, else trained), nanodet-ft with its int8 network and the card's choice."""
    from helpers.inference.card import INT8_ONNX_NAME, read_card
    from helpers.train.quantize import quantize_and_choose

    root = Path(args.models)
    made: dict = {}
    for name, train_fn in (("fomo-box", train_fomo), ("nanodet-ft", train_nanodet)):
        out = root / name
        if not (out / "model.json").is_file():
            t0, c0 = time.perf_counter(), time.process_time()
            train_fn(out, args, labels, train, val)
            made[name] = {"trained_wall_s": round(time.perf_counter() - t0, 1),
                          "trained_cpu_s": round(time.process_time() - c0, 1)}
        else:
            made[name] = {"reused": str(out)}
        print(name, made[name], flush=True)
    nd = root / "nanodet-ft"
    if not (nd / INT8_ONNX_NAME).is_file() or "runtime" not in read_card(nd):
        t0 = time.perf_counter()
        made["nanodet-ft"]["runtime"] = quantize_and_choose(nd, [rgb for rgb, _ in train], test, split="test",
                                                            seed=args.seed)
        made["nanodet-ft"]["quantize_and_choose_s"] = round(time.perf_counter() - t0, 1)
    return made


def variant_folders(root: Path, tmp: Path) -> dict[str, Path]:
    """One folder per network, each with a card whose `runtime` names it (what the runner loads)."""
    from helpers.inference.card import INT8_ONNX_NAME, ONNX_NAME, read_card

    out = {"fomo-box": root / "fomo-box"}
    card = read_card(root / "nanodet-ft")
    for variant, file in (("float", ONNX_NAME), ("int8", INT8_ONNX_NAME)):
        d = tmp / f"nanodet-ft-{variant}"
        d.mkdir(parents=True)
        shutil.copy(root / "nanodet-ft" / file, d / file)
        if file != ONNX_NAME:  # a folder the old code can read too holds model.onnx
            shutil.copy(root / "nanodet-ft" / ONNX_NAME, d / ONNX_NAME)
        (d / "model.json").write_text(json.dumps({**card, "runtime": {**card.get("runtime", {}), "variant": variant,
                                                                      "file": file}}))
        out[f"nanodet-ft {variant}"] = d
    return out


def extract(ref: str, dest: Path) -> Path:
    """`helpers/` of commit `ref` under `dest` (git archive: reads the repository, writes nothing to it)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "helpers"], cwd=str(REPO), capture_output=True, timeout=120)
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {ref} failed: {archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=120)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET))
    ap.add_argument("--models", default=str(REPO / "out" / "runner-bench"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=200, help="timed frames per model")
    ap.add_argument("--repeats", type=int, default=3, help="timing runs per model; the fastest is reported")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each runner process runs")
    ap.add_argument("--fomo-budget", type=float, default=240.0, help="fomo-box training, CPU seconds (when trained)")
    ap.add_argument("--nanodet-budget", type=float, default=420.0, help="nanodet-ft training, CPU seconds (when trained)")
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="commit whose runner is measured for comparison ('' skips)")
    ap.add_argument("--name", default="runner")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C: each runner_peak's `finally` stops the runner process it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    src = Path(args.dataset)
    if not src.is_dir():
        print(write_result(args.name, {"skipped": f"dataset folder {src} is absent"}))
        return
    sys.path.insert(0, str(REPO / "bench"))
    import cv2
    from bench_nanodet import load_split

    from helpers.train.evaluate import evaluate_model

    labels, train, val, test, _ = load_split(src, args.seed)
    out: dict = {"params": vars(args), "labels": labels, "split": {"train": len(train), "val": len(val), "test": len(test)},
                 "cpu_model": _cpu_model(), "load_avg_start": os.getloadavg()}
    out["models"] = ensure_models(args, labels, train, val, test)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp_s:
        tmp = Path(tmp_s)
        frames_dir = tmp / "frames"
        frames_dir.mkdir()
        frames = []
        for i, (rgb, _) in enumerate(test):
            p = frames_dir / f"test_{i:03d}.jpg"
            cv2.imwrite(str(p), cv2.cvtColor(cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
            frames.append(p)
        folders = variant_folders(Path(args.models), tmp / "variants")
        old = extract(args.before, tmp / "before") if args.before else None
        for name, folder in folders.items():
            res: dict = {"model_dir": str(folder), "input_size": json.loads((folder / "model.json").read_text())["input_size"]}
            # repeats, the fastest kept (each with its load): on this shared machine a neighbour's burst
            # inflates even the CPU time of a thread (shared caches and cores), never deflates it
            res["timing_repeats"] = [frame_timing(folder, frames, args.runs) for _ in range(args.repeats)]
            res["timing_1_thread"] = min(res["timing_repeats"], key=lambda t: t["cpu_ms"]["p50"])
            if name == "nanodet-ft float":  # the session options' effect, same model, same frames
                res["timing_1_thread_ort_defaults"] = frame_timing(folder, frames, args.runs, "ort-defaults")
            rep = evaluate_model(str(folder), test, threads=1, latency_runs=0).to_dict()
            res["f1"] = round(rep["overall"]["f1"], 4)
            res["per_class_f1"] = {k: round(v["f1"], 4) for k, v in rep["per_class"].items()}
            res["map50"] = rep["map50"]
            res["runner"] = runner_peak(folder, frames_dir, args.seconds, tmp / "wd" / name.replace(" ", "-"))
            if old is not None and not name.endswith("int8"):
                res["runner_before"] = {**runner_peak(folder, frames_dir, args.seconds,
                                                      tmp / "wd-before" / name.replace(" ", "-"), code=old),
                                        "commit": args.before}
            res["pi4_predicted_ms"] = round(res["timing_1_thread"]["cpu_ms"]["p50"] * PI4_FACTOR, 1)
            results[name] = res
            print(name, json.dumps({k: res[k] for k in ("f1", "timing_1_thread", "runner")}), flush=True)
    nd = json.loads((Path(args.models) / "nanodet-ft" / "model.json").read_text())
    out.update({"results": results, "card_runtime": nd.get("runtime"),
                "pi4": {"factor": PI4_FACTOR, "source": PI4_SOURCE},
                "goals": {"nanodet_ms_per_frame": 12.4, "nanodet_max_f1_loss": 0.01, "fomo_peak_rss_mb": 150,
                          "nanodet_peak_rss_mb": 200},
                "load_avg_end": os.getloadavg()})
    print(write_result(args.name, out))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
