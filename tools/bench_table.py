"""The README's performance table, generated from bench/results/*.json.

Each row is read from one result file and names it, with the machine's 1-minute load average
during that run and the run's date (UTC). The table goes between the markers
`<!-- bench-table:start -->` and `<!-- bench-table:end -->` in README.md; nothing else of the
README changes.

    .venv/bin/python tools/bench_table.py            # rewrite the table in README.md
    .venv/bin/python tools/bench_table.py --check    # exit 1 when README.md differs from the files
    .venv/bin/python tools/bench_table.py --print    # the table on stdout
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
HEADER = "| what | result | load (1 min) | date (UTC) | file |\n|---|---|---|---|---|"

Row = tuple[str, ...]  # what, result, load[, date when the figure is older than the file]


class TableError(Exception):
    """A result file or the README cannot give the table; the message says which and how to fix it."""


def _load(values: Any) -> str:
    """'2.1' or '2.1-6.7' from load averages (triples or 1-minute numbers)."""
    ones = []
    for v in values:
        if v is None:
            continue
        ones.append(float(v[0] if isinstance(v, list | tuple) else v))
    if not ones:
        return "?"
    lo, hi = min(ones), max(ones)
    return f"{lo:.1f}" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}-{hi:.1f}"


def _run_load(doc: dict[str, Any]) -> str:
    return _load([doc.get("load_avg_start"), (doc.get("machine") or {}).get("load_avg_1_5_15")])


def _s(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def rollout_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for r in doc["results"]:
        run, ap = r["running"], r["applied"]
        agents = "one process per agent" if r["agents"] == "process" else f"agent threads in {r['workers']} processes"
        yield (f"rollout: `create_deployment` until every device reports the new module running, {r['devices']} "
               f"devices on MQTT ({agents}), hub evaluation `{r['timing']}`, {r['rounds']} round{'s' * (r['rounds'] != 1)}",
               f"p50 **{_s(run['p50_ms'])}**, p95 {_s(run['p95_ms'])}, max {_s(run['max_ms'])} "
               f"(hub wrote the twins: p50 {_s(ap['p50_ms'])})",
               _load(x["load_avg"] for x in r["per_round"]))


def ingest_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for r in doc["results"]:
        yield (f"ingest: {r['collectors']} collector process(es) x {r['frames_each']} frames into the local studio",
               f"**{r['uploads_per_s_studio']}** uploads/s (studio side; {r['uploads_per_s_end_to_end']}/s end to end "
               f"incl. start-up), lost {r['lost']}, duplicated {r['duplicated']}",
               _load([r["load_avg"]]))


def memory_rows(doc: dict[str, Any]) -> Iterator[Row]:
    load = _run_load(doc)
    for name, r in doc["runner"].items():
        if "peak_rss_mb" in r:
            yield (f"memory: runner ({name}, folder camera, 20 Hz, {r['seconds']:.0f} s), peak RSS",
                   f"**{r['peak_rss_mb']:.0f} MB**", _load([r["load_avg"]]))
    a = doc["agent"]
    yield (f"memory: edge agent process, idle / running a collector module that uploads {a['frames']} frames, peak RSS "
           "(the collector module's beside it)",
           f"**{a['idle']['VmHWM']:.0f}** / {a['with_collector_module']['VmHWM']:.0f} MB "
           f"(collector module {a['collector_module']['VmHWM']:.0f} MB)", _load([a["load_avg"]]))
    c = doc["collector"]
    yield (f"memory: collector process under the ingest load ({c['collectors']} at once), peak RSS",
           f"**{c['peak_rss_mb']['max']:.0f} MB**", _load([c["load_avg"]]))
    lc = doc["local_cloud"]
    yield ("memory: local cloud, idle / after the ingest load (peak) / after the hostile-device drill (RSS, peak)",
           f"{lc['idle']['VmRSS']:.0f} MB / **{lc['after_ingest']['VmHWM']:.0f} MB** / "
           f"{lc['after_hostile_drill']['VmRSS']:.0f} MB, peak {lc['after_hostile_drill']['VmHWM']:.0f} MB", load)


def loop_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for r in doc["results"]:
        per = ", ".join(f"{n['notebook'][:2]} {n['duration_s']:.0f}" for n in r["notebooks"])
        yield (f"loop: `{r['profile']}` profile, six notebooks (papermill), seconds per notebook",
               f"**{r['total_s']:.0f} s** ({per}){'' if r['ok'] else ', NOT ok'}; from `{r['file']}`",
               _load((r.get("load_avg") or {}).values()), r["date"])


def inference_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for r in doc["results"]:
        f1 = r.get("f1")
        f1_text = f"; F1@0.5 {f1['f1']:.3f} ({f1['what']}, `{f1['file']}`)" if f1 else "; no F1 at this size"
        if r["arch"] == "ssdlite320":
            same = r.get("f1_fomo_box_same_set")
            yield (f"inference: SSDLite320-MobileNetV3, 320 px, 320x320 frame, 1 thread (needs torchvision: read from "
                   f"`{r['file']}`)",
                   f"**{r['wall_ms_p50']:.1f} ms** wall{f1_text}"
                   + (f"; fomo-box 160 px on the same set {same['f1']:.3f}" if same else ""),
                   _load([r["load_avg"]]), r["measured_at"])
            continue
        yield (f"inference: {r['arch']} {r['input_size']} px, {r['model']}, 640x480 frame, 1 thread",
               f"**{r['cpu_ms_p50']:.1f} ms** CPU (wall p50 {r['wall_ms_p50']:.1f}){f1_text}", _load([r["load_avg"]]))


def runner_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for name, r in doc["results"].items():
        t = r["timing_1_thread"]
        yield (f"runner on real photos: {name} {r['input_size']} px, 640x480 frame, 1 thread; runner peak RSS",
               f"F1@0.5 **{r['f1']:.3f}**, {t['cpu_ms']['p50']:.1f} ms CPU p50, {r['runner']['peak_rss_mb']:.0f} MB",
               _load([t["load_avg"], r["runner"]["load_avg"]]))


def desired_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for r in doc["results"]:
        yield (f"`$edgeAgent` desired change until the hub holds the agent's report, {r['devices']} device(s), MQTT",
               f"p50 **{_s(r['p50_ms'])}**, p95 {_s(r['p95_ms'])}", _run_load(doc))


def eventhub_rows(doc: dict[str, Any]) -> Iterator[Row]:
    one = doc["send_to_receive_ms_one_partition"]
    yield (f"telemetry through the Event Hubs-compatible endpoint ({doc['messages']} messages)",
           f"**{doc['read_events_per_s']}** events/s read; send to receive p50 {_s(one['p50'])} (one partition)",
           _run_load(doc))


def quantize_rows(doc: dict[str, Any]) -> Iterator[Row]:
    pick, res = doc.get("pick"), doc["results"]
    if not pick:
        return
    before = next((v for k, v in res.items() if k.endswith("(before)")), None)
    was = (f"; before (all int8 but the head): agreement {before['agreement_with_float']:.3f}, test "
           f"{0.0 - before['test_f1_lost']:+.3f}" if before else "")
    yield (f"int8 for nanodet-ft 224 px: {len(res) - 1} `quantize_static` settings, chosen on the "
           f"{doc['split']['train'] + doc['split']['val']} non-test photos",
           f"**{pick['setting']}**: boxes agree with float {pick['agreement_with_float']:.3f}, F1 vs float on the "
           f"{doc['split']['test']} test photos {0.0 - pick['test_f1_lost']:+.3f}, {pick['ms_per_frame_p50']:.1f} ms CPU p50 "
           f"(float {res['float']['test']['ms_per_frame']['p50']:.1f}){was}",
           _run_load(doc))


def kfold_rows(doc: dict[str, Any]) -> Iterator[Row]:
    for name, r in doc.get("runs", {}).items():
        s = r.get("summary")
        if not s:
            continue
        f1 = s["test_f1"]
        per = ", ".join(f"{c} {v['mean']:.2f}" for c, v in s["per_class_test_f1"].items())
        yield (f"nanodet-ft `{name}` on photos it never saw: {s['folds']} of {doc['k']} folds of the 240 real photos, "
               f"{doc['time_budget_cpu_s']:.0f} CPU s of training each",
               f"test F1@0.5 mean **{f1['mean']:.3f}** ± {f1['std']:.3f} (min {f1['min']:.3f}, max {f1['max']:.3f}; {per})",
               _load([v.get("load_avg_start") for v in r["folds"].values()]))



def prefetch_rows(doc: dict[str, Any]) -> Iterator[Row]:
    s, p = doc["summary"], doc["params"]
    yield (f"fomo-box training, {p['input_size']} px, {p['epochs']} epochs, {p['images']} synthetic images, "
           f"{p['threads']} torch thread{'s' * (p['threads'] != 1)}: next batch augmented on a second thread vs. serial",
           f"**{s['prefetch_median_s']:.1f} s** vs. {s['serial_median_s']:.1f} s (ratio {s['ratio_prefetch_over_serial']:.2f}; "
           f"same model: {s['same_model']})",
           _load([r["load_avg_before"] for r in doc["runs"]]))


def suite_rows(doc: dict[str, Any]) -> Iterator[Row]:
    c = doc["counts"]
    counts = ", ".join(f"{n} {k}" for k, n in c.items())
    yield ("`make test` (CI=true) on a clean clone: installs, shape rules, pytest on the Makefile's workers",
           f"**{doc['wall_s']:.0f} s** in all, pytest {doc['pytest_s']:.0f} s ({counts}; exit {doc['exit_code']})"
           + (f"; cores busy {doc['cpu_busy_fraction']:.0%}, {doc['cpu_busy_s']:.0f} CPU-s" if doc.get("cpu_busy_s") else ""),
           _load([doc["load_avg_start"], doc["load_avg_end"]]))


def imports_rows(doc: dict[str, Any]) -> Iterator[Row]:
    parts = [f"{m.split('.', 1)[1]} {r['before_cpu_s']:.2f} -> **{r['after_cpu_s']:.2f}**" for m, r in doc["modules"].items()]
    yield ("CPU seconds a fresh interpreter spends importing each process's entry module, with rfc3987-syntax's "
           "parser (before) and with it hidden from jsonschema (after), median of "
           f"{doc['repeat']}", "; ".join(parts) + " CPU-s", _load([doc["load_avg_start"], doc["load_avg_end"]]))

#: result file -> its rows, in the table's order
SOURCES: dict[str, Callable[[dict[str, Any]], Iterator[Row]]] = {
    "rollout_10.json": rollout_rows,
    "rollout_100.json": rollout_rows,
    "ingest.json": ingest_rows,
    "memory.json": memory_rows,
    "inference.json": inference_rows,
    "runner.json": runner_rows,
    "quantize.json": quantize_rows,
    "nanodet_kfold.json": kfold_rows,
    "loop.json": loop_rows,
    "suite.json": suite_rows,
    "imports.json": imports_rows,
    "train_prefetch_t1.json": prefetch_rows,
    "train_prefetch_t2.json": prefetch_rows,
    "mqtt_desired_to_reported.json": desired_rows,
    "eventhub_telemetry.json": eventhub_rows,
}


def table(results: Path) -> str:
    """The markdown table from the result files in `results` (files that are absent give no rows)."""
    lines = [HEADER]
    for name, rows in SOURCES.items():
        path = results / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            produced = list(rows(doc))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise TableError(f"{path}: not the shape its benchmark writes ({exc!r}); re-run the script that writes "
                             "it (bench/README.md lists them) or fix the file") from None
        date = str(doc.get("created_at", "?"))[:16].replace("T", " ")
        for what, result, load, *when in produced:
            row_date = str(when[0])[:16].replace("T", " ") if when else date
            lines.append(f"| {what} | {result} | {load} | {row_date} | `{name}` |")
    return "\n".join(lines) + "\n"


def splice(readme: str, body: str) -> str:
    """`readme` with the text between the markers replaced by `body`."""
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise TableError(f"README needs exactly one {START} line followed by one {END} line "
                         "(in its Benchmarks section)")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(REPO / "bench" / "results"))
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's table differs from the files")
    mode.add_argument("--print", action="store_true", help="print the table, change nothing")
    args = ap.parse_args(argv)
    readme = Path(args.readme)
    try:
        body = table(Path(args.results))
        if args.print:
            sys.stdout.write(body)
            return 0
        old = readme.read_text()
        new = splice(old, body)
    except (TableError, OSError) as exc:
        print(f"bench_table: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(f"bench_table: {readme} is out of date with {args.results}: run `.venv/bin/python "
                  "tools/bench_table.py` (or `make bench`)", file=sys.stderr)
            return 1
        return 0
    if new != old:
        readme.write_text(new)
        print(f"bench_table: wrote the table into {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
