"""What a pipeline run found: per-notebook status, checks and errors, summary.json's shape, the final table
(with the story's figures: apple F1, apple/banana F1, bananas called apples before and after)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from helpers.config import mask


@dataclass
class NotebookRun:
    notebook: str
    status: str  # ok | failed | skipped
    duration_s: float = 0.0
    output: str | None = None
    error: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    cell_timeout_s: int | None = None

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c.get("ok")]


@dataclass
class Summary:
    profile: str
    backend: str
    workspace: str
    seed: int = 0
    studio_backend: str = ""
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    notebooks: list[NotebookRun] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    total_s: float = 0.0
    load_avg: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.notebooks if r.status != "skipped") and bool(self.notebooks)

    @property
    def checks(self) -> list[dict[str, Any]]:
        return [c for r in self.notebooks for c in r.checks]

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c.get("ok")]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["checks"] = self.checks
        d["failed_checks"] = self.failed_checks
        return d


def failure(exc: BaseException) -> dict[str, Any]:
    """Where a papermill run failed: the cell, the error name and value (secrets masked)."""
    info: dict[str, Any] = {"type": type(exc).__name__}
    for attr in ("cell_index", "exec_count", "ename", "evalue"):
        if hasattr(exc, attr):
            info[attr] = getattr(exc, attr)
    info["message"] = mask(str(exc))[-2000:]
    if "evalue" in info:
        info["evalue"] = mask(str(info["evalue"]))
    return info


def timeout_failure(exc: BaseException, nb_name: str, cell_index: int, step: str, limit: int) -> dict[str, Any]:
    """A cell that ran past its limit (or a kernel that died): where, and how to give it more time."""
    info = failure(exc)
    info.update(cell_index=cell_index, ename=type(exc).__name__, evalue=(
        f"{nb_name}, step '{step or 'start'}' (cell {cell_index}) ran longer than its {limit} s limit. If the "
        f"machine is just slow, give it more time: --cell-timeout {limit * 2} (the limit of training cells "
        f"also grows with epochs x images); if it hangs, its output in the executed notebook shows where."))
    return info


def _f1(f1: Any, label: str) -> str:
    value = f1.get(label) if isinstance(f1, dict) else None
    return f"{label} F1 {value:.2f}" if isinstance(value, (int, float)) else f"{label} F1 ?"


def _share(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "?"


def story_lines(results: dict[str, Any]) -> list[str]:
    """What the run showed, from the notebooks' recorded results: the labels, the apple model,
    the two-class model, and how many bananas each model called apples. Steps that did not
    record (not run, failed early) are left out."""
    lines = []
    labels = results.get("03_label_review", {})
    grade = labels.get("label_grade") or {}
    if labels.get("labeled") is not None or grade:
        line = f"  labels (03):          {labels.get('labeled', grade.get('frames', '?'))} images labeled"
        if grade:
            line += f", {_share(grade.get('share_right'))} of the boxes right against the cameras' truth"
        lines.append(line)
    apple = results.get("04_train", {})
    if apple.get("f1"):
        lines.append(f"  apple model (04):     v{apple.get('model_version', '?')}, {_f1(apple['f1'], 'apple')}")
    two = results.get("06_retrain_banana", {})
    if two.get("f1"):
        gate = {True: ", gate passed", False: ", gate FAILED"}.get(two.get("gate_passed"), "")
        lines.append(f"  apple + banana (06):  v{two.get('model_version', '?')}, {_f1(two['f1'], 'apple')}, "
                     f"{_f1(two['f1'], 'banana')}{gate}")
    if "heldout_banana_called_apple_before" in two:
        line = (f"  bananas called apples: {_share(two['heldout_banana_called_apple_before'])} before, "
                f"{_share(two.get('heldout_banana_called_apple_after'))} after "
                f"(the {two.get('heldout_banana_images', '?')} held-out banana images)")
        if "banana_called_apple_before" in two:
            line += (f"; on the fleet {_share(two['banana_called_apple_before'])} -> "
                     f"{_share(two.get('banana_called_apple_after'))}")
        lines.append(line)
    return ["the story:", *lines] if lines else []


def format_table(summary: Summary) -> str:
    rows = [f"{'notebook':22} {'status':8} {'seconds':>8}"]
    for r in summary.notebooks:
        where = ""
        if r.error:
            where = f"  (cell {r.error.get('cell_index')}: {r.error.get('ename')})"
        rows.append(f"{r.notebook:22} {r.status:8} {r.duration_s:8.1f}{where}")
        for c in r.failed_checks:
            rows.append(f"{'':22}   check failed: {c['label']}"
                        + (f" (measured {c['measured']})" if c.get("measured") is not None else ""))
        if r.error and r.error.get("type") in ("CellTimeoutError", "DeadKernelError"):
            rows.append(f"{'':22}   {r.error.get('evalue')}")
    rows.append(f"{'total':22} {'ok' if summary.ok else 'FAILED':8} {summary.total_s:8.1f}")
    rows += story_lines(summary.results)
    checks = summary.checks
    rows.append(f"checks: {len(checks) - len(summary.failed_checks)} of {len(checks)} true"
                f"   load average (1 min) {summary.load_avg.get('start', ['?'])[0]} at start,"
                f" {summary.load_avg.get('end', ['?'])[0]} at the end")
    return "\n".join(rows)
