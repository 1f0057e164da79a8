"""Our ONNX detector: preprocessing, head decoding and `OnnxDetector` (numpy + onnxruntime + OpenCV only).

This module is what the device image runs, so it must not import torch. Training and
evaluation import `preprocess` and `decode` from here too, so the numbers measured in the
notebooks come from exactly the code that runs on the devices.

The model is a folder with `model.onnx` and `model.json` (the model card, `helpers.inference.card`). The default head
(`head.type` "centernet" in the card) is CenterNet-style at a fixed stride (8 for `fomo-box`):
  - output `heatmap` (1, C, H/s, W/s): per-class centre probability (sigmoid applied);
  - output `ltrb` (1, 4, H/s, W/s): distances from the cell centre to the box's left, top,
    right and bottom edges, in input pixels.
A detection is a local maximum of a class heat map above the score threshold.
The `ssdlite320` comparison model (`head.type` "ssd") and NanoDet (`nanodet-ft` and the
zero-shot COCO model, `head.type` "gfl") give `boxes` (1, A, 4) in input pixels and `scores`
(1, A, C); all are thresholded and NMS'd with OpenCV the same way. NanoDet's card asks for
BGR channels with its own mean/std (`preprocessing.channel_order` "BGR", scale 1).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from helpers.errors import ModelError
from helpers.geometry import BBox
from helpers.inference.card import CARD_NAME, load_card, sha256_file

DEFAULT_PREPROCESSING = {
    "resize": "squash",  # stretch to the square input, as Edge Impulse's "squash" resize mode
    "channel_order": "RGB",
    "layout": "NCHW",
    "scale": 1.0 / 255.0,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
# Edge Impulse's image block offers colour depth RGB or Grayscale; a greyscale model takes one
# channel (ITU-R BT.601 luma), normalised with the mean/std of ImageNet's grey.
GRAYSCALE_PREPROCESSING = {**DEFAULT_PREPROCESSING, "channel_order": "grayscale", "mean": [0.449], "std": [0.226]}
COLORS = {"RGB": DEFAULT_PREPROCESSING, "grayscale": GRAYSCALE_PREPROCESSING}
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# "gfl" (nanodet-ft and the zero-shot COCO NanoDet) gives decoded boxes and per-class
# sigmoid scores, the same contract as "ssd".
HEAD_OUTPUTS = {"centernet": ("heatmap", "ltrb"), "ssd": ("boxes", "scores"), "gfl": ("boxes", "scores")}
BOX_HEADS = ("ssd", "gfl")


def preprocessing_for(color: str) -> dict[str, Any]:
    """The card's `preprocessing` for colour depth `color` ("RGB" or "grayscale")."""
    if color not in COLORS:
        raise ValueError(f"unknown colour depth {color!r}; valid: {', '.join(COLORS)}")
    return dict(COLORS[color])


def input_channels(preprocessing: dict[str, Any] | None) -> int:
    """1 for a greyscale model, 3 for RGB."""
    return 1 if (preprocessing or {}).get("channel_order") == "grayscale" else 3


def to_channels(images: np.ndarray, preprocessing: dict[str, Any] | None) -> np.ndarray:
    """RGB (..., H, W, 3) -> float32 (..., H, W, C) in the model's channels, not yet normalised.

    `channel_order` "BGR" (NanoDet's COCO weights) reverses the channels.
    """
    x = np.asarray(images, np.float32)
    if input_channels(preprocessing) == 1:
        return (x @ _LUMA)[..., None]
    if (preprocessing or {}).get("channel_order") == "BGR":
        return np.ascontiguousarray(x[..., ::-1])
    return x


