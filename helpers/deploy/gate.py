"""The evaluation gate: a candidate model replaces production only if it is not worse.

Both models are evaluated through `helpers.train.evaluate` on ONNX (what the devices run) on
the same held-out set, which must include the production model's classes. For every class the
production model knows, and overall, each gated metric of the candidate must be at least the
production value minus `tolerance`, unless the drop is within the noise of the held-out set: the
images are resampled with replacement, both models' outcomes on an image together
(`helpers.train.paired`), and a drop regresses only if the `confidence` upper bound of
candidate - production is also below zero (on thirty images two boxes flipping is 7 points and
noise; thirty boxes lost is not). A regression refuses the promotion with a `GateRefused`
(a `RolloutError`) holding the table of what regressed, unless `force=True` says, explicitly,
to promote anyway. On success the candidate becomes `production` and the old one `retired`.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers.errors import DatasetError, RolloutError
from helpers.geometry import BBox
from helpers.widgets import html_table

DEFAULT_METRICS = ("precision", "recall", "f1", "ap50")
#: Allowed drop per metric. A held-out set of a few dozen images moves a metric by a few points
#: when one box flips, so the default tolerates that much noise; pass a smaller one for large sets.
DEFAULT_TOLERANCE = 0.05
#: Confidence of the resampled upper bound a drop must also clear (see the module doc).
DEFAULT_CONFIDENCE = 0.9


@dataclass
class GateRow:
    """One class x metric comparison (class `overall` is the micro average)."""

    label: str
    metric: str
    production: float | None
    candidate: float | None
    delta: float | None
    regressed: bool
    upper: float | None = None  # upper bound of delta from resampling the held-out images (None: not resampled)


class GateRefused(RolloutError):
    """The candidate regressed; `rows` are the regressions, `result` the whole comparison."""

    def __init__(self, message: str, rows: list[GateRow], result: GateResult):
        super().__init__(message)
        self.rows = rows
        self.result = result


@dataclass
class GateResult:
    """The comparison and what was done.

    Attributes:
        candidate: candidate model version.
        production: production model version compared against (None: there was none).
        rows: every comparison.
        tolerance: allowed drop per metric.
        passed: no regression.
        confidence: of the resampled upper bounds (None: drops beyond tolerance regressed as measured).
        forced: promoted despite regressions (`force=True`).
        promoted: the studio stages were changed.
        reports: version -> the full `EvalReport.to_dict()`.
    """

    candidate: int
    production: int | None
    rows: list[GateRow]
    tolerance: float
    passed: bool
    confidence: float | None = None
    forced: bool = False
    promoted: bool = False
    reports: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def regressions(self) -> list[GateRow]:
        return [r for r in self.rows if r.regressed]

    def table(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]

    def html(self) -> str:
        """The comparison as an HTML table, regressions in red."""
        styles = [{"delta": "color:#c00;font-weight:bold"} if r.regressed else {} for r in self.rows]
        verdict = "passed" if self.passed else ("FORCED despite regressions" if self.forced else "refused")
        bound = "" if self.confidence is None else f", upper: the delta's {self.confidence:.0%} bound"
        return html_table(self.table(), styles=styles,
                          caption=f"gate: v{self.candidate} vs v{self.production} (tolerance {self.tolerance}{bound}): {verdict}")

    def summary(self) -> str:
        verdict = "passed" if self.passed else ("forced" if self.forced else "refused")
        lines = [f"gate v{self.candidate} vs v{self.production}: {verdict}, promoted={self.promoted}"]
        lines += [f"  regressed {r.label} {r.metric}: {r.production:.3f} -> {r.candidate:.3f}" for r in self.regressions]
        lines += [f"  {r.label} {r.metric}: {r.production:.3f} -> {r.candidate:.3f}, beyond tolerance but within the "
                  f"held-out set's noise (upper bound {r.upper:+.3f})" for r in self.rows
                  if not r.regressed and r.delta is not None and r.delta < -self.tolerance and r.upper is not None]
        return "\n".join(lines)


def regression_text(rows: Sequence[GateRow]) -> str:
    """A fixed-width table of comparisons for error messages and logs."""
    lines = [f"{'class':<10} {'metric':<10} {'production':>10} {'candidate':>10} {'delta':>8} {'upper':>8}"]
    for r in rows:
        p = "-" if r.production is None else f"{r.production:.3f}"
        c = "-" if r.candidate is None else f"{r.candidate:.3f}"
        d = "-" if r.delta is None else f"{r.delta:+.3f}"
        u = "-" if r.upper is None else f"{r.upper:+.3f}"
        lines.append(f"{r.label:<10} {r.metric:<10} {p:>10} {c:>10} {d:>8} {u:>8}")
    return "\n".join(lines)


def compare_reports(production: Any, candidate: Any, *, tolerance: float = DEFAULT_TOLERANCE,
                    metrics: Sequence[str] = DEFAULT_METRICS,
                    upper: dict[tuple[str, str], float] | None = None) -> list[GateRow]:
    """Compare two `EvalReport`s on the production model's classes and overall.

    `upper` ({(class, metric): bound}, from `helpers.train.paired.delta_bounds`) makes a drop beyond
    `tolerance` regress only where its bound is below zero too; without one every such drop regresses.

    Raises:
        DatasetError: the held-out set has no box of a production class (nothing to compare).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    rows: list[GateRow] = []
    for label in list(production.labels) + ["overall"]:
        if label == "overall":
            pm, cm = production.overall, candidate.overall
        else:
            pm = production.per_class.get(label)
            cm = candidate.per_class.get(label)
            if pm is None or pm.support == 0:
                raise DatasetError(
                    f"the held-out set has no '{label}' box, so the gate cannot check the candidate still finds "
                    f"{label}s: include the production model's classes in the test split (studio.rebalance())"
                )
        for metric in metrics:
            pv = getattr(pm, metric, None) if pm is not None else None
            cv = getattr(cm, metric, None) if cm is not None else 0.0
            if pv is None:
                continue  # not measured for the production model (e.g. no AP): nothing to hold to
            cv = 0.0 if cv is None else float(cv)
            delta = cv - float(pv)
            bound = None if upper is None else upper.get((label, metric))
            regressed = delta < -tolerance and (bound is None or bound < 0)
            rows.append(GateRow(label, metric, float(pv), cv, delta, regressed, bound))
    return rows


