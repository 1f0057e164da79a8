"""tools/bench_table.py: the README's performance table comes from bench/results/*.json, and --check catches drift."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "bench_table.py"
sys.path.insert(0, str(REPO / "tools"))

import bench_table  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


@pytest.fixture()
def copy(tmp_path: Path) -> tuple[Path, Path]:
    """A temporary README and results folder holding the files the table reads."""
    results = tmp_path / "results"
    results.mkdir()
    for name in bench_table.SOURCES:
        if (REPO / "bench" / "results" / name).is_file():
            shutil.copy(REPO / "bench" / "results" / name, results / name)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmarks\nbefore\n{bench_table.START}\nstale\n{bench_table.END}\nafter\n")
    return readme, results


def test_the_table_is_written_between_the_markers_and_a_changed_json_changes_it(copy):
    readme, results = copy
    assert run("--readme", str(readme), "--results", str(results), "--check").returncode == 1  # "stale" differs
    assert run("--readme", str(readme), "--results", str(results)).returncode == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n## Benchmarks\nbefore\n") and text.endswith(f"{bench_table.END}\nafter\n")
    assert "stale" not in text and bench_table.HEADER in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| what")]
    assert rows, "the table has rows from the result files"
    for ln in rows:  # every row names its file, a load and a date
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert cells[-1].startswith("`") and cells[-1].endswith(".json`"), ln
        assert cells[-2][:4].isdigit() and cells[-2][4] == "-", ln
        assert cells[-3] != "", ln
    assert run("--readme", str(readme), "--results", str(results), "--check").returncode == 0

    # one figure changes in one file: the check fails, the regenerated table shows the new figure
    doc = json.loads((results / "eventhub_telemetry.json").read_text())
    doc["read_events_per_s"] = 12345.6
    (results / "eventhub_telemetry.json").write_text(json.dumps(doc))
    check = run("--readme", str(readme), "--results", str(results), "--check")
    assert check.returncode == 1 and "out of date" in check.stderr
    assert run("--readme", str(readme), "--results", str(results)).returncode == 0
    assert "**12345.6** events/s" in readme.read_text()


def test_a_broken_result_file_or_missing_markers_is_a_clear_error(copy):
    readme, results = copy
    (results / "eventhub_telemetry.json").write_text(json.dumps({"benchmark": "eventhub_telemetry"}))
    bad = run("--readme", str(readme), "--results", str(results))
    assert bad.returncode == 2 and "eventhub_telemetry.json" in bad.stderr and "re-run the script" in bad.stderr
    (results / "eventhub_telemetry.json").unlink()
    readme.write_text("# no markers\n")
    bad = run("--readme", str(readme), "--results", str(results))
    assert bad.returncode == 2 and bench_table.START in bad.stderr


def test_the_real_readme_is_in_sync_with_bench_results():
    res = run("--check")
    assert res.returncode == 0, res.stderr
