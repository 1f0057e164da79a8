"""The inference runner module (`MODE=infer`), like `edge-impulse-linux-runner`.

It gets the model (version `MODEL_VERSION` downloaded from the studio with `x-api-key`, the
sha256 checked, cached under `$MODULE_WORKDIR/models/<version>/`; or a local `MODEL_PATH`),
loads it with `helpers.inference.detector.load_detector` (ONNX, `.eim` or TFLite, by the card's `format`),
and loops camera -> detect, serving on `PORT` (the container's port 4912):

- `/`              a page a person can open: the live frame with boxes, labels and scores,
                   model version, fps and latency, refreshed automatically;
- `/api/frame.jpg` the latest frame with the detections drawn;
- `/api/results`   `{"bounding_boxes": [{label, value, x, y, width, height}], "timing": {...},
                   "frame_index", "model_version", "captured_at"}`, plus `ground_truth` (box
                   dicts) when the camera is synthetic, for drift checks;
- `/api/health`    model version, frames processed, fps, p50/p95 latency, last error; 503 with
                   the reason while unhealthy (model loading or broken, camera failing); local
                   paths cut to their file name (the page is for the network, the workspace is not);
- `/api/info`      the model card, labels, input size, device.

Telemetry goes to `$MODULE_WORKDIR/reported.json` every `TELEMETRY_INTERVAL_S` (the agent
relays it to the device twin): per window, detections per class, mean confidence per class,
the share of low-confidence frames (a detection under `LOW_CONFIDENCE`), the share of frames
where one class takes every detection (of frames with two or more: a drift sign, e.g. a model
that calls a new fruit by the old class), plus frame count, fps and latency. With a synthetic
camera it also compares detections with the frame's ground truth (`synthetic_check`).

Sampling: with `SAMPLING_BAND="lo,hi"`, frames whose top detection score falls in [lo, hi]
(0 when nothing is detected) go to the studio for labeling through the collector's spool and
uploader (`source: runner-sampling`), at most `SAMPLING_MAX_PER_MIN` a minute.

A broken model (will not load, wrong input size, labels missing, hash mismatch, unknown
version) makes `/api/health` answer 503 with the reason for `FAIL_GRACE_S` seconds, then the
process exits with code 3, so the agent reports it failed / in backoff. It never hangs.

Environment: STUDIO_URL, EI_API_KEY, MODEL_VERSION or MODEL_PATH, PORT (4912), BIND_HOST
(127.0.0.1; the agent passes the address the deployment publishes port 4912 on; the image sets
0.0.0.0 inside its own container network), CAMERA_SOURCE (synthetic), CAMERA_DEVICE, CAMERA_PATH,
INFER_RATE_HZ (5), SCORE_THRESHOLD (the card's), TELEMETRY_INTERVAL_S (10), LOW_CONFIDENCE
(0.6), SAMPLING_BAND, SAMPLING_MAX_PER_MIN (6), FAIL_GRACE_S (5), THREADS (1),
MODULE_WORKDIR, IOTEDGE_DEVICEID.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from helpers.config import Secret, mask
from helpers.device.collector import (
    Uploader,
    env_float,
    env_int,
    open_spool,
    split_for,
    utc_now,
    write_json_atomic,
)
from helpers.device.module import ModuleHub, run_until_stopped
from helpers.errors import ConfigError, ModelError
from helpers.geometry import BBox, iou

log = logging.getLogger("helpers.device.runner")

PAGE = Path(__file__).with_name("runner_page.html")
HEALTH_STALE_S = 10.0


# --------------------------------------------------------------------------- configuration


@dataclass
class RunnerConfig:
    """The runner's settings, read from the environment by `from_env`."""

    studio_url: str
    api_key: Secret
    model_version: str | None
    model_path: Path | None
    workdir: Path
    device: str
    port: int = 4912
    bind_host: str = "127.0.0.1"
    camera_source: str = "synthetic"
    camera_opts: dict[str, Any] | None = None
    rate_hz: float = 5.0
    score_threshold: float | None = None
    telemetry_interval_s: float = 10.0
    low_confidence: float = 0.6
    sampling_band: tuple[float, float] | None = None
    sampling_max_per_min: float = 6.0
    fail_grace_s: float = 5.0
    threads: int = 1

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RunnerConfig:
        """Read the configuration; raises ConfigError naming the variable that is wrong."""
        env = dict(os.environ if env is None else env)
        version = env.get("MODEL_VERSION", "").strip() or None
        path = env.get("MODEL_PATH", "").strip() or None
        if not version and not path:
            raise ConfigError("set MODEL_VERSION (a studio model version, e.g. 3) or MODEL_PATH (a folder with "
                              "model.onnx + model.json)")
        if version and not path:
            try:
                if int(version) < 1:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"MODEL_VERSION={version!r} must be a positive integer (the studio's version)") from None
        band = None
        raw_band = env.get("SAMPLING_BAND", "").strip()
        if raw_band:
            try:
                lo, hi = (float(v) for v in raw_band.split(","))
            except ValueError:
                raise ConfigError(f"SAMPLING_BAND={raw_band!r} must be 'low,high', e.g. '0.3,0.6'") from None
            if not 0.0 <= lo <= hi <= 1.0:
                raise ConfigError(f"SAMPLING_BAND={raw_band!r} needs 0 <= low <= high <= 1")
            band = (lo, hi)
        threshold = env.get("SCORE_THRESHOLD", "").strip()
        return cls(
            studio_url=env.get("STUDIO_URL", "").rstrip("/"),
            api_key=Secret(env.get("EI_API_KEY", ""), "EI_API_KEY"),
            model_version=version,
            model_path=Path(path) if path else None,
            workdir=Path(env.get("MODULE_WORKDIR", ".")),
            device=env.get("IOTEDGE_DEVICEID", "") or os.uname().nodename,
            port=env_int(env, "PORT", 4912, minimum=0),
            bind_host=env.get("BIND_HOST", "127.0.0.1"),
            camera_source=env.get("CAMERA_SOURCE", "synthetic"),
            camera_opts=_camera_opts(env),
            rate_hz=env_float(env, "INFER_RATE_HZ", 5.0, minimum=0.01),
            score_threshold=float(threshold) if threshold else None,
            telemetry_interval_s=env_float(env, "TELEMETRY_INTERVAL_S", 10.0, minimum=0.1),
            low_confidence=env_float(env, "LOW_CONFIDENCE", 0.6, minimum=0.0),
            sampling_band=band,
            sampling_max_per_min=env_float(env, "SAMPLING_MAX_PER_MIN", 6.0, minimum=0.0),
            fail_grace_s=env_float(env, "FAIL_GRACE_S", 5.0, minimum=0.0),
            threads=env_int(env, "THREADS", 1, minimum=1),
        )


