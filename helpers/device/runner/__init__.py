"""The inference runner module (`MODE=infer`), like `edge-impulse-linux-runner`.

It gets the model (version `MODEL_VERSION` downloaded from the studio with `x-api-key`, the
sha256 checked, cached under `$MODULE_WORKDIR/models/<version>/`; or a local `MODEL_PATH`),
loads it with `helpers.inference.loader.load_detector` (ONNX, `.eim` or TFLite, by the card's `format`),
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

Memory and time on a small device: THREADS sets onnxruntime's intra-op threads and OpenCV's
pool; the session runs without onnxruntime's memory arena (`helpers.inference.onnx.session_options`);
the runner imports only what its path uses (the simulator only for the synthetic camera, the HTTP
client only to download a model or upload samples); a model folder's card names which network
runs (`model.int8.onnx` or `model.onnx`, `helpers.inference.card.onnx_file`), logged at load.

Modules: `config` (the environment), `model` (download and cache), `server` (state, page and
API), `telemetry` (per-window statistics), `loop` (the runner itself and `main`).
"""
from helpers.device.runner.config import RunnerConfig
from helpers.device.runner.loop import Runner, main
from helpers.device.runner.model import fetch_model, write_bytes_atomic
from helpers.device.runner.server import RunnerState, draw_boxes, make_handler, page_csp, public, public_text
from helpers.device.runner.telemetry import Telemetry

__all__ = [
    "Runner",
    "RunnerConfig",
    "RunnerState",
    "Telemetry",
    "draw_boxes",
    "fetch_model",
    "main",
    "make_handler",
    "page_csp",
    "public",
    "public_text",
    "write_bytes_atomic",
]
