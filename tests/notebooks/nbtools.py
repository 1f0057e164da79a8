"""Helpers of the notebook tests: secret patterns, leftover-process checks, nbval's comparison of a run."""
from __future__ import annotations

import json
import re
from collections import OrderedDict, defaultdict
from pathlib import Path
from types import SimpleNamespace

import nbformat
import nbval.plugin as _nbval

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"  # what a person opens: workshop parameters, no outputs
REFERENCE = ROOT / "tests" / "notebooks" / "reference"  # executed smoke runs nbval compares (make notebooks)
SANITIZE = REFERENCE / "sanitize.cfg"

# Unmasked secret shapes: a SAS key value, a SAS signature, an Edge Impulse or local studio key.
SECRET_PATTERNS = [
    re.compile(r"SharedAccessKey=(?!\*{8})[A-Za-z0-9+/]{16,}={0,2}"),
    re.compile(r"sig=(?!\*{8})[A-Za-z0-9%+/=]{16,}"),
    re.compile(r"\bei_[0-9a-fA-F]{32,}\b"),
]


def workspace_secrets(workspace: Path) -> list[str]:
    """The actual secret values a run's local cloud made (credentials.json), for exact-match scans."""
    creds = workspace / "localcloud" / "credentials.json"
    if not creds.exists():
        return []
    values = []
    for v in json.loads(creds.read_text()).values():
        if isinstance(v, str) and len(v) >= 16:
            values.append(v)
            m = re.search(r"SharedAccessKey=([^;]+)", v)
            if m:
                values.append(m.group(1))
    return values


def scan_for_secrets(paths: list[Path], exact: list[str] = ()) -> list[str]:
    """`path: what` for every secret-looking string or exact secret value found in `paths`."""
    hits = []
    for p in paths:
        text = p.read_text(errors="replace")
        for pat in SECRET_PATTERNS:
            for m in pat.finditer(text):
                hits.append(f"{p.name}: {m.group(0)[:24]}...")
        for value in exact:
            if value in text:
                hits.append(f"{p.name}: contains a secret value of the run")
    return hits


def leftovers(workspace: Path) -> list[str]:
    """What still runs in a workspace: the local cloud and simulated device agents."""
    from helpers import localcloud
    from helpers.device import fleet

    left = [f"device {d.device_id} (pid {d.pid})" for d in fleet.list_devices(workspace) if d.alive]
    if localcloud.status(workspace).get("running"):
        left.append("local cloud")
    return left


class _NbvalComparison:
    """nbval's own output comparison (`IPyNbCell.compare_outputs`, `sanitize`, `format_output_compare`)
    bound to the patterns of a sanitize file, for outputs a papermill run already computed."""

    compare_outputs = _nbval.IPyNbCell.compare_outputs
    sanitize = _nbval.IPyNbCell.sanitize
    format_output_compare = _nbval.IPyNbCell.format_output_compare
    colors = _nbval.nocolors
    config = None

    def __init__(self, sanitize_cfg: Path):
        # what nbval's collector skips without --nbdime: metadata, counts, widget model ids, images
        skip = ("metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg")
        patterns = OrderedDict(_nbval.get_sanitize_patterns(sanitize_cfg.read_text()))  # as setup_sanitize_files
        self.parent = SimpleNamespace(skip_compare=skip, sanitize_patterns=patterns)
        self.ihook = SimpleNamespace(pytest_assertrepr_compare=lambda **_: [])  # nbval's plain repr of both sides
        self.comparison_traceback: list[str] = []


def nbval_differences(executed: Path, reference: Path, sanitize_cfg: Path = SANITIZE) -> list[str]:
    """Where an executed notebook's outputs differ from its reference, judged as `pytest --nbval` judges:
    each code cell's nbval options (`nbval-ignore-output` tags, `# NBVAL_...` comments), streams
    coalesced, both sides sanitized with `sanitize_cfg`, compared by nbval's `compare_outputs`.
    A cell whose source differs, an error output the reference does not expect, or a different cell
    count is a difference too. [] when nbval would pass the run."""
    run_cells = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]
    ref_cells = [c for c in nbformat.read(reference, as_version=4).cells if c.cell_type == "code"]
    if len(run_cells) != len(ref_cells):
        return [f"{executed.name}: {len(run_cells)} code cells, the reference has {len(ref_cells)}"]
    compare = _NbvalComparison(sanitize_cfg)
    found = []
    for n, (run, ref) in enumerate(zip(run_cells, ref_cells)):
        where = f"{executed.name}: Cell {n}"
        if run.source != ref.source:
            found.append(f"{where}: its source differs from the reference's (run `make notebooks`)")
            continue
        options = defaultdict(bool, _nbval.find_metadata_tags(ref.metadata))
        options.update(dict(_nbval.find_comment_markers(ref.source)))
        options.setdefault("check", True)
        if options["skip"]:
            continue
        if not options["check_exception"] and any(o.get("output_type") == "error" for o in run.outputs):
            found.append(f"{where}: raised an error")
            continue
        if options["check"] and ref.execution_count is not None and not compare.compare_outputs(
                _nbval.coalesce_streams(run.outputs), _nbval.coalesce_streams(ref.outputs)):
            found.append(f"{where}: outputs differ\n" + "\n".join(map(str, compare.comparison_traceback)))
    return found
