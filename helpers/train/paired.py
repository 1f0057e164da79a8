"""How far a metric difference between two models on one held-out set can be trusted.

Two models evaluated on the same few dozen images differ by a few points when one or two boxes
flip. `delta_bounds` resamples the held-out images with replacement (a paired bootstrap: both
models' outcomes on an image travel together) and returns, per class and metric, the one-sided
upper bound of `candidate - production` at the given confidence. An upper bound below zero says
the candidate is worse on this kind of image, not just on these images; the evaluation gate
(`helpers.deploy.gate`) refuses a drop only when it is both beyond the tolerance and that sure.

The per-image outcomes use the evaluation's own rules (`helpers.train.evaluate`): matches at IoU
0.5 within a class, best score first; precision, recall and F1 from the summed counts (no truth
and no prediction: 1.0); AP50 as the 101-point interpolated area under the precision-recall
curve of the low-threshold predictions, as pycocotools computes it. No torch here.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from helpers.geometry import BBox
from helpers.train.evaluate import match_in_class

COUNT_METRICS = ("precision", "recall", "f1")
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class ImageOutcomes:
    """One model's outcomes on each held-out image, per class.

    Attributes:
        labels: the classes, in column order.
        counts: [images, classes, 3] true positives, false positives, misses at the card's threshold.
        scored: per image, per class: (scores, is-true-positive) of the low-threshold predictions.
        support: [images, classes] ground-truth boxes.
    """

    labels: list[str]
    counts: np.ndarray
    scored: list[list[tuple[np.ndarray, np.ndarray]]]
    support: np.ndarray


def _match(gt: Sequence[BBox], preds: Sequence[BBox], iou_thr: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores best first, is-true-positive, misses) of one class on one image."""
    order = sorted(preds, key=lambda b: -(b.value or 0.0))
    hits, misses = match_in_class(gt, order, iou_thr)
    scores = np.array([float(b.value if b.value is not None else 1.0) for b in order], dtype=np.float64)
    return scores, np.array(hits, dtype=bool), misses


def image_outcomes(gts: Sequence[Sequence[BBox]], preds: Sequence[Sequence[BBox]],
                   preds_low: Sequence[Sequence[BBox]], labels: Sequence[str], iou_thr: float = 0.5) -> ImageOutcomes:
    """Per-image outcomes of one model: `preds` at its card's threshold, `preds_low` for AP."""
    if not len(gts) == len(preds) == len(preds_low):
        raise ValueError(f"{len(gts)} ground-truth lists, {len(preds)} and {len(preds_low)} prediction lists")
    labels = list(labels)
    counts = np.zeros((len(gts), len(labels), 3), dtype=np.int64)
    support = np.zeros((len(gts), len(labels)), dtype=np.int64)
    scored: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for i, (gt, pr, low) in enumerate(zip(gts, preds, preds_low)):
        row = []
        for c, name in enumerate(labels):
            g = [b for b in gt if b.label == name]
            _, hit, miss = _match(g, [b for b in pr if b.label == name], iou_thr)
            counts[i, c] = (int(hit.sum()), int((~hit).sum()), miss)
            support[i, c] = len(g)
            scores, hit_low, _ = _match(g, [b for b in low if b.label == name], iou_thr)
            row.append((scores, hit_low))
        scored.append(row)
    return ImageOutcomes(labels, counts, scored, support)


def _count_metric(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, metric: str) -> np.ndarray:
    """Precision, recall or F1 from summed counts, vectorised over resamples (as ClassMetrics.finish)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        s = precision + recall
        f1 = np.where(s > 0, 2 * precision * recall / np.where(s > 0, s, 1.0), 0.0)
    value = {"precision": precision, "recall": recall, "f1": f1}[metric]
    return np.where(tp + fp + fn == 0, 1.0, value)


def average_precision(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> float:
    """101-point interpolated AP (COCO's rule) of predictions with their match flags."""
    if n_truth == 0:
        return float("nan")
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = tp / n_truth
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(at < envelope.size, envelope[np.minimum(at, envelope.size - 1)], 0.0).mean())


def _ap_per_resample(out: ImageOutcomes, c: int, picks: np.ndarray) -> np.ndarray:
    values = np.empty(len(picks))
    for b, pick in enumerate(picks):
        parts = [out.scored[i][c] for i in pick]
        scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        hits = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=bool)
        values[b] = average_precision(scores, hits, int(out.support[pick, c].sum()))
    return values


def delta_bounds(production: ImageOutcomes, candidate: ImageOutcomes, labels: Sequence[str],
                 metrics: Sequence[str], confidence: float = 0.9, resamples: int = 1000,
                 seed: int = 0) -> dict[tuple[str, str], float]:
    """{(class or "overall", metric): the upper `confidence` bound of candidate - production}.

    Per class for `labels` (the production model's); "overall" sums the counts over every class of
    the outcomes, as the evaluation's micro average sums every class it saw. AP50 is
    bounded per class only (the reports have no overall AP50). Both outcomes must be computed with
    the same classes (`image_outcomes(..., labels)`) on the same images. Resamples where a class has no
    ground truth are left out of that class's AP bound.

    Raises:
        ValueError: the two outcomes are of different image counts, or `confidence` is not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.9), got {confidence}")
    n = production.counts.shape[0]
    if candidate.counts.shape[0] != n or candidate.labels != production.labels:
        raise ValueError(f"outcomes on {n} and {candidate.counts.shape[0]} images, classes {production.labels} and "
                         f"{candidate.labels}: compute both with image_outcomes on the same held-out set and classes")
    missing = [x for x in labels if x not in production.labels]
    if missing:
        raise ValueError(f"no outcomes for {missing}: pass those classes to image_outcomes")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.repeat(np.arange(resamples), n), picks.ravel()), 1.0)

    def summed(out: ImageOutcomes, columns: list[int]) -> np.ndarray:  # [resamples, 3]
        return weights @ out.counts[:, columns, :].sum(axis=1)

    bounds: dict[tuple[str, str], float] = {}
    for name in list(labels) + ["overall"]:
        cols = list(range(len(production.labels))) if name == "overall" else [production.labels.index(name)]
        p, c = summed(production, cols), summed(candidate, cols)
        for metric in metrics:
            if metric in COUNT_METRICS:
                delta = _count_metric(*c.T, metric) - _count_metric(*p.T, metric)
            elif metric == "ap50" and name != "overall":
                delta = _ap_per_resample(candidate, cols[0], picks) - _ap_per_resample(production, cols[0], picks)
                delta = delta[~np.isnan(delta)]
                if delta.size == 0:
                    continue
            else:
                continue
            bounds[(name, metric)] = float(np.quantile(delta, confidence))
    return bounds
