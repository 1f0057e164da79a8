"""Package an exported model (`model.onnx` + `model.json`) as an Edge Impulse `.eim` executable.

An `.eim` file is what Edge Impulse's Linux deployment builds: a Linux executable that, started as
`model.eim <socket path>`, listens on that Unix socket and answers JSON messages, each reply
ending with a NUL byte. `edge_impulse_linux`'s `ImpulseRunner` / `ImageImpulseRunner` start it
and speak this protocol:

    {"hello": 1, "id": 1}            -> {"success": true, "id": 1, "model_parameters": {...}, "project": {...}}
    {"classify": [f, ...], "id": 2}  -> {"success": true, "id": 2, "result": {"bounding_boxes": [...]}, "timing": {...}}
    {"set_threshold": {...}, "id": 3} -> {"success": true, "id": 3}

Features are one integer per pixel of the (already resized) input image, `0xRRGGBB`
(greyscale: the grey value in all three bytes). Boxes are in input-image pixels with `value`
the detector's score, as Edge Impulse's object-detection models answer.

The executable built here is a Python zip application (`python -m zipapp` layout) with a shebang
line: the model files, the device's detector code (`helpers/inference/onnx.py` and what it imports:
numpy, OpenCV and onnxruntime must be installed where it runs, as for the device image) and
the protocol server below as `__main__.py`. So a user of Edge Impulse's Linux tools can run a
model trained here: `edge-impulse-linux-runner --model-file model.eim`, or the Python SDK.
"""
from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

from helpers.errors import ModelError
from helpers.inference.card import load_card

HELPERS = Path(__file__).resolve().parents[1]
# The files OnnxDetector needs, relative to helpers/: itself and every helpers module it imports
# (tests/unit/test_eim_runtime_modules.py checks the list against the imports).
RUNTIME_MODULES = ("inference/__init__.py", "inference/onnx.py", "inference/card.py", "errors.py", "geometry.py")

