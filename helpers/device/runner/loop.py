"""The runner's loop: camera -> detector at `INFER_RATE_HZ`, with its HTTP server, telemetry and sampling."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from helpers.device.camera import open_camera
from helpers.device.collector import Uploader, open_spool, split_for, utc_now, write_json_atomic
from helpers.device.module_client import ModuleHub, run_until_stopped
from helpers.device.runner.config import RunnerConfig
from helpers.device.runner.model import fetch_model
from helpers.device.runner.server import RunnerState, draw_boxes, make_handler
from helpers.device.runner.telemetry import Telemetry
from helpers.errors import ConfigError, MissingExtra, ModelError
from helpers.frames import CameraError
from helpers.geometry import BBox
from helpers.inference.loader import load_detector

log = logging.getLogger("helpers.device.runner")


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
        log.info("model v%s loaded: labels %s, input %d, network %s", version, detector.labels, detector.input_size,
                 getattr(detector, "variant", None) or "as exported")
        return detector

    def start_sampling(self) -> None:
        if self.cfg.sampling_band is None:
            return
        if not self.cfg.studio_url or not self.cfg.api_key:
            raise ConfigError("SAMPLING_BAND needs STUDIO_URL and EI_API_KEY to upload sampled frames")
        from helpers.studio.ingestion import IngestionClient  # (and requests) only when frames are sampled

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
        if self.hub is not None:
            body["messages_dropped"] = self.hub.dropped  # telemetry the hub never got while it was away
        write_json_atomic(self.cfg.workdir / "reported.json", body)
        if self.hub is not None:
            self.hub.report(body)  # module twin: the model version and the latest window
            if window:
                self.hub.send(body, {"type": "telemetry", "model_version": str(body["model_version"])})

    def loop(self, detector: Any) -> None:
        import cv2  # loaded already (helpers.frames); here to give OpenCV's pool the runner's THREADS

        cv2.setNumThreads(self.cfg.threads)
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


__all__ = ["Runner", "main"]
