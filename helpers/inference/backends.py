"""Detector backends by model format: ONNX (ours), `.eim` (Edge Impulse Linux) and TFLite.

A model folder holds `model.json` (the card) and one model file; the card's `format` says which:

    format   file           backend
    "onnx"   model.onnx     `helpers.inference.detector.OnnxDetector` (the default: cards without `format`)
    "eim"    model.eim      `EimDetector`: Edge Impulse's Linux executable through the official
                            `edge_impulse_linux.image.ImageImpulseRunner` (the `[eim]` extra)
    "tflite" model.tflite   `TfliteDetector`: an Edge Impulse FOMO TFLite model through LiteRT
                            (`ai_edge_litert`, the `[tflite]` extra)

`load_detector(model_dir)` picks the backend. Every backend has the same surface as
`OnnxDetector`: `detect(rgb, score_threshold=None)` -> boxes in the image's pixels (value =
score, best first), `labels`, `input_size`, `card`, `version`, `score_threshold`, `class_thresholds` (the card's
per-label thresholds, applied when no threshold is passed), `close()`.
"""
from __future__ import annotations

import json
import logging
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from helpers.errors import ModelError
from helpers.geometry import BBox

log = logging.getLogger(__name__)

CARD_NAME = "model.json"
FORMAT_FILES = {"onnx": "model.onnx", "eim": "model.eim", "tflite": "model.tflite"}
EIM_RESIZE_MODES = ("squash", "fit-shortest", "fit-longest")


def model_format(card: dict[str, Any]) -> str:
    """The card's `format` ("onnx" when absent).

    Raises:
        ModelError: an unknown format.
    """
    fmt = card.get("format") or "onnx"
    if fmt not in FORMAT_FILES:
        raise ModelError(f"model card format={fmt!r} is unknown; valid: {', '.join(FORMAT_FILES)}")
    return str(fmt)


def format_of_file(path: str | Path) -> str:
    """The format a model file's name says (`.onnx`, `.eim`, `.tflite`).

    Raises:
        ModelError: another extension.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMAT_FILES:
        raise ModelError(f"{Path(path).name}: a model file must end in .onnx, .eim or .tflite")
    return suffix


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The card of a model folder.

    Raises:
        ModelError: the card is missing or not a JSON object.
    """
    path = Path(model_dir) / CARD_NAME
    if not path.is_file():
        raise ModelError(f"no model card {path}: a model folder holds {CARD_NAME} beside the model file")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"model card {path} is not valid JSON: {e}") from e
    if not isinstance(card, dict):
        raise ModelError(f"model card {path} must be a JSON object")
    return card


def model_file(model_dir: str | Path, card: dict[str, Any] | None = None) -> Path:
    """The model file of a folder, named by its card's format."""
    card = read_card(model_dir) if card is None else card
    return Path(model_dir) / FORMAT_FILES[model_format(card)]


def check_file_sha(path: Path, card: dict[str, Any]) -> None:
    """ModelError when the card carries the registry's `sha256` and the file differs."""
    from helpers.inference.detector import sha256_file

    want = card.get("sha256")
    if want and sha256_file(path) != want:
        raise ModelError(f"{path} does not match the card's sha256: the file was changed or belongs to another "
                         "model; download the model version again")


def load_detector(model_dir: str | Path, threads: int = 1) -> Any:
    """The detector for the model folder `model_dir` (or an `.onnx` file), by the card's `format`.

    Raises:
        ModelError: the card, the file or the model is unusable (the message says which).
        MissingExtra: the format's runtime package is not installed (the message names the extra).
    """
    from helpers.inference.detector import OnnxDetector

    p = Path(model_dir)
    if p.is_file():
        if p.suffix.lower() != ".onnx":
            raise ModelError(f"{p}: pass the model folder (model.json + model file), not the {p.suffix} file")
        return OnnxDetector(p, threads=threads)
    card = read_card(p)
    fmt = model_format(card)
    if fmt == "onnx":
        return OnnxDetector(p, threads=threads)
    if fmt == "eim":
        return EimDetector(p)
    return TfliteDetector(p, threads=threads)


def _labels_or_none(card: dict[str, Any], where: Path) -> list[str] | None:
    labels = card.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise ModelError(f"model card {where} labels must be a non-empty list of names, e.g. [\"apple\"]")
    return list(labels)


