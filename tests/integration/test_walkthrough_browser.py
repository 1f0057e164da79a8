"""The walkthrough as a person lives it (#26): `make lab` on a fresh workspace, notebooks 01-06 in
a real JupyterLab, Run All in each, labeling by hand in 03 and 06.

What it does, in the README's order (the `make demo` half is tests/notebooks/test_pipeline.py's):

1. the workspace `make lab` opens (`tools/lab_workspace.py`, no WORKSPACE given): a fresh
   `workspace/lab` under a temporary root, said to be fresh;
2. `notebooks/*.ipynb` copied and trusted as `make lab` does (`jupyter trust`), with the
   profile's parameters injected as papermill does (`smoke` by default; `make walkthrough
   PROFILE=workshop` sets EDGELOOP_WALKTHROUGH_PROFILE), the panel (`labeler = "human"`) in 03 and 06;
3. JupyterLab on 127.0.0.1 with EDGELOOP_WORKSPACE set (as `make lab`), headless system Chromium
   (Playwright) at 1400x1000; each notebook opened in turn, Run All, until its kernel is idle;
4. 03 and 06: the person labels through the panel with mouse and keys: Enter where the offered
   boxes carry the classes the frame holds, and a few frames fixed by drawing where they do not
   (the classes and boxes the person sees: the camera's truth, read from the sample as a person
   reads the image); one frame skipped and labeled at the end through "Back to the skipped",
   whose image must come back with its box overlay drawn (not 0x0). The label grading fills in
   under each panel; 06's training cells then run from the cell that stopped Run All;
5. 04: the live training plot is in the window while it trains, and the model-choice tables do
   not wrap; 05: the device page is loaded inside the IFrame (its frame shows "Edge runner"),
   not refused;
6. no cell fails (besides 06's stop before labeling), no check prints False but those that grade
   the person's labels and the models trained on them (QUALITY_CHECKS: recorded in timing.json).

Screenshots of every notebook land in `out/walkthrough/` (git-ignored), with `timing.json`: the
test's own seconds per notebook, labeling included: the time a person needs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lab_server
import nbformat
import pytest
from lab_server import CHROME_ARGS, CHROMIUM, draw, stop

from helpers.geometry import iou
from helpers.pipeline.profiles import NOTEBOOKS, PROFILES, parameters_for
from helpers.results import INTERACTIVE, load_checks
from helpers.sim.oracle import ground_truth
from helpers.studio.local import LocalStudio

PROFILE = os.environ.get("EDGELOOP_WALKTHROUGH_PROFILE", "smoke")
# the smoke walkthrough measured ~10 min on 2 busy cores; the workshop one collects and trains twice as much
pytestmark = [pytest.mark.timeout(1800 if PROFILE == "smoke" else 3600), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "out" / "walkthrough"
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the [test] extra pins it; a bare install may lack it
    sync_playwright = None
try:
    import jupyterlab  # noqa: F401
except ImportError:
    jupyterlab = None

VIEWPORT = {"width": 1400, "height": 1000}
# frames the person fixes by drawing when the offered boxes name the wrong fruit (Enter on the rest, fast:
# a box in the wrong place with the right class passes a glance, and the grading finds it). With
# fewer fixes in 03 (4 of ~8, balls left labeled apple), the apple+banana model of the smoke run
# lost 0.07 apple recall against v1 and 06's gate refused it.
FIXES = {"03_label_review": 1000, "06_retrain_banana": 1000}
# checks that grade the person's own labels, and the models trained on them: recorded in timing.json
# and printed, not failed. They measure the labels the test's person saved (Enter on a box in the wrong
# place passes a glance), on the smoke profile's small sets: the apple F1 >= 0.9 of 04 measured just
# under 0.9 in one of three runs, as the grading's lesson says it may. The story's premise, that the
# apple model calls held-out bananas apples, is the same kind of check: how a one-class model answers
# a fruit it never saw depends on what it was trained on; the oracle-labeled smoke run measures 47 %,
# one of the walkthrough's apple models under 10 %. tests/notebooks/test_pipeline.py fails on both.
QUALITY_CHECKS = ("your labels match", "your banana labels match", "F1 >=", "held-out bananas apples")

# Run All is over: the kernel idle and no cell running or queued (`[*]`), twice in a row.
RUN_OVER_JS = """() => {
  const w = jupyterapp.shell.currentWidget, k = w && w.sessionContext.session?.kernel;
  if (!k || k.connectionStatus !== 'connected' || k.status !== 'idle') return false;
  return Array.from(w.content.model.cells).every((c) => c.type !== 'code' || c.executionState !== 'running');
}"""
# a live training plot (a figure under the cell that makes `ui.LivePlot`) inside the window
PLOT_IN_WINDOW_JS = """() => Array.from(document.querySelectorAll('.jp-Cell')).some((cell) => {
  if (!cell.innerText.includes('LivePlot(')) return false;
  return Array.from(cell.querySelectorAll('.jp-OutputArea-output img')).some((i) => {
    const r = i.getBoundingClientRect();
    return r.height > 100 && r.top >= -r.height / 2 && r.bottom <= window.innerHeight + r.height / 2;
  });
})"""
PLOT_WHERE_JS = """() => { const nb = jupyterapp.shell.currentWidget.content;
  const outer = nb.node.querySelector('.jp-WindowedPanel-outer') || nb.node;
  const cell = Array.from(document.querySelectorAll('.jp-Cell')).find((c) => c.innerText.includes('LivePlot('));
  const img = cell && cell.querySelector('.jp-OutputArea-output img');
  return [Math.round(outer.scrollTop), img ? Math.round(img.getBoundingClientRect().top) : null, nb.activeCellIndex]; }"""
# the centre of the first box's x (its delete button) when that point shows it (nothing over it), else null
X_BUTTON_JS = """() => {
  const r = document.querySelector('.edgeloop-label-panel .edgeloop-bbox svg rect.clickable');
  if (!r) return null;
  const b = r.getBoundingClientRect(), x = b.x + b.width / 2, y = b.y + b.height / 2;
  return document.elementFromPoint(x, y) === r ? [x, y] : null;
}"""
# per code cell: its source and its outputs as the notebook model keeps them
OUTPUTS_JS = """() => Array.from(jupyterapp.shell.currentWidget.content.model.cells)
  .filter((c) => c.type === 'code')
  .map((c) => ({source: c.sharedModel.getSource(), outputs: c.outputs.toJSON()}))"""


def lab_workspace(root: Path) -> Path:
    """The workspace `make lab` opens with no WORKSPACE given: `tools/lab_workspace.py`, run as the Makefile does."""
    env = suite_env()
    run = subprocess.run([sys.executable, str(REPO / "tools" / "lab_workspace.py"), "--root", str(root)],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True)
    ws = Path(run.stdout.strip())
    assert ws == (root / "workspace" / "lab").resolve(), run
    assert "fresh: start with notebook 01" in run.stderr, run.stderr
    return ws


def write_notebooks(folder: Path, profile: str) -> list[str]:
    """notebooks/*.ipynb with the profile's parameters injected (as papermill does); the panel in 03 and 06."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    names = []
    for name in NOTEBOOKS:
        params = parameters_for(profile, name)
        if "labeler" in params:
            params["labeler"] = "human"
        nb = parameterize_notebook(load_notebook_node(str(REPO / "notebooks" / f"{name}.ipynb")), params)
        nbformat.write(nb, folder / f"{name}.ipynb")
        names.append(name)
    return names


# The suite's own EDGELOOP_ variables, kept where a user's are dropped: the session marker (the suite
# stops and names whatever the walkthrough leaves running), one torch thread per process (two threads
# on the suite's busy cores wait at every parallel region: tests/conftest.py), the CPU accounting.
SUITE_VARS = ("EDGELOOP_TEST_SESSION", "EDGELOOP_TORCH_THREADS", "EDGELOOP_TEST_FILE", "EDGELOOP_CPU_PROFILE")


def suite_env() -> dict[str, str]:
    """The environment `make lab` sees: none of a user's EDGELOOP_ settings, only the suite's own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGELOOP_") or k in SUITE_VARS}


def lab_env(tmp: Path, workspace: Path) -> dict[str, str]:
    env = suite_env()
    return {**env, "EDGELOOP_WORKSPACE": str(workspace), "JUPYTER_CONFIG_DIR": str(tmp / "jcfg"),
            "JUPYTER_DATA_DIR": str(tmp / "jdata"), "JUPYTER_RUNTIME_DIR": str(tmp / "jrt"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-ws"),
            "PYTHONUNBUFFERED": "1"}


def no_news(settings: Path) -> None:
    path = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


class Walk:
    """The browser side: one page of JupyterLab, the notebook open in it, and what was seen."""

    def __init__(self, page, studio: LocalStudio):
        self.page, self.studio = page, studio
        self.timing: dict[str, dict[str, float]] = {}
        self.notes: dict[str, dict] = {}

    # ------------------------------------------------------------------ notebooks
    def open(self, name: str) -> None:
        """Open `name` (closing the last one and shutting its kernel down), wait for its kernel."""
        self.page.evaluate("""async path => {
          const w = jupyterapp.shell.currentWidget;
          if (w && w.context) { await w.sessionContext.shutdown(); w.context.model.dirty = false; w.dispose(); }
          await jupyterapp.commands.execute('docmanager:open', {path});
        }""", f"{name}.ipynb")
        self.page.wait_for_function(
            "path => { const w = jupyterapp.shell.currentWidget;"
            " return w && w.context && w.context.path === path && w.context.isReady; }", arg=f"{name}.ipynb",
            timeout=120_000)
        self.page.wait_for_function("() => { const k = jupyterapp.shell.currentWidget.sessionContext.session?.kernel;"
                                    " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
                                    timeout=180_000)

    def run_all(self) -> None:
        # not awaited: the command's promise settles only when the last cell has run
        self.page.evaluate("() => { void jupyterapp.commands.execute('notebook:run-all-cells'); }")
        time.sleep(2)

    def run_from(self, marker: str) -> None:
        """Select the cell whose source holds `marker` and run it and all below (Run > Run Selected Cell and All Below)."""
        self.show_cell(marker)
        self.page.evaluate("() => { void jupyterapp.commands.execute('notebook:run-all-below'); }")
        time.sleep(2)

    def wait_run_over(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            seen = seen + 1 if self.page.evaluate(RUN_OVER_JS) else 0
            if seen >= 3:
                return
            time.sleep(1.0)
        raise AssertionError(f"Run All did not end in {timeout_s:.0f} s")

    def outputs(self) -> list[dict]:
        return self.page.evaluate(OUTPUTS_JS)

    def errors(self) -> list[str]:
        return [f"{o.get('ename')}: {o.get('evalue')}" for c in self.outputs() for o in c["outputs"]
                if o.get("output_type") == "error"]

    def show_cell(self, marker: str) -> int:
        """Make the cell whose source holds `marker` the active one, scrolled to the top (JupyterLab draws
        only the cells on screen)."""
        index = self.page.evaluate("""(marker) => {
          const nb = jupyterapp.shell.currentWidget.content;
          const i = Array.from(nb.model.cells).findIndex((c) => c.sharedModel.getSource().includes(marker));
          if (i < 0) return i;
          nb.activeCellIndex = i; nb.scrollToItem(i, 'start'); return i;
        }""", marker)
        assert index >= 0, f"no cell holds {marker!r}"
        time.sleep(0.5)
        return index

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"))

    def output_text(self, text: str, timeout_s: float = 60):
        loc = self.page.locator(".jp-OutputArea-output", has_text=text).first
        expect(loc).to_be_visible(timeout=timeout_s * 1000)
        return loc

    # ------------------------------------------------------------------ the panel
    def label_queue(self, name: str, labels: list[str], fixes: int) -> dict:
        """Label the whole queue in the panel as a person: Enter where the offered boxes look right,
        draw where they do not (at most `fixes` frames), skip one frame and come back to it."""
        page = self.page
        panel = page.locator(".edgeloop-label-panel")
        header = panel.locator(".widget-html").first
        expect(header).to_contain_text("sample #", timeout=180_000)
        panel.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_function("() => document.querySelector('.edgeloop-bbox img').naturalWidth > 0")
        stats = Counter()
        skipped = None
        t0 = time.monotonic()
        first = True
        while True:
            head = header.inner_text()
            if "The queue is done." in head:
                break
            sample_id = int(re.search(r"sample #(\d+)", head).group(1))
            truth = ground_truth(self.studio.get_sample(sample_id)) or []
            shown = self.shown_boxes()
            if first:
                self.shot(f"{name}_panel_first_frame")
                first = False
            if skipped is None and shown and stats["saved"] >= 3:
                skipped = sample_id  # leave one frame with a proposal for later: Space
                panel.locator(".widget-html").nth(1).click()
                page.keyboard.press("Space")
                stats["skipped"] += 1
            elif looks_right(shown, truth):
                header.click()  # the focus on the image, as a person's click on the panel does
                page.keyboard.press("Enter")
                stats["enter"] += 1
                stats["saved"] += 1
            elif stats["fixed"] < fixes:
                if stats["fixed"] == 0:
                    self.shot(f"{name}_panel_wrong_proposal")
                self.fix(shown, truth, labels)
                if stats["fixed"] == 0:
                    self.shot(f"{name}_panel_fixed_by_drawing")
                page.keyboard.press("Enter")
                stats["fixed"] += 1
                stats["saved"] += 1
            else:  # fast: the person stopped looking closely
                header.click()
                page.keyboard.press("Enter")
                stats["enter_wrong"] += 1
                stats["saved"] += 1
            expect(header).not_to_contain_text(f"sample #{sample_id} ", timeout=60_000)
        labeling_s = time.monotonic() - t0
        panel.evaluate("e => e.scrollIntoView({block: 'start'})")
        self.shot(f"{name}_panel_queue_done")
        assert skipped is not None, "no frame with a proposal to skip"
        # back to the skipped frame: the image comes back with its box overlay drawn
        panel.get_by_role("button", name="Back to the skipped").click()
        expect(header).to_contain_text(f"sample #{skipped}", timeout=60_000)
        page.wait_for_function("() => { const i = document.querySelector('.edgeloop-bbox img');"
                               " return i && i.offsetParent !== null && i.clientWidth > 0; }", timeout=30_000)
        time.sleep(1.0)
        overlay = self.overlay()
        panel.evaluate("e => e.scrollIntoView({block: 'start'})")
        self.shot(f"{name}_panel_back_to_the_skipped")
        assert overlay["svg_w"] > 0.9 * overlay["img_w"] > 0, f"the box overlay is not drawn over the image: {overlay}"
        truth = ground_truth(self.studio.get_sample(skipped)) or []
        self.fix(self.shown_boxes(), truth, labels)  # drawing works on the image that came back
        deadline = time.monotonic() + 10
        while (drawn := self.overlay())["boxes"] < len(truth) and time.monotonic() < deadline:
            time.sleep(0.2)
        self.shot(f"{name}_panel_back_to_the_skipped_drawn")
        svg = page.evaluate("() => document.querySelector('.edgeloop-label-panel .edgeloop-bbox svg').outerHTML")
        assert drawn["boxes"] >= len(truth), f"boxes drawn on the skipped frame do not show: {drawn} {svg[:1500]}"
        page.keyboard.press("Enter")
        expect(header).to_contain_text("The queue is done.", timeout=60_000)
        saved = self.studio.get_sample(skipped).boxes
        assert len(saved) == len(truth) and all(max((iou(s, t) for t in truth), default=0) > 0.6 for s in saved), \
            (saved, truth)
        stats["fixed_after_back"] += 1
        return {**stats, "labeling_s": round(labeling_s, 1)}

    def shown_boxes(self) -> list[tuple[str, float]]:
        """The classes of the boxes on screen (the offered proposal), as the offer line lists them."""
        offer = self.page.locator(".edgeloop-label-panel .widget-html").nth(2).inner_text()
        line = next((ln for ln in offer.splitlines() if ln.startswith("▶")), None)
        if line is None:
            return []
        boxes = re.search(r"\[(.*)\]\s*$", line)
        return [(m.group(1), float(m.group(2))) for m in re.finditer(r"(\w+) (\d\.\d\d)", boxes.group(1))] if boxes else []

    def overlay(self) -> dict:
        """The panel's image and its box overlay as drawn: sizes and boxes with an area."""
        return self.page.evaluate("""() => {
          const root = document.querySelector('.edgeloop-label-panel .edgeloop-bbox');
          const img = root.querySelector('img'), svg = root.querySelector('svg');
          // each box is drawn as four lines (class top, bottom, left, right) and its handles
          const rects = svg ? Array.from(svg.querySelectorAll('line.top')).map((r) => r.getBoundingClientRect())
            .filter((r) => r.width > 4) : [];
          return {img_w: img ? img.clientWidth : 0, svg_w: svg ? svg.getBoundingClientRect().width : 0,
                  svg_h: svg ? svg.getBoundingClientRect().height : 0, boxes: rects.length};
        }""")

    def fix(self, shown: list, truth: list, labels: list[str]) -> None:
        """Delete the offered boxes (Tab, Delete) and draw the right ones, class key first."""
        page = self.page
        page.locator(".edgeloop-bbox img").evaluate("e => e.scrollIntoView({block: 'center'})")
        for _ in range(2 * len(shown) + 4):  # until none is left
            if self.overlay()["boxes"] == 0:
                break
            x = page.evaluate(X_BUTTON_JS)
            if x:  # the box's x, with the mouse, where nothing lies over it
                page.mouse.click(*x)
            else:  # Tab selects a box, Delete deletes it
                page.locator(".edgeloop-label-panel .widget-html").first.click()
                page.keyboard.press("Tab")
                page.keyboard.press("Delete")
            time.sleep(0.2)
        if self.overlay()["boxes"]:
            self.shot("fix_failed")
            svg = page.evaluate("() => document.querySelector('.edgeloop-label-panel .edgeloop-bbox svg').outerHTML")
            raise AssertionError(f"the offered boxes could not be deleted: {self.overlay()} {svg[:3000]}")
        page.locator(".edgeloop-label-panel .widget-html").first.click()  # the keys to the image again
        for box in truth:
            page.keyboard.press(str(labels.index(box.label) + 1))
            draw(page, box)


def looks_right(shown: list[tuple[str, float]], truth: list) -> bool:
    """What a person sees at a glance: the boxes on screen name the fruit the frame holds, one each."""
    return Counter(label for label, _ in shown) == Counter(b.label for b in truth)




@pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium: apt-get install chromium (make system does it as root)")
@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e .[test])")
@pytest.mark.skipif(jupyterlab is None, reason="jupyterlab is not installed (pip install -e .[test])")
def test_walkthrough_in_jupyterlab(tmp_path):
    assert PROFILE in PROFILES, f"EDGELOOP_WALKTHROUGH_PROFILE={PROFILE!r}: choose one of {sorted(PROFILES)}"
    t_start = time.monotonic()
    ws = lab_workspace(tmp_path)
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    names = write_notebooks(nbdir, PROFILE)
    env = lab_env(tmp_path, ws)
    no_news(tmp_path / "lab-settings")
    subprocess.run([sys.executable, "-m", "jupyter", "trust", *[str(nbdir / f"{n}.ipynb") for n in names]],
                   env=env, check=True, capture_output=True, timeout=120)
    if SHOTS.exists():
        for old in SHOTS.glob("*.png"):
            old.unlink()
    SHOTS.mkdir(parents=True, exist_ok=True)
    proc, base, token = lab_server.start_lab(nbdir, tmp_path, env)
    timing: dict[str, dict] = {}
    page_errors: list[str] = []
    problems: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.on("pageerror", lambda e: page_errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: page_errors.append(f"console: {m.text}") if m.type == "error" else None)
            expect.set_options(timeout=60_000)
            page.goto(f"{base}/lab?token={token}", timeout=180_000)
            page.wait_for_function("() => window.jupyterapp && jupyterapp.started && jupyterapp.restored", timeout=180_000)
            page.evaluate("async () => { await jupyterapp.started; await jupyterapp.restored; }")
            page.evaluate("() => jupyterapp.commands.execute('application:toggle-left-area')")
            walk = Walk(page, None)
            seen_checks: set[str] = set()
            for name in names:
                t0 = time.monotonic()
                walk.open(name)
                walk.run_all()
                STEPS[name](walk, problems, timing)
                if walk.studio is None:  # the local cloud runs once notebook 01 has started it
                    walk.studio = LocalStudio(ws)
                record = timing.setdefault(name, {})
                problems += [f"{name}: {e}" for e in walk.errors()]
                # the checks this notebook recorded (in a lab kernel: the workspace's `interactive` checks)
                mine = [c for c in load_checks(INTERACTIVE, ws) if c["label"] not in seen_checks]
                seen_checks.update(c["label"] for c in mine)
                record["checks"] = {c["label"]: c["ok"] for c in mine}
                record["quality_checks_false"] = {c["label"]: c.get("measured") for c in mine if not c["ok"]
                                                  and any(q in c["label"] for q in QUALITY_CHECKS)}
                problems += [f"{name}: check {c['label']}: False" for c in mine
                             if not c["ok"] and not any(q in c["label"] for q in QUALITY_CHECKS)]
                page.evaluate("() => jupyterapp.commands.execute('docmanager:save')")
                record["seconds"] = round(time.monotonic() - t0, 1)
                print(f"[walkthrough] {name}: {record['seconds']} s", flush=True)
            page.evaluate("() => jupyterapp.shell.currentWidget.sessionContext.shutdown()")
            browser.close()
    finally:
        stop(proc)
        subprocess.run([sys.executable, "-m", "helpers.pipeline", "--stop", "--workspace", str(ws)], cwd=REPO,
                       capture_output=True, timeout=180)
        total = round(time.monotonic() - t_start, 1)
        doc = {"profile": PROFILE, "total_s": total, "notebooks": timing,
               "labeling_s": round(sum(t.get("labeling", {}).get("labeling_s", 0) for t in timing.values()), 1),
               "load_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (SHOTS / "timing.json").write_text(json.dumps(doc, indent=2))
        print(json.dumps(doc, indent=2))
    assert not problems, "\n".join(problems)
    widget_errors = [e for e in page_errors if "widget" in e.lower() or "edgeloop" in e.lower()]
    assert not widget_errors, widget_errors


# ---------------------------------------------------------------------- per notebook
def step_01(walk: Walk, problems: list, timing: dict) -> None:
    walk.wait_run_over(600)
    walk.show_cell("ui.device_table(")
    expect(walk.page.locator(".jp-OutputArea-output .widget-html table", has_text="pi-1").first).to_be_visible()
    walk.shot("01_setup_hub_devices")


def step_02(walk: Walk, problems: list, timing: dict) -> None:
    walk.wait_run_over(900)
    walk.show_cell("CollectionPanel(")
    walk.shot("02_build_collector_collection")


def step_03(walk: Walk, problems: list, timing: dict) -> None:
    walk.wait_run_over(600)
    walk.output_text("waiting for", 60)  # the cells below the panel wait, they print no False
    labels = ["apple"]
    stats = walk.label_queue("03_label_review", labels, FIXES["03_label_review"])
    timing.setdefault("03_label_review", {})["labeling"] = stats
    walk.show_cell("def show_grade")
    walk.output_text("labeled frames checked against the camera's truth", 120)
    walk.shot("03_label_review_grading")
    walk.show_cell("def run_checks")
    walk.output_text("every collected image labeled: True", 60)
    walk.shot("03_label_review_checks")
    walk.wait_run_over(120)


def step_04(walk: Walk, problems: list, timing: dict) -> None:
    page = walk.page
    # while it trains, the live plot is where the person looks (Run All leaves the window at the end)
    seen, idle, trace = False, 0, []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1200 and idle < 3:
        where = page.evaluate(PLOT_WHERE_JS)
        trace.append([round(time.monotonic() - t0, 1), *where])
        if page.evaluate(PLOT_IN_WINDOW_JS):
            walk.shot("04_train_live_plot_while_training")
            seen = True
            break
        idle = idle + 1 if page.evaluate(RUN_OVER_JS) else 0
        time.sleep(1.0)
    timing.setdefault("04_train", {})["plot_trace"] = trace[-20:]  # [s, scrollTop, plot top or None, active cell]
    if not seen:
        walk.shot("04_train_no_live_plot_in_window")
        problems.append("04_train: the live training plot was never in the window while the model trained")
    walk.wait_run_over(1200)
    walk.show_cell("choices.model_choices()")
    lines = page.evaluate("""() => {
      const cell = Array.from(document.querySelectorAll('.jp-Cell')).find((c) => c.innerText.includes('choices.model_choices()'));
      const out = cell.querySelector('.jp-OutputArea-output pre');
      const lh = parseFloat(getComputedStyle(out).lineHeight);
      return {shown: Math.round(out.getBoundingClientRect().height / lh), text: out.innerText.replace(/\\n+$/, '').split('\\n').length,
              scroll: out.scrollWidth > out.clientWidth};
    }""")
    walk.shot("04_train_model_choices")
    if lines["shown"] > lines["text"]:
        problems.append(f"04_train: the model-choice tables wrap at {VIEWPORT['width']} px: {lines}")
    walk.show_cell("ui.LivePlot(")
    walk.shot("04_train_plot")
    walk.show_cell("plot_confusion(")
    walk.shot("04_train_evaluation")


def step_05(walk: Walk, problems: list, timing: dict) -> None:
    page = walk.page
    walk.wait_run_over(900)
    walk.show_cell("IFrame(")
    frame_el = page.locator(".jp-OutputArea-output iframe").first
    expect(frame_el).to_be_visible(timeout=60_000)
    frame = frame_el.content_frame
    expect(frame.locator("h1")).to_contain_text("Edge runner", timeout=60_000)
    expect(frame.locator("#model")).not_to_have_text("?", timeout=60_000)
    frame_el.scroll_into_view_if_needed()
    time.sleep(2)  # the page draws its first frame
    walk.shot("05_deploy_device_page_in_iframe")


def step_06(walk: Walk, problems: list, timing: dict) -> None:
    walk.wait_run_over(1200)  # Run All stops at the cell that waits for the labels
    errors = walk.errors()
    assert len(errors) == 1 and errors[0].startswith("StillLabeling"), errors
    stats = walk.label_queue("06_retrain_banana", ["apple", "banana"], FIXES["06_retrain_banana"])
    timing.setdefault("06_retrain_banana", {})["labeling"] = stats
    walk.show_cell("def show_labels")
    walk.output_text("labeled frames checked against the camera's truth", 120)
    walk.shot("06_retrain_banana_grading")
    walk.run_from("ui.continue_when_labeled(queue)")
    walk.wait_run_over(1800)
    walk.show_cell("ui.continue_when_labeled(queue)")
    walk.output_text("images of the queue handled", 30)
    walk.show_cell('results.check("gate passed"')
    walk.shot("06_retrain_banana_checks")


STEPS = {"01_setup_hub": step_01, "02_build_collector": step_02, "03_label_review": step_03, "04_train": step_04, "05_deploy": step_05,
         "06_retrain_banana": step_06}