def _camera_opts(env: dict[str, str]) -> dict[str, Any]:
    from helpers.device.collector import camera_options

    return camera_options(env)


# --------------------------------------------------------------------------- model download


def fetch_model(cfg: RunnerConfig, stop: threading.Event, status: RunnerState) -> Path:
    """The model folder: `MODEL_PATH`, or version `MODEL_VERSION` from the studio (cached).

    Retries while the studio is unreachable (health says so); a version the studio does not
    have, or a download whose sha256 does not match, is a broken model.

    Raises:
        ModelError: unknown version, or the bytes do not match the studio's sha256 twice.
    """
    if cfg.model_path is not None:
        return cfg.model_path
    import requests

    from helpers.inference.backends import FORMAT_FILES, model_format

    version = int(cfg.model_version or 0)
    dest = cfg.workdir / "models" / str(version)
    card_path = dest / "model.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        cached = dest / FORMAT_FILES.get(card.get("format") or "onnx", "model.onnx")
        if card.get("sha256") and cached.is_file() and _sha256(cached.read_bytes()) == card["sha256"]:
            log.info("model v%d from the cache %s", version, dest)
            return dest
    if not cfg.studio_url:
        raise ConfigError("STUDIO_URL is not set: the runner downloads MODEL_VERSION from the studio")
    headers = {"x-api-key": cfg.api_key.get_secret_value()}
    delay, mismatches = 1.0, 0
    while not stop.is_set():
        status.set_unhealthy(f"downloading model v{version} from the studio")
        try:
            meta = requests.get(f"{cfg.studio_url}/api/models/{version}", headers=headers, timeout=10)
            if meta.status_code == 404:
                raise ModelError(f"the studio has no model version {version}: deploy a registered version "
                                 "(studio.models() lists them)")
            if meta.status_code in (401, 403):
                raise ConfigError(f"the studio refused the API key ({meta.status_code}): check EI_API_KEY in the deployment")
            meta.raise_for_status()
            info = meta.json()["model"]
            fmt = model_format(info.get("card") or {})  # onnx, eim or tflite: the file the card names
            resp = requests.get(f"{cfg.studio_url}/api/models/{version}/file", headers=headers, timeout=60)
            resp.raise_for_status()
        except (requests.ConnectionError, requests.Timeout) as exc:
            status.set_unhealthy(f"downloading model v{version}: studio unreachable, retrying in {delay:.0f} s")
            log.warning("studio unreachable for the model download (%s); retrying in %.0f s", mask(str(exc)), delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
            continue
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code < 500:
                raise ModelError(f"model v{version} download refused: {exc.response.status_code} "
                                 f"{exc.response.text[:200]}") from None
            status.set_unhealthy(f"downloading model v{version}: studio error, retrying")
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
            continue
        data = resp.content
        expected = info.get("sha256") or resp.headers.get("x-sha256")
        if expected and _sha256(data) != expected:
            mismatches += 1
            if mismatches >= 2:
                raise ModelError(f"model v{version} downloaded twice with a sha256 other than the studio's "
                                 f"({expected[:12]}...): the stored file is damaged; register the model again")
            log.warning("model v%d sha256 mismatch; downloading again", version)
            continue
        dest.mkdir(parents=True, exist_ok=True)
        card = dict(info.get("card") or {})
        card.setdefault("version", version)
        card.setdefault("sha256", expected or _sha256(data))
        model_path = dest / FORMAT_FILES[fmt]
        write_bytes_atomic(model_path, data)
        if fmt == "eim":
            model_path.chmod(0o755)
        write_bytes_atomic(card_path, json.dumps(card, indent=2).encode())
        log.info("model v%d downloaded (%d bytes, sha256 %s...)", version, len(data), card["sha256"][:12])
        return dest
    raise InterruptedError("stopped while downloading the model")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- state


def draw_boxes(rgb: np.ndarray, boxes: list[BBox]) -> bytes:
    """JPEG of `rgb` with the boxes, labels and scores drawn."""
    import cv2

    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    palette = [(60, 60, 230), (40, 200, 240), (80, 200, 80), (230, 120, 60), (200, 80, 200)]
    labels: dict[str, int] = {}
    for b in boxes:
        color = palette[labels.setdefault(b.label, len(labels)) % len(palette)]
        x0, y0, x1, y1 = (int(round(v)) for v in b.xyxy)
        cv2.rectangle(img, (x0, y0), (x1, y1), color, 2)
        text = f"{b.label} {b.value:.2f}" if b.value is not None else b.label
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(y0, th + 4)
        cv2.rectangle(img, (x0, ty - th - 4), (x0 + tw + 4, ty), color, -1)
        cv2.putText(img, text, (x0 + 2, ty - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("OpenCV could not encode the annotated frame as JPEG")
    return buf.tobytes()


class RunnerState:
    """What the HTTP handlers read and the inference loop writes (one lock)."""

    def __init__(self, device: str):
        self.lock = threading.Lock()
        self.device = device
        self.started_at = utc_now()
        self.card: dict[str, Any] = {}
        self.model_version: int | None = None
        self.labels: list[str] = []
        self.input_size: int | None = None
        self.unhealthy: str | None = "starting"
        self.frames = 0
        self.frame_index: int | None = None
        self.captured_at: str | None = None
        self.boxes: list[BBox] = []
        self.ground_truth: list[BBox] | None = None
        self.timing: dict[str, float] = {}
        self.jpeg: bytes | None = None
        self.latencies: deque[float] = deque(maxlen=300)
        self.frame_times: deque[float] = deque(maxlen=60)
        self.last_frame_mono: float | None = None
        self.last_error: str | None = None

    def set_unhealthy(self, reason: str | None) -> None:
        with self.lock:
            self.unhealthy = reason

    def set_model(self, card: dict[str, Any], labels: list[str], input_size: int, version: int | None) -> None:
        with self.lock:
            self.card, self.labels, self.input_size, self.model_version = card, labels, input_size, version
            self.unhealthy = None

    def record(self, frame: Any, boxes: list[BBox], timing: dict[str, float], jpeg: bytes) -> None:
        now = time.monotonic()
        with self.lock:
            self.frames += 1
            self.frame_index = frame.index
            self.captured_at = frame.captured_at
            self.boxes = boxes
            self.ground_truth = frame.ground_truth
            self.timing = timing
            self.jpeg = jpeg
            self.latencies.append(timing["inference_ms"])
            self.frame_times.append(now)
            self.last_frame_mono = now

    def latency(self) -> dict[str, float | None]:
        with self.lock:
            values = list(self.latencies)
        if not values:
            return {"p50": None, "p95": None}
        return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2)}

    def fps(self) -> float | None:
        with self.lock:
            times = list(self.frame_times)
        if len(times) < 2 or times[-1] == times[0]:
            return None
        return round((len(times) - 1) / (times[-1] - times[0]), 2)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body of /api/health)."""
        with self.lock:
            reason = self.unhealthy
            stale = self.last_frame_mono is not None and time.monotonic() - self.last_frame_mono > HEALTH_STALE_S
            if reason is None and self.last_frame_mono is None:
                reason = "model loaded, no frame processed yet"
            if reason is None and stale:
                reason = f"no frame processed for over {HEALTH_STALE_S:.0f} s (camera: {self.last_error or 'stalled'})"
            body = {"healthy": reason is None, "reason": reason, "model_version": self.model_version,
                    "frames": self.frames, "last_error": self.last_error, "started_at": self.started_at}
        body["fps"] = self.fps()
        body["latency_ms"] = self.latency()
        return reason is None, body

    def results(self) -> dict[str, Any]:
        with self.lock:
            boxes = [{"label": b.label, "value": round(float(b.value or 0.0), 4), "x": round(b.x, 1),
                      "y": round(b.y, 1), "width": round(b.width, 1), "height": round(b.height, 1)} for b in self.boxes]
            out = {"bounding_boxes": boxes, "result": {"bounding_boxes": boxes}, "timing": dict(self.timing),
                   "frame_index": self.frame_index, "captured_at": self.captured_at,
                   "model_version": self.model_version}
            if self.ground_truth is not None:  # synthetic camera only: what was really in view
                out["ground_truth"] = [b.to_dict() for b in self.ground_truth]
            return out

    def info(self) -> dict[str, Any]:
        with self.lock:
            return {"model_version": self.model_version, "labels": self.labels, "input_size": self.input_size,
                    "card": self.card, "device": self.device, "started_at": self.started_at}


# --------------------------------------------------------------------------- HTTP


def page_csp(page: bytes) -> str:
    """The page's Content-Security-Policy: only its own inline script (by hash) runs, data from here.

    Event-handler attributes (`onerror=...`) never run under it, so markup that reached the page
    as text by mistake still could not execute.
    """
    scripts = re.findall(rb"<script>(.*?)</script>", page, re.S)
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'" for s in scripts)
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src 'self'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


# An absolute path's folders (not a URL's: no ':' or '/' just before the first slash).
_PATH_DIRS = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`:;,()\[\]{}<>]+/)+(?=[^\s/'\"`:;,()\[\]{}<>])")


def public_text(text: str, private_roots: Sequence[str | Path] = ()) -> str:
    """`text` for a page anyone on the network may open: local paths cut to their file name.

    A health reason such as `onnxruntime cannot load /home/me/ws/devices/cam-1/.../model.onnx`
    becomes `... cannot load .../model.onnx`: still says which file, not where the workspace is.
    `private_roots` (the module's folder, the model folder) are cut first, whatever they contain.
    """
    for root in sorted({str(r) for r in private_roots if r and str(r) != "/"}, key=len, reverse=True):
        text = text.replace(root.rstrip("/") + "/", ".../").replace(root.rstrip("/"), "...")
    return _PATH_DIRS.sub(".../", text)


def public(value: Any, private_roots: Sequence[str | Path] = ()) -> Any:
    """`public_text` applied to every string in a JSON-like value."""
    if isinstance(value, str):
        return public_text(value, private_roots)
    if isinstance(value, dict):
        return {k: public(v, private_roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v, private_roots) for v in value]
    return value


def make_handler(state: RunnerState, private_roots: Sequence[str | Path] = ()) -> type[BaseHTTPRequestHandler]:
    """The runner's HTTP handler; `/api/health` and `/api/info` never show local paths (`public`)."""
    page = PAGE.read_bytes()
    csp = page_csp(page)
    roots = [str(r) for r in private_roots if r] + [str(Path(r).resolve()) for r in private_roots if r]

    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeloop-runner/1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("http %s", fmt % args)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            if ctype.startswith("text/html"):
                self.send_header("Content-Security-Policy", csp)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif path == "/api/results":
                self._json(200, state.results())
            elif path == "/api/health":
                healthy, body = state.health()
                self._json(200 if healthy else HTTPStatus.SERVICE_UNAVAILABLE, public(body, roots))
            elif path == "/api/info":
                self._json(200, public(state.info(), roots))
            elif path == "/api/frame.jpg":
                with state.lock:
                    jpeg = state.jpeg
                if jpeg is None:
                    self._json(503, {"error": "no frame yet"})
                else:
                    self._send(200, jpeg, "image/jpeg")
            else:
                self._json(404, {"error": f"no route {path}; try /, /api/results, /api/health, /api/info, /api/frame.jpg"})

    return Handler


# --------------------------------------------------------------------------- telemetry


class Telemetry:
    """Per-window statistics of what the model sees, written to reported.json."""

    def __init__(self, low_confidence: float):
        self.low_confidence = low_confidence
        self.reset()

    def reset(self) -> None:
        self.window_start = time.monotonic()
        self.frames = 0
        self.detections: Counter[str] = Counter()
        self.score_sum: Counter[str] = Counter()
        self.low_frames = 0
        self.multi_frames = 0
        self.single_class_frames = 0
        self.dominant: Counter[str] = Counter()
        self.empty_frames = 0
        self.gt_frames = 0
        self.gt_objects: Counter[str] = Counter()
        self.gt_found: Counter[str] = Counter()
        self.confusions: Counter[str] = Counter()

    def add(self, boxes: list[BBox], ground_truth: list[BBox] | None) -> None:
        self.frames += 1
        if not boxes:
            self.empty_frames += 1
        for b in boxes:
            self.detections[b.label] += 1
            self.score_sum[b.label] += float(b.value or 0.0)
        if any(float(b.value or 0.0) < self.low_confidence for b in boxes):
            self.low_frames += 1
        if len(boxes) >= 2:
            self.multi_frames += 1
            classes = {b.label for b in boxes}
            if len(classes) == 1:
                self.single_class_frames += 1
                self.dominant[next(iter(classes))] += 1
        if ground_truth is not None:
            self.gt_frames += 1
            for gt in ground_truth:
                self.gt_objects[gt.label] += 1
                best = max(boxes, key=lambda b: iou(b, gt), default=None)
                if best is None or iou(best, gt) < 0.5:
                    continue
                if best.label == gt.label:
                    self.gt_found[gt.label] += 1
                else:
                    self.confusions[f"{gt.label}->{best.label}"] += 1

    def snapshot(self) -> dict[str, Any]:
        n = max(self.frames, 1)
        out: dict[str, Any] = {
            "window_s": round(time.monotonic() - self.window_start, 1),
            "window_frames": self.frames,
            "detections_per_class": dict(self.detections),
            "mean_confidence": {k: round(self.score_sum[k] / c, 4) for k, c in self.detections.items() if c},
            "low_confidence_share": round(self.low_frames / n, 4),
            "single_class_share": round(self.single_class_frames / self.multi_frames, 4) if self.multi_frames else None,
            "dominant_class": self.dominant.most_common(1)[0][0] if self.dominant else None,
            "empty_share": round(self.empty_frames / n, 4),
        }
        if self.gt_frames:
            out["synthetic_check"] = {
                "frames": self.gt_frames,
                "objects": dict(self.gt_objects),
                "recall": {k: round(self.gt_found[k] / c, 4) for k, c in self.gt_objects.items() if c},
                "confusions": dict(self.confusions),
            }
        return out


# --------------------------------------------------------------------------- main loop


class Runner:
    """Camera -> detector loop with its HTTP server, telemetry and optional sampling."""

    def __init__(self, cfg: RunnerConfig):
        self.cfg = cfg
        self.stop = threading.Event()
        self.state = RunnerState(cfg.device)
        # reports go to the module twin and device-to-cloud messages through the IoT Edge SDK
        self.hub = ModuleHub.from_environment()
        self.server: ThreadingHTTPServer | None = None
        self.uploader: Uploader | None = None
        self.sampled = 0
        self._last_sample = 0.0

    def serve(self) -> None:
        """Start the HTTP server in a thread (before the model loads: health says why it waits)."""
        try:
            handler = make_handler(self.state, [self.cfg.workdir, self.cfg.model_path or ""])
            self.server = ThreadingHTTPServer((self.cfg.bind_host, self.cfg.port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.cfg.bind_host}:{self.cfg.port} ({exc}): set PORT to a free port") from exc
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="http", daemon=True).start()
        log.info("serving on http://%s:%d/", self.cfg.bind_host, self.server.server_address[1])

    def load(self) -> Any:
        """Fetch and load the model; on a broken model, serve 503 for the grace period and raise."""
        from helpers.errors import MissingExtra
        from helpers.inference.detector import load_detector

        try:
            model_dir = fetch_model(self.cfg, self.stop, self.state)
            # by the card's format: model.onnx (onnxruntime), model.eim (Edge Impulse's Linux SDK), model.tflite (LiteRT)
            detector = load_detector(model_dir, threads=self.cfg.threads)
        except (ModelError, MissingExtra) as exc:
            self.state.set_unhealthy(f"broken model: {exc}")
            log.error("broken model: %s (exiting in %.0f s)", exc, self.cfg.fail_grace_s)
            self.write_telemetry(error=f"broken model: {exc}")
            self.stop.wait(self.cfg.fail_grace_s)
            raise
        version = detector.version if detector.version is not None else (
            int(self.cfg.model_version) if self.cfg.model_version else None)
        self.state.set_model(detector.card, detector.labels, detector.input_size, version)
        log.info("model v%s loaded: labels %s, input %d", version, detector.labels, detector.input_size)
        return detector

    def start_sampling(self) -> None:
        if self.cfg.sampling_band is None:
            return
        if not self.cfg.studio_url or not self.cfg.api_key:
            raise ConfigError("SAMPLING_BAND needs STUDIO_URL and EI_API_KEY to upload sampled frames")
        from helpers.studio.ingestion import IngestionClient

        spool = open_spool(self.cfg.workdir, "sampling", os.environ)
        self.uploader = Uploader(spool, IngestionClient(self.cfg.studio_url, self.cfg.api_key), self.stop)
        self.uploader.start()

    def maybe_sample(self, frame: Any, boxes: list[BBox]) -> None:
        if self.uploader is None or self.cfg.sampling_band is None:
            return
        lo, hi = self.cfg.sampling_band
        top = max((float(b.value or 0.0) for b in boxes), default=0.0)
        if not lo <= top <= hi:
            return
        now = time.monotonic()
        if self.cfg.sampling_max_per_min <= 0 or now - self._last_sample < 60.0 / self.cfg.sampling_max_per_min:
            return
        self._last_sample = now
        sha = hashlib.sha256(frame.jpeg).hexdigest()
        metadata = {"device": self.cfg.device, "captured_at": frame.captured_at, "frame_index": frame.index,
                    "source": "runner-sampling", "model_version": self.state.model_version,
                    "top_score": round(top, 4), "detections": [b.to_dict() for b in boxes]}
        if frame.ground_truth is not None:
            metadata["ground_truth"] = [b.to_dict() for b in frame.ground_truth]
        self.uploader.spool.put(frame.jpeg, {
            "filename": f"sample.{self.cfg.device}.{sha[:12]}.jpg", "category": split_for(sha),
            "label": None, "metadata": metadata})
        self.uploader.wake()
        self.sampled += 1

    def write_telemetry(self, window: dict[str, Any] | None = None, error: str | None = None) -> None:
        healthy, health = self.state.health()
        body: dict[str, Any] = {
            "mode": "infer",
            "updated_at": utc_now(),
            "model_version": self.state.model_version,
            "frames": health["frames"],
            "fps": health["fps"],
            "latency_ms": health["latency_ms"],
            "healthy": healthy,
            "reason": health["reason"],
            "last_error": error or health["last_error"],
        }
        if window:
            body.update(window)
        if self.uploader is not None:
            body["sampling"] = {"band": list(self.cfg.sampling_band or ()), "sampled": self.sampled,
                                **self.uploader.stats()}
        write_json_atomic(self.cfg.workdir / "reported.json", body)
        if self.hub is not None:
            self.hub.report(body)  # module twin: the model version and the latest window
            if window:
                self.hub.send(body, {"type": "telemetry", "model_version": str(body["model_version"])})

    def loop(self, detector: Any) -> None:
        from helpers.device.camera import CameraError, open_camera

        camera = open_camera(self.cfg.camera_source, **(self.cfg.camera_opts or {}))
        telemetry = Telemetry(self.cfg.low_confidence)
        period = 1.0 / self.cfg.rate_hz
        next_telemetry = time.monotonic() + min(self.cfg.telemetry_interval_s, 2.0)
        errors = 0
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                try:
                    frame = camera.read()
                except CameraError as exc:
                    errors += 1
                    with self.state.lock:
                        self.state.last_error = f"camera: {exc}"
                    log.warning("camera read failed (%d in a row): %s", errors, exc)
                    self.stop.wait(min(5.0, 0.5 * errors))
                    continue
                errors = 0
                t1 = time.monotonic()
                boxes = detector.detect(frame.image, score_threshold=self.cfg.score_threshold)
                t2 = time.monotonic()
                jpeg = draw_boxes(frame.image, boxes)
                timing = {"capture_ms": round((t1 - t0) * 1000, 2), "inference_ms": round((t2 - t1) * 1000, 2),
                          "total_ms": round((time.monotonic() - t0) * 1000, 2)}
                self.state.record(frame, boxes, timing, jpeg)
                telemetry.add(boxes, frame.ground_truth)
                self.maybe_sample(frame, boxes)
                if time.monotonic() >= next_telemetry:
                    self.write_telemetry(telemetry.snapshot())
                    telemetry.reset()
                    next_telemetry = time.monotonic() + self.cfg.telemetry_interval_s
                self.stop.wait(max(0.0, period - (time.monotonic() - t0)))
        finally:
            close = getattr(camera, "close", None)
            if close is not None:
                close()
            self.write_telemetry(telemetry.snapshot() if telemetry.frames else None)

    def run(self) -> int:
        self.serve()
        detector = None
        try:
            detector = self.load()
            if self.stop.is_set():
                return 0
            self.start_sampling()
            self.loop(detector)
        except InterruptedError:
            return 0
        finally:
            if detector is not None and hasattr(detector, "close"):
                detector.close()  # an .eim detector stops its executable
            if self.uploader is not None:
                self.uploader.join(2.0)
            if self.server is not None:
                self.server.shutdown()
                self.server.server_close()
            if self.hub is not None:
                self.hub.close()
        log.info("runner stopped after %d frames", self.state.frames)
        return 0


def main() -> int:
    """Run the runner until SIGTERM; returns the exit code (raises ModelError on a broken model)."""
    return run_until_stopped(RunnerConfig.from_env(), Runner, log)


__all__ = ["Runner", "RunnerConfig", "RunnerState", "Telemetry", "draw_boxes", "fetch_model", "main"]