def class_thresholds_of(card: dict[str, Any], labels: list[str], where: Path) -> dict[str, float]:
    """The card's per-label thresholds (`class_thresholds` {label: score}, as `OnnxDetector` reads them)."""
    ct = card.get("class_thresholds") or {}
    if not isinstance(ct, dict) or not all(k in labels and isinstance(v, (int, float)) and 0 <= v <= 1 for k, v in ct.items()):
        raise ModelError(f"model card {where} class_thresholds must map labels {labels} to scores in [0, 1], got {ct!r}")
    return {k: float(v) for k, v in ct.items()}


def _cuts(det: Any, score_threshold: float | None) -> dict[str, float]:
    """Each label's minimum score: the given threshold, else the card's per-label ones over its default."""
    thr = det.score_threshold if score_threshold is None else float(score_threshold)
    per = det.class_thresholds if score_threshold is None else {}
    return {label: per.get(label, thr) for label in det.labels}


def _missing_extra(package: str, extra: str, exc: ImportError) -> Exception:
    from helpers.errors import MissingExtra

    return MissingExtra(f"{package} is not importable ({exc}): pip install -e '.[{extra}]'")


# --------------------------------------------------------------------------- .eim


def eim_box_to_image(box: dict[str, Any], mode: str, input_wh: tuple[int, int], image_wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """An Edge Impulse box (x, y, width, height in the model's input pixels) -> (x, y, w, h) in the
    original image, undoing the resize the SDK applied (`get_features_from_image_with_studio_mode`):

    - "squash": the image was stretched to the input;
    - "fit-shortest": the centre was cropped to the input's aspect ratio, then resized;
    - "fit-longest": the image was resized to fit and letterboxed (black bars centred).
    """
    iw, ih = input_wh
    W, H = image_wh
    x0, y0 = float(box["x"]), float(box["y"])
    x1, y1 = x0 + float(box["width"]), y0 + float(box["height"])
    if mode == "squash":
        sx, sy, ox, oy, px, py = W / iw, H / ih, 0.0, 0.0, 0.0, 0.0
    elif mode == "fit-shortest":
        aspect = iw / ih
        if W / H > aspect:
            new_w = int(H * aspect)
            sx, sy, ox, oy = new_w / iw, H / ih, float((W - new_w) // 2), 0.0
        else:
            new_h = int(W / aspect)
            sx, sy, ox, oy = W / iw, new_h / ih, 0.0, float((H - new_h) // 2)
        px = py = 0.0
    elif mode == "fit-longest":
        scale = min(iw / W, ih / H)
        new_w, new_h = int(W * scale), int(H * scale)
        px, py = float((iw - new_w) // 2), float((ih - new_h) // 2)
        sx, sy, ox, oy = W / new_w, H / new_h, 0.0, 0.0
    else:
        raise ModelError(f"the .eim reports image_resize_mode={mode!r}; supported: {', '.join(EIM_RESIZE_MODES)}")
    X0, Y0 = (x0 - px) * sx + ox, (y0 - py) * sy + oy
    X1, Y1 = (x1 - px) * sx + ox, (y1 - py) * sy + oy
    X0, X1 = min(max(X0, 0.0), W), min(max(X1, 0.0), W)
    Y0, Y1 = min(max(Y0, 0.0), H), min(max(Y1, 0.0), H)
    return X0, Y0, X1 - X0, Y1 - Y0


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
            from edge_impulse_linux.image import ImageImpulseRunner
        except ImportError as exc:
            raise _missing_extra("edge_impulse_linux", "eim", exc) from None
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
        card_labels = _labels_or_none(self.card, self.model_dir / CARD_NAME)
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
        from edge_impulse_linux.image import get_features_from_image_with_studio_mode

        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image array of shape (H, W, 3), got {getattr(rgb, 'shape', type(rgb))}")
        cuts = _cuts(self, score_threshold)
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


def resize_like_studio(rgb: np.ndarray, mode: str, input_wh: tuple[int, int]) -> np.ndarray:
    """Resize as Edge Impulse's image block does (the SDK's `get_features_from_image_with_studio_mode`):
    "squash" stretches, "fit-shortest" crops the centre to the input's aspect ratio, "fit-longest"
    letterboxes with black bars; always INTER_AREA. `eim_box_to_image` undoes it for boxes."""
    import cv2

    iw, ih = input_wh
    H, W = rgb.shape[:2]
    if mode == "squash":
        return cv2.resize(rgb, (iw, ih), interpolation=cv2.INTER_AREA)
    if mode == "fit-shortest":
        aspect = iw / ih
        if W / H > aspect:
            new_w = int(H * aspect)
            off = (W - new_w) // 2
            crop = rgb[:, off:off + new_w]
        else:
            new_h = int(W / aspect)
            off = (H - new_h) // 2
            crop = rgb[off:off + new_h, :]
        return cv2.resize(crop, (iw, ih), interpolation=cv2.INTER_AREA)
    if mode == "fit-longest":
        scale = min(iw / W, ih / H)
        new_w, new_h = int(W * scale), int(H * scale)
        top, left = (ih - new_h) // 2, (iw - new_w) // 2
        small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        return cv2.copyMakeBorder(small, top, ih - new_h - top, left, iw - new_w - left, cv2.BORDER_CONSTANT, value=0)
    raise ModelError(f"preprocessing.resize={mode!r} is not supported; valid: {', '.join(EIM_RESIZE_MODES)}")


def fomo_boxes(probs: np.ndarray, labels: list[str], input_wh: tuple[int, int],
               threshold: float | list[float]) -> list[dict[str, Any]]:
    """Edge Impulse FOMO output -> boxes in input pixels, as Edge Impulse's runtime reports them.

    Args:
        probs: (h, w, C+1) per-cell class probabilities (softmax), channel 0 the background.
        labels: the C object labels (channels 1..C).
        input_wh: the model's input (width, height).
        threshold: minimum cell probability, or one per label.

    Touching cells of one class above the threshold merge into one box (8-connected, as the
    SDK's cube merging does); its score is the best cell's.
    """
    import cv2

    gh, gw, n = probs.shape
    if n != len(labels) + 1:
        raise ModelError(f"the FOMO output has {n} channels but the card lists {len(labels)} labels (+1 background): "
                         "the card does not belong to this model")
    cw, ch = input_wh[0] / gw, input_wh[1] / gh
    cuts = list(threshold) if isinstance(threshold, (list, tuple)) else [float(threshold)] * len(labels)
    out = []
    for c, label in enumerate(labels, start=1):
        mask = (probs[:, :, c] >= cuts[c - 1]).astype(np.uint8)
        if not mask.any():
            continue
        count, comp = cv2.connectedComponents(mask, connectivity=8)
        for k in range(1, count):
            ys, xs = np.nonzero(comp == k)
            out.append({"label": label, "value": float(probs[ys, xs, c].max()),
                        "x": float(xs.min() * cw), "y": float(ys.min() * ch),
                        "width": float((xs.max() - xs.min() + 1) * cw), "height": float((ys.max() - ys.min() + 1) * ch)})
    out.sort(key=lambda b: -b["value"])
    return out


class TfliteDetector:
    """An Edge Impulse FOMO object-detection model as a `.tflite` file, run with LiteRT.

    Edge Impulse's TFLite export takes an NHWC image (RGB, or one grey channel) with pixels scaled
    to 0..1 (float32, or int8/uint8 with the tensor's quantization) and FOMO gives one output
    (1, H/8, W/8, C+1): per-cell softmax over the background (channel 0) and the C labels.
    The file carries no label names: the card lists them (`labels`, in output-channel order).

    Card keys: `format` "tflite", `labels`, optional `score_threshold` (0.5),
    `preprocessing.resize` ("squash" default, "fit-shortest", "fit-longest"), `sha256`.

    Raises:
        ModelError: missing file or labels, a tensor layout that is not FOMO's, sha256 mismatch.
        MissingExtra: `ai_edge_litert` is not installed (`[tflite]` extra).
    """

    format = "tflite"

    def __init__(self, model_dir: str | Path, threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise _missing_extra("ai_edge_litert", "tflite", exc) from None
        self.model_dir = Path(model_dir)
        self.card = read_card(self.model_dir)
        self.path = self.model_dir / FORMAT_FILES["tflite"]
        if not self.path.is_file():
            raise ModelError(f"no .tflite model at {self.path}: the card says format 'tflite'")
        check_file_sha(self.path, self.card)
        labels = _labels_or_none(self.card, self.model_dir / CARD_NAME)
        if not labels:
            raise ModelError(f"model card {self.model_dir / CARD_NAME} has no labels: a .tflite file does not name its "
                             'classes; add "labels": ["apple", ...] in the order of the output channels 1..C')
        self.labels: list[str] = labels
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=max(1, int(threads)))
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"LiteRT cannot load {self.path}: {e}") from e
        ins, outs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(ins) != 1 or len(ins[0]["shape"]) != 4:
            raise ModelError(f"{self.path}: expected one NHWC image input, got {[tuple(i['shape']) for i in ins]}")
        self._in = ins[0]
        _, h, w, c = (int(v) for v in self._in["shape"])
        if c not in (1, 3):
            raise ModelError(f"{self.path}: the input has {c} channels; expected 3 (RGB) or 1 (grayscale)")
        self.input_wh = (w, h)
        self.input_size: int = w if w == h else max(w, h)
        self.grayscale = c == 1
        card_size = self.card.get("input_size")
        if isinstance(card_size, int) and (w, h) != (card_size, card_size):
            raise ModelError(f"the .tflite takes {w}x{h} images but the card says input_size={card_size}")
        if len(outs) != 1 or len(outs[0]["shape"]) != 4:
            raise ModelError(f"{self.path}: outputs {[tuple(o['shape']) for o in outs]} are not FOMO's one (1, H/8, W/8, "
                             "C+1) heat map; only Edge Impulse FOMO models are supported as TFLite")
        self._out = outs[0]
        n = int(self._out["shape"][3])
        if n != len(self.labels) + 1:
            raise ModelError(f"the .tflite gives {n} output channels but the card lists {len(self.labels)} labels "
                             f"{self.labels} (+1 background): the card does not belong to this model")
        self.resize_mode = str((self.card.get("preprocessing") or {}).get("resize", "squash"))
        if self.resize_mode not in EIM_RESIZE_MODES:
            raise ModelError(f"model card preprocessing.resize={self.resize_mode!r}; valid: {', '.join(EIM_RESIZE_MODES)}")
        self.score_threshold = float(self.card.get("score_threshold", 0.5))
        self.class_thresholds = class_thresholds_of(self.card, self.labels, self.model_dir / CARD_NAME)
        self._lock = threading.Lock()

    @property
    def version(self) -> int | None:
        """The registry version from the card (None until the model is registered)."""
        return self.card.get("version")

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """The (1, H, W, C) input tensor for an RGB image (quantized when the model is)."""
        import cv2

        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image array of shape (H, W, 3), got {getattr(rgb, 'shape', type(rgb))}")
        img = resize_like_studio(rgb, self.resize_mode, self.input_wh)
        if self.grayscale:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
        x = img.astype(np.float32) / 255.0
        dtype = self._in["dtype"]
        if dtype != np.float32:
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        return x.astype(dtype)[None]

    def raw(self, rgb: np.ndarray) -> np.ndarray:
        """The (h, w, C+1) per-cell probabilities (dequantized) for one image."""
        with self._lock:
            self.interpreter.set_tensor(self._in["index"], self.preprocess(rgb))
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self._out["index"])[0]
        if self._out["dtype"] != np.float32:
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def detect(self, rgb: np.ndarray, score_threshold: float | None = None) -> list[BBox]:
        """Boxes (value = score) in `rgb`'s pixel coordinates, best first."""
        cuts = _cuts(self, score_threshold)
        image_wh = (rgb.shape[1], rgb.shape[0])
        out = []
        for b in fomo_boxes(self.raw(rgb), self.labels, self.input_wh, [cuts[n] for n in self.labels]):
            x, y, w, h = eim_box_to_image(b, self.resize_mode, self.input_wh, image_wh)
            if w >= 1 and h >= 1:
                out.append(BBox(b["label"], x, y, w, h, value=b["value"]))
        return out

    def close(self) -> None:
        """Nothing to stop (the interpreter is freed with the object); for the common surface."""

    def __repr__(self) -> str:
        return f"TfliteDetector({str(self.path)!r}, labels={self.labels}, input={self.input_wh}, version={self.version})"


class TwoPass:
    """A backend without separable head outputs (`.eim`, TFLite) behind `raw`/`decode_raw`, for
    `helpers.train.evaluate`: `raw` keeps the image and `decode_raw` runs `detect` at the asked
    threshold, so each threshold costs one inference (ONNX decodes one inference twice)."""

    def __init__(self, detector: Any):
        self.detector = detector

    def __getattr__(self, name: str) -> Any:
        return getattr(self.detector, name)

    def raw(self, rgb: np.ndarray) -> np.ndarray:
        return rgb

    def decode_raw(self, rgb: np.ndarray, image_size: tuple[int, int], score_threshold: float | None = None) -> list[BBox]:
        return self.detector.detect(rgb, score_threshold=score_threshold)

    def detect(self, rgb: np.ndarray, score_threshold: float | None = None) -> list[BBox]:
        return self.detector.detect(rgb, score_threshold=score_threshold)
