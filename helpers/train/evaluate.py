"""Evaluation of an exported detector, always through `OnnxDetector` (what devices run).

Metrics:
  - precision / recall / F1 at IoU 0.5, per class and overall (micro), at the card's
    score threshold: predictions matched to ground truth of the same class, best score first;
  - mAP@0.5 and mAP@[.5:.95] with pycocotools on low-threshold predictions;
  - a confusion matrix with a `background` row and column: a ground-truth box matched
    (IoU >= 0.5, any class) to a prediction counts in [true class][predicted class], so
    "banana called apple" is one cell; unmatched truth counts as [class][background] (a miss),
    unmatched predictions as [background][class] (a false alarm);
  - onnxruntime latency at the detector's thread count (median and p95, ms).

This module does not import torch: it runs wherever the ONNX runs.
"""
from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from helpers.errors import DatasetError, ModelError
from helpers.geometry import BBox, iou
from helpers.inference.loader import load_detector
from helpers.inference.onnx import OnnxDetector

BACKGROUND = "background"
MAP_SCORE_THRESHOLD = 0.01  # low, so pycocotools sees the whole precision-recall curve


@dataclass
class ClassMetrics:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    ap50: float | None = None
    ap: float | None = None
    support: int = 0  # ground-truth boxes

    def finish(self) -> ClassMetrics:
        self.precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        self.recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        s = self.precision + self.recall
        self.f1 = 2 * self.precision * self.recall / s if s else 0.0
        # No truth and no predictions: nothing was wrong, so a perfect score, not zero.
        if self.tp + self.fp + self.fn == 0:
            self.precision = self.recall = self.f1 = 1.0
        return self


@dataclass
class EvalReport:
    """Everything `evaluate_*` measures; `to_dict()` is JSON-serialisable."""

    labels: list[str]
    images: int
    iou_threshold: float
    score_threshold: float
    per_class: dict[str, ClassMetrics]
    overall: ClassMetrics
    map50: float | None
    map: float | None
    confusion: dict[str, Any]
    latency_ms: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    class_thresholds: dict[str, float] = field(default_factory=dict)  # the card's, where they applied

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def called_as(self, truth: str, predicted: str) -> int:
        """Confusion-matrix cell: ground-truth `truth` boxes reported as `predicted`."""
        names = self.confusion["names"]
        if truth not in names or predicted not in names:
            return 0
        return int(self.confusion["matrix"][names.index(truth)][names.index(predicted)])

    def rate(self, truth: str, predicted: str) -> float:
        """Fraction of ground-truth `truth` boxes reported as `predicted` (0 when none)."""
        support = sum(self.confusion["matrix"][self.confusion["names"].index(truth)]) if truth in self.confusion["names"] else 0
        return self.called_as(truth, predicted) / support if support else 0.0


def _greedy_match(gt: Sequence[BBox], preds: Sequence[BBox], iou_thr: float) -> list[tuple[int, int]]:
    """Pairs (gt index, pred index), highest IoU first, each box used once."""
    pairs = []
    for i, g in enumerate(gt):
        for j, p in enumerate(preds):
            v = iou(g, p)
            if v >= iou_thr:
                pairs.append((v, i, j))
    pairs.sort(key=lambda t: -t[0])
    used_g, used_p, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_g and j not in used_p:
            used_g.add(i)
            used_p.add(j)
            out.append((i, j))
    return out


def match_in_class(gt: Sequence[BBox], preds: Sequence[BBox], iou_thr: float = 0.5) -> tuple[list[bool], int]:
    """(for each prediction, in the order given (best score first), whether it matched; truth boxes
    left unmatched). Each prediction takes the unmatched truth box of highest IoU >= `iou_thr`."""
    taken = [False] * len(gt)
    hits = []
    for pb in preds:
        best, best_iou = -1, iou_thr
        for k, gb in enumerate(gt):
            if not taken[k]:
                v = iou(gb, pb)
                if v >= best_iou:
                    best, best_iou = k, v
        if best >= 0:
            taken[best] = True
        hits.append(best >= 0)
    return hits, taken.count(False)


def detection_counts(gts: Sequence[Sequence[BBox]], preds: Sequence[Sequence[BBox]], labels: Sequence[str],
                     iou_thr: float = 0.5) -> tuple[dict[str, ClassMetrics], ClassMetrics]:
    """Per-class and overall (micro) precision/recall/F1 at `iou_thr`.

    Within a class, predictions are matched best score first to the unmatched ground truth of
    highest IoU (the VOC/COCO rule), so a duplicate box is a false positive.
    """
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth lists but {len(preds)} prediction lists")
    names = list(dict.fromkeys(list(labels) + [b.label for g in gts for b in g] + [b.label for p in preds for b in p]))
    per = {n: ClassMetrics() for n in names}
    for gt, pr in zip(gts, preds):
        for name in names:
            g = [b for b in gt if b.label == name]
            hits, misses = match_in_class(g, sorted([b for b in pr if b.label == name], key=lambda b: -(b.value or 0.0)),
                                          iou_thr)
            per[name].tp += sum(hits)
            per[name].fp += len(hits) - sum(hits)
            per[name].fn += misses
            per[name].support += len(g)
    overall = ClassMetrics(tp=sum(m.tp for m in per.values()), fp=sum(m.fp for m in per.values()),
                           fn=sum(m.fn for m in per.values()), support=sum(m.support for m in per.values()))
    return {n: m.finish() for n, m in per.items()}, overall.finish()


