"""What a person or a program on the network sees of the runner: its state, the page and the JSON API.

`RunnerState` is what the inference loop writes and the HTTP handlers read (one lock);
`make_handler` serves `/`, `/api/frame.jpg`, `/api/results`, `/api/health` and `/api/info`
(local paths cut to their file name, `public`), the page under a Content-Security-Policy
that lets only its own inline script run and only the local JupyterLab (or the origins
`FRAME_ANCESTORS` names) show it in a frame (`page_csp`, `frame_ancestors`).
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
from collections import deque
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from helpers.device.collector import utc_now
from helpers.errors import ConfigError
from helpers.geometry import BBox

log = logging.getLogger("helpers.device.runner")

PAGE = Path(__file__).with_name("page.html")
HEALTH_STALE_S = 10.0


def draw_boxes(rgb: np.ndarray, boxes: list[BBox]) -> bytes:
    """JPEG of `rgb` with the boxes, labels and scores drawn."""
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


#: The environment variable naming who may show the page in a frame (CSP `frame-ancestors`).
FRAME_ANCESTORS_ENV = "FRAME_ANCESTORS"
#: By default the page itself and a JupyterLab on this machine (any port): notebook 05 embeds it.
DEFAULT_FRAME_ANCESTORS = "'self' http://127.0.0.1:* http://localhost:*"
_ANCESTOR_KEYWORDS = ("'self'", "'none'")
# scheme://host[:port|:*], the host a name, an IPv4 address or [IPv6], or `*.` a domain's subdomains
_ANCESTOR_SOURCE = re.compile(r"^https?://(\*\.)?([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:(\d{1,5}|\*))?/?$")


def frame_ancestors(raw: str | None = None) -> str:
    """The CSP `frame-ancestors` sources: `raw`, else `$FRAME_ANCESTORS`, else `DEFAULT_FRAME_ANCESTORS`.

    Each space-separated source is `'self'`, `'none'` or an origin such as `http://127.0.0.1:*`
    or `https://lab.example.org:8888`; a bare `*`, a scheme alone or anything that is not an
    origin is refused, so a typo never lets every site frame the page.

    Raises:
        ConfigError: a source that is not one of those (named, with an example).
    """
    value = raw if raw is not None else os.environ.get(FRAME_ANCESTORS_ENV, "")
    sources = value.split()
    if not sources:
        return DEFAULT_FRAME_ANCESTORS
    for s in sources:
        if s not in _ANCESTOR_KEYWORDS and not _ANCESTOR_SOURCE.match(s):
            raise ConfigError(
                f"{FRAME_ANCESTORS_ENV}: {s!r} is not a frame ancestor: write 'self', 'none' or origins "
                f"separated by spaces, e.g. {DEFAULT_FRAME_ANCESTORS!r} (the local JupyterLab) "
                "or 'https://lab.example.org:8888'")
    if "'none'" in sources and len(sources) > 1:
        raise ConfigError(f"{FRAME_ANCESTORS_ENV}: 'none' cannot be combined with other sources ({value!r})")
    return " ".join(sources)


def page_csp(page: bytes, ancestors: str = DEFAULT_FRAME_ANCESTORS) -> str:
    """The page's Content-Security-Policy: only its own inline script (by hash) runs, data from here.

    Event-handler attributes (`onerror=...`) never run under it, so markup that reached the page
    as text by mistake still could not execute. `ancestors` (`frame_ancestors()`) are the pages
    that may show it in a frame: the local JupyterLab by default, no other site.
    """
    scripts = re.findall(rb"<script>(.*?)</script>", page, re.S)
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'" for s in scripts)
    return (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; img-src 'self'; "
            f"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}")


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


def make_handler(state: RunnerState, private_roots: Sequence[str | Path] = (),
                 ancestors: str | None = None) -> type[BaseHTTPRequestHandler]:
    """The runner's HTTP handler; `/api/health` and `/api/info` never show local paths (`public`).

    `ancestors`: who may frame the page (default `frame_ancestors()`: `$FRAME_ANCESTORS`, else
    the local JupyterLab).
    """
    page = PAGE.read_bytes()
    csp = page_csp(page, frame_ancestors(ancestors))
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


__all__ = ["DEFAULT_FRAME_ANCESTORS", "FRAME_ANCESTORS_ENV", "HEALTH_STALE_S", "PAGE", "RunnerState", "draw_boxes",
           "frame_ancestors", "make_handler", "page_csp", "public", "public_text"]