EIM_MAIN = r'''
"""The .eim protocol server (Edge Impulse Linux runner protocol over a Unix socket)."""
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import zipfile

import numpy as np


def main():
    if len(sys.argv) != 2:
        print("usage: model.eim <socket path>", file=sys.stderr)
        return 2
    archive = sys.argv[0]  # the .eim itself: a zip archive after the shebang line
    workdir = tempfile.mkdtemp(prefix="eim-")
    try:
        with zipfile.ZipFile(archive) as z:
            for name in ("model/model.onnx", "model/model.json"):
                with open(os.path.join(workdir, os.path.basename(name)), "wb") as fh:
                    fh.write(z.read(name))
        from helpers.inference.onnx import OnnxDetector

        det = OnnxDetector(workdir, threads=int(os.environ.get("EIM_THREADS", "1")))
        return serve(sys.argv[1], det)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def model_parameters(det):
    grey = det.preprocessing.get("channel_order") == "grayscale"
    size = det.input_size
    return {
        "model_type": "constrained_object_detection" if det.head_type == "centernet" else "object_detection",
        "sensor": 3, "sensorType": "camera", "input_features_count": size * size, "frequency": 0, "interval_ms": 1,
        "axis_count": 1, "image_input_width": size, "image_input_height": size, "image_input_frames": 1,
        "image_channel_count": 1 if grey else 3, "image_resize_mode": det.card.get("preprocessing", {}).get("resize", "squash"),
        "label_count": len(det.labels), "labels": list(det.labels), "has_anomaly": 0,
        "threshold": det.score_threshold, "slice_size": size * size, "use_continuous_mode": False,
        "inferencing_engine": 0,
    }


def features_to_rgb(features, size):
    f = np.asarray(features, dtype=np.int64)
    if f.size != size * size:
        raise ValueError("expected %d features (one per pixel of a %dx%d image), got %d" % (size * size, size, size, f.size))
    rgb = np.stack([(f >> 16) & 255, (f >> 8) & 255, f & 255], axis=-1).astype(np.uint8)
    return rgb.reshape(size, size, 3)


def answer(det, msg, state):
    mid = msg.get("id")
    if "hello" in msg:
        card = det.card
        return {"success": True, "id": mid, "model_parameters": model_parameters(det),
                "project": {"id": int(card.get("project_id", 0) or 0), "owner": "edgeloop",
                            "name": str(card.get("name", "edgeloop detector")), "deploy_version": int(card.get("version") or 1)}}
    if "classify" in msg:
        t0 = time.perf_counter()
        rgb = features_to_rgb(msg["classify"], det.input_size)
        boxes = det.detect(rgb, score_threshold=state.get("min_score"))
        ms = (time.perf_counter() - t0) * 1000.0
        bbs = [{"label": b.label, "value": float(b.value if b.value is not None else 1.0), "x": int(round(b.x)),
                "y": int(round(b.y)), "width": int(round(b.width)), "height": int(round(b.height))} for b in boxes]
        return {"success": True, "id": mid, "result": {"bounding_boxes": bbs},
                "timing": {"dsp": 0, "classification": int(ms), "anomaly": 0, "json": 0, "stdin": 0}}
    if "set_threshold" in msg:
        t = msg["set_threshold"]
        if "min_score" in t:
            state["min_score"] = float(t["min_score"])
        return {"success": True, "id": mid}
    return {"success": False, "id": mid, "error": "unknown message; expected hello, classify or set_threshold"}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(path, det):
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The SDK connects as soon as the socket file exists: bind under another name, listen, then
    # rename into place, so the file never exists without a listener (a loaded machine hit the
    # gap between bind and listen: "Connection refused" on hello).
    tmp = path + ".binding"
    if os.path.exists(tmp):
        os.unlink(tmp)
    srv.bind(tmp)
    srv.listen(1)
    os.rename(tmp, path)
    signal.signal(signal.SIGTERM, _interrupt)
    # Edge Impulse's SDK stops a runner with SIGINT: honour it also when started from a shell's
    # background job, which starts its children with SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    state = {}
    try:
        while True:
            conn, _ = srv.accept()
            with conn:
                buf = b""
                decoder = json.JSONDecoder()
                while True:
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        break
                    buf += chunk
                    while buf:
                        text = buf.decode("utf-8", errors="strict").lstrip()
                        try:
                            msg, end = decoder.raw_decode(text)
                        except ValueError:
                            break  # an incomplete message: read more
                        buf = text[end:].encode("utf-8")
                        try:
                            reply = answer(det, msg, state)
                        except Exception as e:  # the protocol reports any failure to the caller
                            reply = {"success": False, "id": msg.get("id"), "error": "%s: %s" % (type(e).__name__, e)}
                        conn.sendall(json.dumps(reply).encode("utf-8") + b"\0")
    except KeyboardInterrupt:
        pass
    finally:
        srv.close()
        if os.path.exists(path):
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def build_eim(model_dir: str | Path, dest: str | Path, interpreter: str = "/usr/bin/env python3") -> Path:
    """Write `dest`: an executable `.eim` of the model in `model_dir` (`model.onnx` + `model.json`).

    Args:
        model_dir: an exported model folder (helpers.train, or `Studio.download_model`).
        dest: the `.eim` path to write (made executable).
        interpreter: the shebang's Python: one with numpy, OpenCV and onnxruntime installed.

    Raises:
        ModelError: the folder lacks the model files or the card cannot be read.
    """
    onnx_path, card = load_card(model_dir)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("__main__.py", EIM_MAIN.lstrip())
        z.writestr("helpers/__init__.py", '"""The detector code of edgeloop, as the device image runs it."""\n')
        for name in RUNTIME_MODULES:
            z.write(HELPERS / name, f"helpers/{name}")
        z.write(onnx_path, "model/model.onnx")
        z.writestr("model/model.json", json.dumps(card, indent=2))
    if not interpreter.strip() or "\n" in interpreter:
        raise ModelError(f"interpreter must be one command line for the shebang, got {interpreter!r}")
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(b"#!" + interpreter.encode() + b"\n" + buf.getvalue())
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, out)
    return out


__all__ = ["build_eim", "EIM_MAIN"]
