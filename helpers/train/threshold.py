"""The score threshold a model card carries, chosen on validation (`best_threshold`)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from helpers.geometry import BBox
from helpers.train.evaluate import detection_counts

THRESHOLD_RULES = ("plateau", "plateau-per-class", "max")
MIN_CLASS_OBJECTS = 20  # a class gets its own threshold only when validation holds this many of its objects


def plateau_middle(f1s: Sequence[float], tolerance: float) -> tuple[int, int, int]:
    """(chosen, first, last) indices: the middle of the F1 plateau around the best F1.

    The plateau is the run of neighbouring thresholds whose F1 is within `tolerance` of the
    best. On a small validation split F1 is flat over a wide range of thresholds and the
    lowest (or highest) of a tie sits at the edge of a cliff that the next images fall off;
    the plateau's middle is the choice furthest from both edges.
    """
    if not f1s:
        raise ValueError("no thresholds to choose from")
    k = max(range(len(f1s)), key=lambda i: (f1s[i], -i))
    floor = f1s[k] - tolerance
    lo = k
    while lo > 0 and f1s[lo - 1] >= floor:
        lo -= 1
    hi = k
    while hi < len(f1s) - 1 and f1s[hi + 1] >= floor:
        hi += 1
    return (lo + hi) // 2, lo, hi


def _metrics(per: dict[str, Any], overall: Any) -> dict[str, Any]:
    return {"f1": overall.f1, "precision": overall.precision, "recall": overall.recall,
            "per_class": {n: {"f1": m.f1, "precision": m.precision, "recall": m.recall} for n, m in per.items()}}


def best_threshold(gts: Sequence[Sequence[BBox]], preds: Sequence[Sequence[BBox]], labels: Sequence[str],
                   thresholds: Sequence[float], rule: str = "plateau") -> tuple[float, float, dict[str, Any]]:
    """(F1, threshold, metrics) of the score threshold chosen on validation at IoU 0.5.

    Rules:
        "plateau": the middle of the overall F1 plateau (thresholds within 1/N of the best F1,
            N = validation objects: about what one object more or less changes).
        "plateau-per-class": as "plateau", and each class with at least MIN_CLASS_OBJECTS
            validation objects gets the middle of its own F1 plateau (`class_thresholds`).
        "max": the lowest threshold with the best F1 (the rule before; kept for comparison).

    F1 and metrics are those at the chosen threshold(s); `metrics["threshold_choice"]` records
    how it was chosen (rule, images, objects per class, plateau, per-class thresholds).
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {', '.join(THRESHOLD_RULES)}, got {rule!r}")
    thresholds = sorted(float(t) for t in thresholds)
    curve = [detection_counts(gts, [[b for b in p if (b.value or 0) >= thr] for p in preds], labels)
             for thr in thresholds]
    f1s = [overall.f1 for _, overall in curve]
    objects = {n: sum(1 for g in gts for b in g if b.label == n) for n in labels}
    n_obj = sum(objects.values())
    if rule == "max":
        k = max(range(len(f1s)), key=lambda i: (f1s[i], -i))
        lo = hi = k
        tol = 0.0
    else:
        tol = 1.0 / max(1, n_obj)
        k, lo, hi = plateau_middle(f1s, tol)
    thr = thresholds[k]
    choice: dict[str, Any] = {"rule": rule, "images": len(gts), "objects": objects, "tolerance": round(tol, 4),
                              "plateau": [thresholds[lo], thresholds[hi]], "best_f1": round(max(f1s), 4),
                              "grid": [thresholds[0], thresholds[-1]]}
    per, overall = curve[k]
    if rule == "plateau-per-class":
        class_thr: dict[str, float] = {}
        for n in labels:
            if objects[n] < MIN_CLASS_OBJECTS:
                continue
            kc, lc, hc = plateau_middle([c[0][n].f1 for c in curve], 1.0 / objects[n])
            class_thr[n] = thresholds[kc]
            choice.setdefault("per_class", {})[n] = {"threshold": thresholds[kc], "objects": objects[n],
                                                     "plateau": [thresholds[lc], thresholds[hc]]}
        choice["class_thresholds"] = class_thr
        if class_thr:
            cut = {n: class_thr.get(n, thr) for n in labels}
            per, overall = detection_counts(
                gts, [[b for b in p if (b.value or 0) >= cut.get(b.label, thr)] for p in preds], labels)
    metrics = _metrics(per, overall)
    metrics["threshold_choice"] = choice
    return overall.f1, thr, metrics