def heldout_items(studio: Any, split: str = "test") -> list[tuple[Any, list[BBox]]]:
    """(RGB image, boxes) of the studio snapshot's `split`.

    Raises:
        DatasetError: the split is empty.
    """
    from helpers.labeling.samples import decode_image

    snap = studio.snapshot()
    items = snap.split(split)
    if not items:
        raise DatasetError(
            f"the studio's snapshot has no '{split}' samples: move some labeled samples to testing "
            "(studio.rebalance(0.2)) before gating a model"
        )
    return [(decode_image(studio.get_image(i.sample_id)), list(i.boxes)) for i in items]


def _evaluate(studio: Any, version: int, items: Sequence[tuple[Any, list[BBox]]], workdir: Path,
              latency_runs: int) -> tuple[Any, tuple[list[list[BBox]], list[list[BBox]]]]:
    """(the `EvalReport`, (per-image detections at the card's thresholds, at the AP threshold))."""
    from helpers.inference.loader import load_detector
    from helpers.train.evaluate import MAP_SCORE_THRESHOLD, TwoPass, evaluate_detector

    dest = workdir / f"v{int(version)}"
    dest.mkdir(parents=True, exist_ok=True)
    studio.download_model(int(version), dest)
    detector = load_detector(str(dest), threads=1)
    try:
        report = evaluate_detector(detector, items, allow_unknown_labels=True, latency_runs=latency_runs)
        two = detector if hasattr(detector, "decode_raw") else TwoPass(detector)
        preds, preds_low = [], []
        for rgb, _ in items:
            raw, size = two.raw(rgb), (rgb.shape[1], rgb.shape[0])
            preds.append(two.decode_raw(raw, size, None))
            preds_low.append(two.decode_raw(raw, size, MAP_SCORE_THRESHOLD))
        return report, (preds, preds_low)
    finally:
        if hasattr(detector, "close"):
            detector.close()