def confusion_matrix(gts: Sequence[Sequence[BBox]], preds: Sequence[Sequence[BBox]], labels: Sequence[str],
                     iou_thr: float = 0.5) -> dict[str, Any]:
    """Rows: true class (+ background), columns: predicted class (+ background).

    Matching ignores labels (highest IoU first), so a banana boxed as an apple shows up as
    [banana][apple] instead of a miss plus a false alarm.
    """
    names = list(dict.fromkeys(list(labels) + [b.label for g in gts for b in g] + [b.label for p in preds for b in p]))
    names.append(BACKGROUND)
    idx = {n: i for i, n in enumerate(names)}
    bg = idx[BACKGROUND]
    m = np.zeros((len(names), len(names)), np.int64)
    for gt, pr in zip(gts, preds):
        pairs = _greedy_match(gt, pr, iou_thr)
        mg = {i for i, _ in pairs}
        mp = {j for _, j in pairs}
        for i, j in pairs:
            m[idx[gt[i].label], idx[pr[j].label]] += 1
        for i, g in enumerate(gt):
            if i not in mg:
                m[idx[g.label], bg] += 1
        for j, p in enumerate(pr):
            if j not in mp:
                m[bg, idx[p.label]] += 1
    return {"names": names, "matrix": m.tolist(), "rows": "truth", "columns": "predicted"}


def coco_map(gts: Sequence[Sequence[BBox]], preds: Sequence[Sequence[BBox]], labels: Sequence[str],
             image_sizes: Sequence[tuple[int, int]]) -> tuple[float | None, float | None, dict[str, tuple[float | None, float | None]]]:
    """(mAP@0.5, mAP@[.5:.95], {class: (AP50, AP)}) with pycocotools.

    Classes without ground truth get None (COCO's -1), and are left out of the means.
    """
    cat = {n: i + 1 for i, n in enumerate(labels)}
    images, anns, dets = [], [], []
    for k, (gt, pr, (w, h)) in enumerate(zip(gts, preds, image_sizes)):
        images.append({"id": k + 1, "width": int(w), "height": int(h)})
        for b in gt:
            if b.label in cat:
                anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": cat[b.label],
                             "bbox": [b.x, b.y, b.width, b.height], "area": b.width * b.height, "iscrowd": 0})
        for b in pr:
            if b.label in cat:
                dets.append({"image_id": k + 1, "category_id": cat[b.label], "bbox": [b.x, b.y, b.width, b.height],
                             "score": float(b.value if b.value is not None else 1.0)})
    per: dict[str, tuple[float | None, float | None]] = {n: (None, None) for n in labels}
    if not anns:
        return None, None, per
    if not dets:
        per = {n: ((0.0, 0.0) if any(a["category_id"] == cat[n] for a in anns) else (None, None)) for n in labels}
        return 0.0, 0.0, per
    # pycocotools prints progress to stdout; keep it out of the JSON the CLI prints.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns,
                           "categories": [{"id": i, "name": n} for n, i in cat.items()]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    aps50, aps = [], []
    for n, c in cat.items():
        k = ev.params.catIds.index(c)
        p_all = prec[:, :, k, 0, -1]
        p50 = prec[0, :, k, 0, -1]
        if (p50 > -1).any():
            ap50 = float(p50[p50 > -1].mean())
            ap = float(np.mean([row[row > -1].mean() if (row > -1).any() else 0.0 for row in p_all]))
            per[n] = (ap50, ap)
            aps50.append(ap50)
            aps.append(ap)
    return (float(np.mean(aps50)) if aps50 else None, float(np.mean(aps)) if aps else None, per)


def measure_latency(detector: OnnxDetector, images: Sequence[np.ndarray], runs: int = 50, warmup: int = 5) -> dict[str, float]:
    """Median and p95 wall time (ms) of `detector.detect` (preprocess + onnxruntime + decode)."""
    if not images or runs <= 0:
        return {}
    for k in range(warmup):
        detector.detect(images[k % len(images)])
    times = []
    for k in range(runs):
        t0 = time.perf_counter()
        detector.detect(images[k % len(images)])
        times.append((time.perf_counter() - t0) * 1000)
    return {"median": float(np.median(times)), "p95": float(np.percentile(times, 95)), "runs": runs,
            "threads": int(detector.session.get_session_options().intra_op_num_threads) if hasattr(detector, "session") else 1}


