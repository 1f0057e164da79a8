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

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from helpers.errors import ModelError
from helpers.geometry import BBox
from helpers.inference.card import CARD_NAME, load_card, onnx_variant

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


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash an image to `size` x `size`, as the model was trained on.

    Shrinking is an area (box) filter, which does not alias: OpenCV's INTER_AREA is fast only
    for integer factors, so a frame 2x or more larger is first resized bilinearly to the nearest
    integer multiple of `size` at or below its own size (a shrink under 2x, where bilinear does
    not alias), then box-filtered by that integer factor; a smaller one takes INTER_AREA directly. On a 640x480 frame to 224 px this takes 0.5 ms instead
    of INTER_AREA's 1.9 ms at any factor, and differs from it by 0.2 grey levels on average.
    """
    h, w = rgb.shape[:2]
    if h <= size and w <= size:
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    kx, ky = max(1, w // size), max(1, h // size)
    if kx == ky == 1:  # under 2x both ways: INTER_AREA directly (cheap at this size, and what Edge Impulse's SDK does)
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    if (w, h) != (kx * size, ky * size):
        rgb = cv2.resize(rgb, (kx * size, ky * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def preprocess(rgb: np.ndarray, input_size: int, preprocessing: dict[str, Any] | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (1, C, S, S) tensor as the model was trained on (C: 3, or 1
    for a greyscale model).

    Args:
        rgb: the image.
        input_size: the model's square input side S.
        preprocessing: the card's `preprocessing` (channel order, scale, mean, std).
        out: a float32 (1, C, S, S) array to write into and return (a runner reuses one per
            frame instead of allocating); None allocates a new one.

    Raises:
        ValueError: when the image is not an (H, W, 3) array, or `out` has another shape.
    """
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image array of shape (H, W, 3), got {getattr(rgb, 'shape', type(rgb))}")
    p = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    if p["resize"] != "squash":
        raise ModelError(f"preprocessing.resize={p['resize']!r} is not supported; only 'squash'")
    channels = input_channels(p)
    shape = (1, channels, input_size, input_size)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
    small = resize_square(rgb, input_size)
    scale = float(p["scale"])
    mean = np.asarray(p["mean"], np.float64).reshape(-1)
    std = np.asarray(p["std"], np.float64).reshape(-1)
    if channels == 1:
        planes = [small.astype(np.float32) @ _LUMA]
    else:
        order = (2, 1, 0) if p.get("channel_order") == "BGR" else (0, 1, 2)
        planes = [small[:, :, i] for i in order]
    # (x * scale - mean) / std as one multiply and one subtract per plane, into `out`
    for c, plane in enumerate(planes):
        dst = out[0, c]
        np.multiply(plane, np.float32(scale / std[c]), out=dst, casting="unsafe")
        dst -= np.float32(mean[c] / std[c])
    return out


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
    # every (class, anchor) over its class's cut, class by class (the order NMS sees), in numpy
    cls_idx, anchor = np.nonzero(sc.T >= np.asarray(cut, np.float32)[:, None])
    xyxy = b[anchor].astype(np.float64)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    ok = (wh[:, 0] >= 1) & (wh[:, 1] >= 1)
    xyxy, wh, cls_idx, anchor = xyxy[ok], wh[ok], cls_idx[ok], anchor[ok]
    rects = _inside(np.stack([xyxy[:, 0] * sx, xyxy[:, 1] * sy, wh[:, 0] * sx, wh[:, 1] * sy], 1), image_size).tolist()
    confs = sc[anchor, cls_idx].astype(np.float64).tolist()
    return _nms(rects, confs, cls_idx.tolist(), labels, min(cut), nms_iou, cross_class_iou, max_detections)


def _inside(rects: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) x, y, w, h clipped to the frame, so that x + w <= width and y + h <= height hold exactly
    in floating point too (a box the head puts at the edge, scaled, can overshoot it by one ulp)."""
    out = np.array(rects, np.float64).reshape(-1, 4)
    for i, limit in ((0, float(image_size[0])), (1, float(image_size[1]))):
        end = np.clip(out[:, i] + out[:, i + 2], 0.0, limit)
        out[:, i] = np.clip(out[:, i], 0.0, limit)
        out[:, i + 2] = end - out[:, i]
        over = out[:, i] + out[:, i + 2] > limit
        while over.any():
            out[over, i + 2] = np.nextafter(out[over, i + 2], 0.0)
            over = out[:, i] + out[:, i + 2] > limit
    return out


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


def session_options(threads: int = 1) -> Any:
    """onnxruntime `SessionOptions` for a device: one model, one frame at a time, little memory.

    - `intra_op_num_threads=threads`, one inter-op thread, sequential execution: on a small
      device the runner leaves the other cores to edgeAgent, edgeHub and the HTTP server;
    - `enable_cpu_mem_arena=False`: the arena keeps the high-water mark of every allocation
      for the life of the process; without it each run frees what it took (a fixed 224 px
      input costs no measurable time here, see bench/results/runner.json);
    - `enable_mem_pattern=False`: no pre-planned block sized for the whole graph's activations;
    - with more than one thread, the pool does not spin between runs (it would keep cores busy
      between frames at 5 Hz).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if int(threads) > 1:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxDetector:
    """An exported detector: `detect(rgb)` -> boxes in the image's pixels.

    Args:
        model_dir_or_onnx_path: a folder with `model.onnx` + `model.json` (the network the
            card's `runtime` names when the folder holds it, e.g. `model.int8.onnx`), or an
            ONNX path with the card beside it.
        threads: onnxruntime intra-op threads (1 on a small device leaves a core for the rest).

    `variant` says which of the card's networks was loaded ("float", "int8"; None when the
    card records no sha256).

    Raises:
        ModelError: the files are missing, the ONNX will not load, the card has no labels,
            the card's input size or labels do not match the network, or the ONNX's sha256
            differs from the card's `onnx_sha256` and from every variant's `sha256`.
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
        self.variant = onnx_variant(self.onnx_path, self.card)
        opts = session_options(threads)
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
        # one input tensor reused for every frame (no 0.6 MB allocation per frame), guarded for
        # callers that share a detector between threads
        self._input = np.empty((1, input_channels(self.preprocessing), self.input_size, self.input_size), np.float32)
        self._input_lock = threading.Lock()

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
        with self._input_lock:
            x = preprocess(rgb, self.input_size, self.preprocessing, out=self._input)
            a, b = self.session.run(list(self.outputs), {self.input_name: x})
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
                f"version={self.version}, variant={self.variant})")
