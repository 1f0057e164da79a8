"""The reference notebooks (tests/notebooks/reference/) against a fresh run, judged by nbval.

The reference notebooks (written by `make notebooks`) are executed copies of a smoke run on the
Edge Impulse path rehearsed against the stand-in (`--studio edgeimpulse-rehearsal`); the notebooks
a person opens (notebooks/) carry the workshop's parameters and no outputs, and are never
overwritten by a run. The suite executes the six notebooks once, in conftest's `smoke_run`, and
test_pipeline.py compares each executed notebook with its reference by nbval's own rules
(`nbtools.nbval_differences`: nbval's cell options, sanitizers and `compare_outputs`); here
`pytest --nbval` itself re-executes notebook 01 and must pass it, and fail it once a stored output
is altered, and the comparison must find an altered output too.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbtools import REFERENCE, ROOT, SANITIZE, nbval_differences, scan_for_secrets

from helpers.pipeline.rehearsal import edge_impulse_rehearsal_env

# Two runs of notebook 01 under nbval: 0.5-1.5 min; the subprocess timeouts below fail first.
pytestmark = [pytest.mark.notebooks, pytest.mark.slow, pytest.mark.timeout(1500)]


def _nbval(paths, workspace, timeout=1500):
    """`pytest --nbval` over `paths` on a fresh `workspace`, on the references' path: the local hub and
    the studio reached as a real Edge Impulse project pointed at the workspace's stand-in."""
    env = dict(os.environ, **edge_impulse_rehearsal_env(workspace), EDGELOOP_WORKSPACE=str(workspace),
               EDGELOOP_HUB="local", EDGELOOP_STUDIO="edgeimpulse")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-sanitize-with",
           str(SANITIZE), "--nbval-cell-timeout", "900", "-o", "testpaths=", *map(str, paths)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_comparison_has_teeth(tmp_path):
    """One altered check line, one cell more: both are differences; the reference equals itself."""
    ref = REFERENCE / "01_setup_hub.ipynb"
    assert nbval_differences(ref, ref) == []
    nb = nbformat.read(ref, as_version=4)
    _alter_online_line(nb)
    altered = tmp_path / "01_setup_hub.ipynb"
    nbformat.write(nb, altered)
    (found,) = nbval_differences(altered, ref)
    assert "outputs differ" in found and "pi-1 online: False" in found
    nb.cells.append(nbformat.v4.new_code_cell("print('one more')"))
    nbformat.write(nb, altered)
    assert "code cells" in nbval_differences(altered, ref)[0]


def _alter_online_line(nb) -> None:
    altered = False
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and "pi-1 online: True" in out.get("text", ""):
                out["text"] = out["text"].replace("pi-1 online: True", "pi-1 online: False")
                altered = True
    assert altered, "01_setup_hub.ipynb has no stored 'pi-1 online: True' line: run `make notebooks`"


def test_nbval_has_teeth(tmp_path, stop_workspace):
    """`pytest --nbval` re-executes notebook 01: its reference passes, a deliberately altered stored output fails."""
    ws = tmp_path / "ws"
    stop_workspace(ws)
    proc = _nbval([REFERENCE / "01_setup_hub.ipynb"], ws, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    nb = nbformat.read(REFERENCE / "01_setup_hub.ipynb", as_version=4)
    _alter_online_line(nb)
    target = tmp_path / "nb" / "01_setup_hub.ipynb"
    target.parent.mkdir()
    nbformat.write(nb, target)
    shutil.copy(SANITIZE, target.parent / "sanitize.cfg")
    ws2 = tmp_path / "ws2"
    stop_workspace(ws2)
    proc = _nbval([target], ws2, timeout=600)
    assert proc.returncode != 0
    assert "pi-1 online: False" in proc.stdout or "mismatch" in proc.stdout.lower()


def test_committed_notebooks_hold_no_secret_and_no_secret_parameter():
    files = sorted(REFERENCE.glob("*.ipynb"))
    assert len(files) == 6
    assert scan_for_secrets(files) == []
    for f in files:
        meta = json.loads(f.read_text()).get("metadata", {}).get("papermill", {})
        params = meta.get("parameters", {})
        bad = [k for k in params if any(w in k.lower() for w in ("key", "secret", "password", "token", "connection"))]
        assert not bad, f"{f.name}: secret-like papermill parameters {bad}"


def test_reference_notebooks_carry_outputs():
    for f in sorted(REFERENCE.glob("0*.ipynb")):
        nb = nbformat.read(f, as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert outputs, f"{f.name} has no stored outputs: run `make notebooks`"
        assert not any(o.get("output_type") == "error" for o in outputs), f"{f.name} stores an error"