def check_labels(model_labels: Sequence[str], dataset_labels: Sequence[str], allow_unknown: bool = False) -> None:
    """Refuse to evaluate a model on a dataset of other classes.

    A dataset with a subset of the model's classes is fine (a test set without bananas still
    tests the model). Dataset classes the model does not know are refused unless
    `allow_unknown` (the story's "what does the apple model say about bananas" evaluation).

    Raises:
        ModelError: (without `allow_unknown`) dataset classes the model does not know, or no
            class in common.
    """
    ml, dl = set(model_labels), set(dataset_labels)
    unknown = dl - ml
    if allow_unknown or (ml & dl and not unknown):
        return
    raise ModelError(
        f"model labels {sorted(ml)} do not match the dataset's {sorted(dl)}"
        + (f" (the model does not know {sorted(unknown)})" if unknown else "")
        + ": evaluate on a dataset with the model's classes, or pass allow_unknown_labels=True "
        "(CLI: --allow-unknown-labels) to count the extra classes in the confusion matrix"
    )


class TwoPass:
    """A backend without separable head outputs (`.eim`, TFLite) behind `raw`/`decode_raw`:
    `raw` keeps the image and `decode_raw` runs `detect` at the asked threshold, so each
    threshold costs one inference (ONNX decodes one inference twice)."""

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


def evaluate_detector(detector: OnnxDetector, items: Iterable[tuple[np.ndarray, Sequence[BBox]]],
                      iou_threshold: float = 0.5, score_threshold: float | None = None,
                      latency_runs: int = 50, progress: bool = False,
                      allow_unknown_labels: bool = False) -> EvalReport:
    """Run `detector` on (rgb, boxes) pairs and measure everything listed in the module doc.

    Raises:
        DatasetError: no images.
        ModelError: dataset classes differ from the model's (unless `allow_unknown_labels`).
    """
    items = list(items)
    if not items:
        raise DatasetError("nothing to evaluate: the dataset has no images (check the path and --format)")
    ds_labels = sorted({b.label for _, boxes in items for b in boxes})
    if ds_labels:
        check_labels(detector.labels, ds_labels, allow_unknown=allow_unknown_labels)
    thr = detector.score_threshold if score_threshold is None else float(score_threshold)
    if not hasattr(detector, "decode_raw"):  # an .eim or TFLite model: detect once per threshold
        detector = TwoPass(detector)
    gts, preds, preds_low, sizes = [], [], [], []
    it = items
    if progress:
        it = tqdm(items, desc="evaluate", unit="img")
    for rgb, boxes in it:
        raw = detector.raw(rgb)  # one inference, decoded at two thresholds
        size = (rgb.shape[1], rgb.shape[0])
        # None: the card's thresholds (its class_thresholds too); a given threshold overrides them.
        preds.append(detector.decode_raw(raw, size, score_threshold))
        preds_low.append(detector.decode_raw(raw, size, MAP_SCORE_THRESHOLD))
        gts.append(list(boxes))
        sizes.append(size)
    names = list(dict.fromkeys(list(detector.labels) + ds_labels))
    per, overall = detection_counts(gts, preds, names, iou_threshold)
    map50, map_, per_ap = coco_map(gts, preds_low, detector.labels, sizes)
    for n, (ap50, ap) in per_ap.items():
        per[n].ap50, per[n].ap = ap50, ap
    latency = measure_latency(detector, [rgb for rgb, _ in items[:8]], runs=latency_runs)
    model = {k: detector.card.get(k) for k in ("arch", "version", "input_size", "onnx_sha256", "parent_version")}
    per_class_thr = dict(getattr(detector, "class_thresholds", {})) if score_threshold is None else {}
    return EvalReport(labels=list(detector.labels), images=len(items), iou_threshold=iou_threshold,
                      score_threshold=thr, per_class=per, overall=overall, map50=map50, map=map_,
                      confusion=confusion_matrix(gts, preds, names, iou_threshold), latency_ms=latency,
                      model=model, class_thresholds=per_class_thr)


def evaluate_model(model_dir: str, items: Iterable[tuple[np.ndarray, Sequence[BBox]]], threads: int = 1,
                   **kwargs: Any) -> EvalReport:
    """`evaluate_detector` on the model in `model_dir` (model.json + model.onnx, .eim or .tflite,
    by the card's `format`)."""
    detector = load_detector(model_dir, threads=threads)
    try:
        return evaluate_detector(detector, items, **kwargs)
    finally:
        if hasattr(detector, "close"):
            detector.close()
