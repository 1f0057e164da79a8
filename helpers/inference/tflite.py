"""Edge Impulse FOMO models as `.tflite` files, run with LiteRT (`ai_edge_litert`, the `[tflite]` extra)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
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
from helpers.inference.resize import EIM_RESIZE_MODES, eim_box_to_image, resize_like_studio


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
            from ai_edge_litert.interpreter import Interpreter  # LiteRT: not in the device image's [device] extra
        except ImportError as exc:
            raise MissingExtra(f"ai_edge_litert is not importable ({exc}): pip install -e '.[tflite]'") from None
        self.model_dir = Path(model_dir)
        self.card = read_card(self.model_dir)
        self.path = self.model_dir / FORMAT_FILES["tflite"]
        if not self.path.is_file():
            raise ModelError(f"no .tflite model at {self.path}: the card says format 'tflite'")
        check_file_sha(self.path, self.card)
        labels = labels_or_none(self.card, self.model_dir / CARD_NAME)
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
        cuts = label_cuts(self, score_threshold)
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