def _bounds(items: Sequence[tuple[Any, list[BBox]]], production: Any, candidate: Any,
            prod_dets: tuple[list[list[BBox]], list[list[BBox]]], cand_dets: tuple[list[list[BBox]], list[list[BBox]]],
            metrics: Sequence[str], confidence: float) -> dict[tuple[str, str], float]:
    from helpers.train.paired import delta_bounds, image_outcomes

    gts = [list(boxes) for _, boxes in items]
    names = list(dict.fromkeys(list(production.labels) + list(candidate.labels)
                               + sorted({b.label for g in gts for b in g})))
    names += sorted({b.label for dets in (prod_dets, cand_dets) for p in dets[0] for b in p} - set(names))
    return delta_bounds(image_outcomes(gts, *prod_dets, names), image_outcomes(gts, *cand_dets, names),
                        list(production.labels), metrics, confidence=confidence)


def evaluation_gate(
    studio: Any,
    candidate: int,
    *,
    production: int | None = None,
    items: Sequence[tuple[Any, list[BBox]]] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    metrics: Sequence[str] = DEFAULT_METRICS,
    force: bool = False,
    promote: bool = True,
    workdir: str | Path | None = None,
    latency_runs: int = 3,
    confidence: float | None = DEFAULT_CONFIDENCE,
) -> GateResult:
    """Evaluate `candidate` against production on the same held-out set; promote or refuse.

    Args:
        studio: the studio holding both model versions.
        candidate: the candidate's version.
        production: the version to beat (default: the studio's newest `production` model).
        items: held-out (RGB, boxes) pairs (default: the studio snapshot's test split).
        tolerance: allowed drop of each metric (absolute, e.g. 0.05 = 5 points).
        metrics: metrics compared per class and overall (`precision`, `recall`, `f1`, `ap50`, `ap`).
        force: promote even if something regressed (recorded in the result).
        promote: change the studio stages (candidate -> production, old -> retired).
        workdir: where models are downloaded (default: a temporary folder).
        latency_runs: latency measurement runs per model (kept small: the gate is about accuracy).
        confidence: a drop beyond `tolerance` regresses only if the upper bound of the difference at
            this confidence, from resampling the held-out images, is below zero too (None: every
            drop beyond `tolerance` regresses, however few boxes it is).

    Returns:
        The `GateResult`.

    Raises:
        GateRefused: something regressed beyond `tolerance` and `force` is False.
        DatasetError: no held-out data, or it lacks a production class.
    """
    candidate = int(candidate)
    if production is None:
        prods = [m for m in studio.models() if m.stage == "production" and int(m.version) != candidate]
        production = max(prods, key=lambda m: m.version).version if prods else None
    if production is not None and int(production) == candidate:
        raise ValueError(f"candidate and production are the same version ({candidate})")
    items = list(items) if items is not None else heldout_items(studio)
    if not items:
        raise DatasetError("the held-out set is empty: give items=... or label testing samples")
    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        cand_report, cand_dets = _evaluate(studio, candidate, items, base, latency_runs)
        reports = {candidate: cand_report.to_dict()}
        if production is None:
            rows: list[GateRow] = []
        else:
            prod_report, prod_dets = _evaluate(studio, int(production), items, base, latency_runs)
            reports[int(production)] = prod_report.to_dict()
            bounds = None
            if confidence is not None:
                bounds = _bounds(items, prod_report, cand_report, prod_dets, cand_dets, metrics, confidence)
            rows = compare_reports(prod_report, cand_report, tolerance=tolerance, metrics=metrics, upper=bounds)
    result = GateResult(candidate, None if production is None else int(production), rows, float(tolerance),
                        passed=not any(r.regressed for r in rows), confidence=confidence, reports=reports)
    if not result.passed and not force:
        raise GateRefused(
            f"model v{candidate} regressed against production v{production} (tolerance {tolerance}"
            + ("" if confidence is None else f", and the {confidence:.0%} upper bound of the drop below zero") + "):\n"
            + regression_text(result.regressions)
            + "\nimprove the candidate (more data for those classes, longer training) or promote it anyway "
            "with evaluation_gate(..., force=True)",
            result.regressions, result,
        )
    result.forced = not result.passed
    if promote:
        studio.set_model_stage(candidate, "production")
        if production is not None:
            studio.set_model_stage(int(production), "retired")
        result.promoted = True
    return result
