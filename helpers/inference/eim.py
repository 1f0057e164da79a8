"""Edge Impulse `.eim` models (Linux executables) run through the official SDK's runner.

`EimDetector` starts the executable with `edge_impulse_linux.image.ImageImpulseRunner` (the `[eim]`
extra) and has `OnnxDetector`'s surface. Building an `.eim` from our ONNX: `helpers.inference.eim_build`.
"""
from __future__ import annotations

import logging
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from helpers.errors import MissingExtra, ModelError
from helpers.geometry import BBox
from helpers.inference.card import (
    CARD_NAME,
    FORMAT_FILES,
    check_file_sha,
    class_thresholds_of,
    label_cuts,
    labels_or_none,
    read_card,
)
from helpers.inference.resize import EIM_RESIZE_MODES, eim_box_to_image

log = logging.getLogger(__name__)


class EimDetector:
    """An Edge Impulse `.eim` model run by `edge_impulse_linux`'s `ImageImpulseRunner`.

    The runner starts the executable (a child process) and talks to it over a Unix socket; frames
    are turned into features by the SDK with the model's own resize mode, and the boxes mapped
    back to the frame's pixels. Labels and input size come from the model (its `hello` answer);
    when the card lists them too they must agree.

    Args:
        model_dir: a folder with `model.eim` + `model.json` (card `format` "eim").
        start_timeout_s: seconds the executable gets to open its socket.

    Raises:
        ModelError: missing files, sha256 mismatch, the executable does not start, is not an image
            model, or disagrees with the card.
        MissingExtra: `edge_impulse_linux` is not installed (`[eim]` extra).
    """

    format = "eim"

    def __init__(self, model_dir: str | Path, start_timeout_s: float = 60.0):
        try:
            from edge_impulse_linux.image import ImageImpulseRunner  # the optional [eim] extra
        except ImportError as exc:
            raise MissingExtra(f"edge_impulse_linux is not importable ({exc}): pip install -e '.[eim]'") from None
        self.model_dir = Path(model_dir)
        self.card = read_card(self.model_dir)
        self.path = self.model_dir / FORMAT_FILES["eim"]
        if not self.path.is_file():
            raise ModelError(f"no .eim model at {self.path}: the card says format 'eim'")
        check_file_sha(self.path, self.card)
        mode = self.path.stat().st_mode
        if not mode & stat.S_IXUSR:  # a download loses the executable bit
            self.path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self._lock = threading.Lock()
        self._runner = ImageImpulseRunner(str(self.path))
        info = self._start(start_timeout_s)
        params = info.get("model_parameters") or {}
        self.model_parameters = params
        self.project = info.get("project") or {}
        w, h = int(params.get("image_input_width") or 0), int(params.get("image_input_height") or 0)
        if w <= 0 or h <= 0:
            self.close()
            raise ModelError(f"{self.path} is not an image model (input {w}x{h}); deploy an object-detection impulse")
        self.input_wh = (w, h)
        self.input_size: int = w if w == h else max(w, h)
        self.resize_mode = str(params.get("image_resize_mode") or "squash")
        if self.resize_mode == "not-reported":
            self.resize_mode = "squash"  # what the SDK assumes for older builds
        if self.resize_mode not in EIM_RESIZE_MODES:
            self.close()
            raise ModelError(f"{self.path} reports image_resize_mode={self.resize_mode!r}; supported: {', '.join(EIM_RESIZE_MODES)}")
        self.grayscale = int(params.get("image_channel_count") or 3) == 1
        model_labels = [str(x) for x in params.get("labels") or []]
        card_labels = labels_or_none(self.card, self.model_dir / CARD_NAME)
        if card_labels is not None and model_labels and card_labels != model_labels:
            self.close()
            raise ModelError(f"the .eim's labels {model_labels} differ from the card's {card_labels}: the card does "
                             "not belong to this model")
        self.labels: list[str] = card_labels or model_labels
        if not self.labels:
            self.close()
            raise ModelError(f"{self.path} reports no labels and the card lists none")
        card_size = self.card.get("input_size")
        if isinstance(card_size, int) and (w, h) != (card_size, card_size):
            self.close()
            raise ModelError(f"the .eim takes {w}x{h} images but the card says input_size={card_size}")
        default_thr = self.card.get("score_threshold", params.get("threshold", 0.5))
        self.score_threshold = float(default_thr if default_thr is not None else 0.5)
        try:
            self.class_thresholds = class_thresholds_of(self.card, self.labels, self.model_dir / CARD_NAME)
        except ModelError:
            self.close()
            raise
        self._eim_threshold: float | None = None
        self._can_set_threshold = True

    def _start(self, timeout_s: float) -> dict[str, Any]:
        """`runner.init()` with a deadline: SDK 1.2.2 waits forever for the socket when the
        executable exits at once, so a watcher ends the wait and reports the exit code."""
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["info"] = self._runner.init()
            except Exception as exc:  # the SDK raises bare Exception; reported below
                result["error"] = exc

        t = threading.Thread(target=target, name="eim-init", daemon=True)
        t.start()
        deadline = time.monotonic() + timeout_s
        while t.is_alive() and time.monotonic() < deadline:
            t.join(0.2)
            proc = self._runner._runner
            if proc is not None and proc.poll() is not None and t.is_alive():
                break  # the executable exited: no socket will come
        if "info" in result:
            return result["info"]
        proc = self._runner._runner
        code = proc.poll() if proc is not None else None
        if t.is_alive():
            # unblock the SDK's loop (it polls `exists(socket) or _runner.poll()`): stop the child, make
            # the loop read a missing runner, so the thread ends instead of spinning forever
            if proc is not None and code is None:
                proc.kill()
                code = proc.wait(5)
            self._runner._runner = None
            if self._runner._tempdir:
                Path(self._runner._tempdir, "runner.sock").touch()
            t.join(5)
            self.close()
            raise ModelError(f"{self.path} did not start: " + (f"it exited with code {code}" if code is not None and code != -9
                             else f"no socket within {timeout_s:.0f} s") + "; run it by hand (`model.eim /tmp/s.sock`) to see why")
        self.close()
        raise ModelError(f"{self.path} did not answer the Edge Impulse runner's hello: {result.get('error')}")

    @property
    def version(self) -> int | None:
        """The registry version from the card (None until the model is registered)."""
        return self.card.get("version")

    def _apply_threshold(self, thr: float) -> None:
        if not self._can_set_threshold or self._eim_threshold == thr:
            return
        resp = self._runner.set_threshold({"id": 0, "min_score": thr})
        if resp.get("success") is False:
            # an older .eim without set_threshold: filter here (it still drops boxes below its own threshold)
            log.warning("%s refuses set_threshold (%s): filtering its boxes at %.2f", self.path.name, resp.get("error"), thr)
            self._can_set_threshold = False
        self._eim_threshold = thr

    def detect(self, rgb: np.ndarray, score_threshold: float | None = None) -> list[BBox]:
        """Boxes (value = score) in `rgb`'s pixel coordinates, best first."""
        from edge_impulse_linux.image import get_features_from_image_with_studio_mode  # the [eim] extra, as above

        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image array of shape (H, W, 3), got {getattr(rgb, 'shape', type(rgb))}")
        cuts = label_cuts(self, score_threshold)
        thr = min(cuts.values())
        features, _ = get_features_from_image_with_studio_mode(rgb, self.resize_mode, self.input_wh[0], self.input_wh[1],
                                                                self.grayscale)
        with self._lock:
            if self._runner is None:
                raise ModelError(f"{self.path.name}: the detector was closed")
            self._apply_threshold(thr)
            resp = self._runner.classify(features)
        if not resp.get("success", True):
            raise ModelError(f"{self.path.name} failed to classify: {resp.get('error')}")
        raw = (resp.get("result") or {}).get("bounding_boxes")
        if raw is None:
            raise ModelError(f"{self.path.name} gave no bounding_boxes: not an object-detection model "
                             f"(model_type {self.model_parameters.get('model_type')!r})")
        image_wh = (rgb.shape[1], rgb.shape[0])
        out = []
        for b in raw:
            score = float(b.get("value", 0.0))
            if score < cuts.get(str(b["label"]), thr):
                continue
            x, y, w, h = eim_box_to_image(b, self.resize_mode, self.input_wh, image_wh)
            if w < 1 or h < 1:
                continue
            out.append(BBox(str(b["label"]), x, y, w, h, value=score))
        out.sort(key=lambda bb: -(bb.value or 0.0))
        return out

    def close(self) -> None:
        """Stop the executable (idempotent)."""
        runner = getattr(self, "_runner", None)
        if runner is not None:
            self._runner = None
            proc = runner._runner
            runner.stop()
            if proc is not None:
                try:
                    proc.wait(5)
                except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: escalate
                    proc.kill()
                    proc.wait(5)

    def __enter__(self) -> EimDetector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            return

    def __repr__(self) -> str:
        return f"EimDetector({str(self.path)!r}, labels={self.labels}, input={self.input_wh}, version={self.version})"