def preprocess(rgb: np.ndarray, input_size: int, preprocessing: dict[str, Any] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (1, C, S, S) tensor as the model was trained on (C: 3, or 1
    for a greyscale model).

    Raises:
        ValueError: when the image is not an (H, W, 3) array.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image array of shape (H, W, 3), got {getattr(rgb, 'shape', type(rgb))}")
    p = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    if p["resize"] != "squash":
        raise ModelError(f"preprocessing.resize={p['resize']!r} is not supported; only 'squash'")
    # INTER_AREA when shrinking avoids aliasing that the training resize did not have.
    interp = cv2.INTER_AREA if rgb.shape[0] > input_size or rgb.shape[1] > input_size else cv2.INTER_LINEAR
    img = to_channels(cv2.resize(rgb, (input_size, input_size), interpolation=interp), p)
    img *= float(p["scale"])
    img -= np.asarray(p["mean"], np.float32)
    img /= np.asarray(p["std"], np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def decode(heatmap: np.ndarray, ltrb: np.ndarray, labels: Sequence[str], image_size: tuple[int, int],
           input_size: int, score_threshold: float = 0.5, nms_iou: float = 0.45,
           cross_class_iou: float = 0.7, max_detections: int = 100,
           class_thresholds: Sequence[float] | None = None) -> list[BBox]:
    """Turn one image's head outputs into boxes in the image's pixel coordinates.

    Args:
        heatmap: (C, h, w) or (1, C, h, w) per-class centre probabilities in [0, 1].
        ltrb: (4, h, w) or (1, 4, h, w) distances to the box edges in input pixels.
        labels: class names, one per heat-map channel.
        image_size: the original image's (width, height).
        input_size: the model's square input side in pixels.
        score_threshold: minimum peak probability to report.
        nms_iou: IoU above which a weaker box of the same class is dropped.
        cross_class_iou: IoU above which a weaker box of another class is dropped: one object
            gets one label, so the confusion matrix shows what the model really says.
        max_detections: at most this many boxes, best first.
        class_thresholds: one minimum score per label (the card's `class_thresholds`), in
            place of `score_threshold`.

    Returns:
        Boxes with `value` = score, best first.
    """
    cut = _class_cuts(score_threshold, class_thresholds, labels)
    heat = np.asarray(heatmap, np.float32)
    reg = np.asarray(ltrb, np.float32)
    if heat.ndim == 4:
        heat = heat[0]
    if reg.ndim == 4:
        reg = reg[0]
    if heat.shape[0] != len(labels):
        raise ModelError(f"the model gives {heat.shape[0]} heat-map channels but the card lists "
                         f"{len(labels)} labels {list(labels)}: the card does not belong to this model")
    n_cls, gh, gw = heat.shape
    stride_x, stride_y = input_size / gw, input_size / gh
    sx, sy = image_size[0] / input_size, image_size[1] / input_size
    kernel = np.ones((3, 3), np.uint8)
    rects: list[list[float]] = []
    scores: list[float] = []
    classes: list[int] = []
    for c in range(n_cls):
        h = heat[c]
        # A peak is a cell equal to the max of its 3x3 neighbourhood (CenterNet's max-pool NMS).
        peaks = (h >= cut[c]) & (h >= cv2.dilate(h, kernel))
        ys, xs = np.nonzero(peaks)
        for y, x in zip(ys.tolist(), xs.tolist()):
            cx, cy = (x + 0.5) * stride_x, (y + 0.5) * stride_y
            l, t, r, b = (float(v) for v in reg[:, y, x])
            x0, y0 = (cx - max(l, 0.0)) * sx, (cy - max(t, 0.0)) * sy
            x1, y1 = (cx + max(r, 0.0)) * sx, (cy + max(b, 0.0)) * sy
            x0, y0 = min(max(x0, 0.0), image_size[0]), min(max(y0, 0.0), image_size[1])
            x1, y1 = min(max(x1, 0.0), image_size[0]), min(max(y1, 0.0), image_size[1])
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            rects.append([x0, y0, x1 - x0, y1 - y0])
            scores.append(float(h[y, x]))
            classes.append(c)
    return _nms(rects, scores, classes, labels, min(cut), nms_iou, cross_class_iou, max_detections)


def _class_cuts(score_threshold: float, class_thresholds: Sequence[float] | None,
                labels: Sequence[str]) -> list[float]:
    if class_thresholds is None:
        return [float(score_threshold)] * len(labels)
    if len(class_thresholds) != len(labels):
        raise ModelError(f"{len(class_thresholds)} class thresholds for {len(labels)} labels {list(labels)}")
    return [float(t) for t in class_thresholds]


def decode_ssd(boxes: np.ndarray, scores: np.ndarray, labels: Sequence[str], image_size: tuple[int, int],
               input_size: int, score_threshold: float = 0.5, nms_iou: float = 0.45,
               cross_class_iou: float = 0.7, max_detections: int = 100,
               class_thresholds: Sequence[float] | None = None) -> list[BBox]:
    """Boxes from an SSD head: `boxes` (A, 4) x0, y0, x1, y1 in input pixels, `scores` (A, C).

    Same thresholding and OpenCV NMS as `decode`, so both architectures are compared fairly.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    sc = np.asarray(scores, np.float32)
    sc = sc.reshape(-1, sc.shape[-1])
    if sc.shape[1] != len(labels):
        raise ModelError(f"the model gives {sc.shape[1]} class scores but the card lists {len(labels)} labels")
    cut = _class_cuts(score_threshold, class_thresholds, labels)
    sx, sy = image_size[0] / input_size, image_size[1] / input_size
    rects, confs, classes = [], [], []
    for c in range(sc.shape[1]):
        idx = np.nonzero(sc[:, c] >= cut[c])[0]
        for i in idx.tolist():
            x0, y0, x1, y1 = (float(v) for v in b[i])
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            rects.append([x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy])
            confs.append(float(sc[i, c]))
            classes.append(c)
    return _nms(rects, confs, classes, labels, min(cut), nms_iou, cross_class_iou, max_detections)


def _nms(rects: list[list[float]], scores: list[float], classes: list[int], labels: Sequence[str],
         score_threshold: float, nms_iou: float, cross_class_iou: float, max_detections: int) -> list[BBox]:
    """Per-class NMS, then a looser cross-class NMS (one label per object), with OpenCV."""
    if not rects:
        return []
    cls_arr = np.asarray(classes)
    keep: list[int] = []
    for c in np.unique(cls_arr):
        idx = np.nonzero(cls_arr == c)[0]
        kept = cv2.dnn.NMSBoxes([rects[i] for i in idx], [scores[i] for i in idx], score_threshold, nms_iou)
        keep.extend(int(idx[k]) for k in np.asarray(kept).reshape(-1))
    if len(labels) > 1 and len(keep) > 1:
        kept = cv2.dnn.NMSBoxes([rects[i] for i in keep], [scores[i] for i in keep], score_threshold, cross_class_iou)
        keep = [keep[int(k)] for k in np.asarray(kept).reshape(-1)]
    keep.sort(key=lambda i: -scores[i])
    return [BBox(labels[classes[i]], *rects[i], value=scores[i]) for i in keep[:max_detections]]


class OnnxDetector:
    """An exported detector: `detect(rgb)` -> boxes in the image's pixels.

    Args:
        model_dir_or_onnx_path: a folder with `model.onnx` + `model.json`, or the ONNX path.
        threads: onnxruntime intra-op threads (1 on a small device leaves a core for the rest).

    Raises:
        ModelError: the files are missing, the ONNX will not load, the card has no labels,
            the card's input size or labels do not match the network, or the ONNX's sha256
            differs from the card's `onnx_sha256`.
    """

    def __init__(self, model_dir_or_onnx_path: str | Path, threads: int = 1):
        import onnxruntime as ort  # imported here so `decode` works where onnxruntime is absent

        self.onnx_path, self.card = load_card(model_dir_or_onnx_path)
        labels = self.card.get("labels")
        if not labels or not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            raise ModelError(f"model card {self.onnx_path.parent / CARD_NAME} has no labels: it needs "
                             '"labels": ["apple", ...] in the order of the heat-map channels')
        self.labels: list[str] = list(labels)
        size = self.card.get("input_size")
        if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
            size = size[0]
        if not isinstance(size, int) or size <= 0:
            raise ModelError(f"model card input_size must be a positive integer (square input), got {size!r}")
        self.input_size: int = size
        self.preprocessing = {**DEFAULT_PREPROCESSING, **(self.card.get("preprocessing") or {})}
        self.score_threshold = float(self.card.get("score_threshold", 0.5))
        # Per-label thresholds chosen in training (card `class_thresholds`); labels not listed
        # use score_threshold, and an explicit threshold passed to detect() overrides them all.
        ct = self.card.get("class_thresholds") or {}
        if not isinstance(ct, dict) or any(k not in self.labels or not isinstance(v, (int, float)) or not 0 <= v <= 1
                                           for k, v in ct.items()):
            raise ModelError(f"model card class_thresholds must map labels {self.labels} to scores in [0, 1], "
                             f"got {ct!r}")
        self.class_thresholds: dict[str, float] = {k: float(v) for k, v in ct.items()}
        self.nms_iou = float(self.card.get("nms_iou", 0.45))
        self.head_type = str((self.card.get("head") or {}).get("type", "centernet"))
        if self.head_type not in HEAD_OUTPUTS:
            raise ModelError(f"model card head.type={self.head_type!r} is unknown; valid: {sorted(HEAD_OUTPUTS)}")
        expected_sha = self.card.get("onnx_sha256")
        if expected_sha and sha256_file(self.onnx_path) != expected_sha:
            raise ModelError(f"{self.onnx_path} does not match the card's onnx_sha256: the file was changed "
                             "or belongs to another model; download the model version again")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several unrelated types for a bad file
            raise ModelError(f"onnxruntime cannot load {self.onnx_path}: {e}") from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"expected a model with one image input, {self.onnx_path} has {len(inputs)}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4:
            raise ModelError(f"model input {self.input_name} has shape {shape}; expected (1, 3, S, S)")
        for dim in shape[2:]:
            if isinstance(dim, int) and dim != self.input_size:
                raise ModelError(f"input size mismatch: the network takes {shape[2]}x{shape[3]} but the card "
                                 f"says input_size={self.input_size}; re-export the model or fix the card")
        out_names = [o.name for o in self.session.get_outputs()]
        self.outputs = HEAD_OUTPUTS[self.head_type]
        missing = [n for n in self.outputs if n not in out_names]
        if missing:
            raise ModelError(f"model outputs {out_names} lack {missing}: not a {self.head_type} model exported "
                             "by helpers.train (check the card's head.type)")
        boxed = self.head_type in BOX_HEADS
        cls_out = self.session.get_outputs()[out_names.index(self.outputs[1 if boxed else 0])]
        n_cls = cls_out.shape[-1] if boxed else cls_out.shape[1]
        if isinstance(n_cls, int) and n_cls != len(self.labels):
            raise ModelError(f"the network has {n_cls} classes but the card lists labels {self.labels}: "
                             "the card does not belong to this model")

    @property
    def version(self) -> int | None:
        """The registry version from the card (None until the model is registered)."""
        return self.card.get("version")

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """The (1, 3, S, S) float32 tensor this model takes for an RGB image."""
        return preprocess(rgb, self.input_size, self.preprocessing)

    def raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The head outputs for one image, batch dimension removed.

        centernet: (heatmap (C, h, w), ltrb (4, h, w)); ssd, gfl: (boxes (A, 4), scores (A, C)).
        """
        a, b = self.session.run(list(self.outputs), {self.input_name: self.preprocess(rgb)})
        return a[0], b[0]

    def decode_raw(self, outputs: tuple[np.ndarray, np.ndarray], image_size: tuple[int, int],
                   score_threshold: float | None = None) -> list[BBox]:
        """Boxes from `raw()` outputs for an image of `image_size` (width, height)."""
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        per_class = ([self.class_thresholds.get(n, thr) for n in self.labels]
                     if score_threshold is None and self.class_thresholds else None)
        fn = decode_ssd if self.head_type in BOX_HEADS else decode
        return fn(outputs[0], outputs[1], self.labels, image_size, self.input_size,
                  score_threshold=thr, nms_iou=self.nms_iou, class_thresholds=per_class)

    def detect(self, rgb: np.ndarray, score_threshold: float | None = None) -> list[BBox]:
        """Boxes (value = score) in `rgb`'s pixel coordinates, best first."""
        return self.decode_raw(self.raw(rgb), (rgb.shape[1], rgb.shape[0]), score_threshold)

    def __repr__(self) -> str:
        return (f"OnnxDetector({str(self.onnx_path)!r}, labels={self.labels}, input_size={self.input_size}, "
                f"version={self.version})")
