"""Executed notebooks open in a real JupyterLab with their widgets drawn as views, not as text.

The reference runs in `tests/notebooks/reference/` (executed by `make notebooks`; papermill
stores the widget state in each notebook's metadata) are copied to a temporary folder and
trusted there the two ways a person's notebooks get trusted: `jupyter trust` (what `make lab`
runs on `notebooks/`) for 01-03 and the pipeline's own `sign_notebook` for 04-06, in a notary
database of the test's own (`JUPYTER_DATA_DIR`). JupyterLab starts on 127.0.0.1 with its own
port, token and settings: cell windowing off (`windowingMode: none`), so every cell is in the
page and not only the ones on screen. The system Chromium, driven by Playwright, opens each
notebook; once its kernel is connected the test checks, per notebook, that

- every output the reference saved as a widget view is a rendered view (`.jupyter-widgets`),
- the views a person reads are there with their content: the device table (01), the
  collection panel (02), the rollout board (05), and every progress bar the file saved (the
  training bars of 04 and 06 in today's references) as a bar with its percentage and count,
- no output shows the text a view falls back to (`HTML(value=...`, `VBox(children=...`,
  `IntProgress(`, tqdm's `0%|          | 0/40`, `<Figure size ...>`), and no check cell ends
  in a stray `Out[n]: True`.

A copy of notebook 01 left untrusted must show the device table as `HTML(value=...` text: the
same probe that passes on the trusted copies sees the failure the issue describes.

The labeling panel needs a live kernel and a person (the reference run labels with the
oracle): `test_lab_labeling_browser.py` renders and drives it in the same way. `make
screenshots` runs both; this test's screenshots (one per view, and the untrusted control)
land in `out/lab_widgets/` (git-ignored).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lab_server import CHROME_ARGS, CHROMIUM, start_lab, stop

pytestmark = [pytest.mark.timeout(360), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "notebooks" / "reference"
SHOTS = REPO / "out" / "lab_widgets"
try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # the [test] extra pins it; a bare install may lack it
    sync_playwright = None
try:
    import jupyterlab  # noqa: F401
except ImportError:
    jupyterlab = None

TRUSTED_BY_JUPYTER_TRUST = ["01_setup_hub", "02_build_collector", "03_label_review"]
SIGNED_BY_PIPELINE = ["04_train", "05_deploy", "06_retrain_banana"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# The views a person reads, by notebook: (what, a piece of the cell's source that finds the cell,
# a CSS selector inside its output, text the view shows).
VIEWS = {
    "01_setup_hub": [("device table", "ui.device_table(", ".widget-html table", "pi-1")],
    "02_build_collector": [("collection panel", "CollectionPanel(", ".widget-vbox .widget-html table", "samples")],
    "05_deploy": [("rollout board", "RolloutBoard(", ".widget-html table", "reported")],
}
# Progress bars are found from the file: every output saved as a tqdm bar (its text/plain is
# `train ...:   0%|          | 0/30 [...]`) must be drawn as a bar with its count.
TQDM_TEXT = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
# What an output shows when its view is not drawn: the widget's repr, tqdm's text bar, a figure's repr.
FALLBACK = re.compile(r"\b(HTML|VBox|HBox|Output|Image)\(|\b(Int|Float)Progress\(|\d+%\|[^\n]*\|\s*\d+/\d+|<Figure size")

# Per cell of the open notebook: its source, and per output area its text, classes and views.
CELLS_JS = """() => jupyterapp.shell.currentWidget.content.widgets.map((w, i) => ({
  index: i, type: w.model.type, source: w.model.sharedModel.getSource(),
  inPage: document.body.contains(w.node),
  outputs: Array.from(w.node.querySelectorAll('.jp-OutputArea-child')).map(child => {
    const out = child.querySelector('.jp-OutputArea-output');
    return {text: out ? out.innerText : '', classes: out ? out.className : '',
            result: child.classList.contains('jp-OutputArea-executeResult'),
            views: out ? out.querySelectorAll('.jupyter-widgets').length : 0};
  })}))"""


def invisible(model: dict) -> bool:
    """`helpers.widgets.bring_into_view`'s widget: zero pixels high, it scrolls the live plot below
    it into the window while a kernel runs; nothing a person reads, so no view to look for."""
    return model.get("state", {}).get("_anywidget_id") == "helpers.widgets.InView"


def saved_views(path: Path) -> dict[str, list[str]]:
    """Per code cell source, the text/plain of each output the file saved as a widget view."""
    nb = json.loads(path.read_text())
    state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    found = {}
    for cell in nb["cells"]:
        views = ["".join(o["data"].get("text/plain", "")) for o in cell.get("outputs", []) if WIDGET_MIME in o.get("data", {})
                 and not invisible(models.get(o["data"][WIDGET_MIME].get("model_id"), {}))]
        if views:
            found["".join(cell["source"])] = views
    if found:
        assert state.get("state"), f"{path.name} holds widget views but no saved widget state (rerun `make notebooks`)"
    return found


def lab_env(tmp: Path) -> dict[str, str]:
    """Everything Jupyter keeps (the notary's database and key, settings) in the test's own folders."""
    return {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "jcfg"), "JUPYTER_DATA_DIR": str(tmp / "jdata"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "jrt"), "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-ws"), "EDGELOOP_WORKSPACE": str(tmp / "workspace"),
            "PYTHONUNBUFFERED": "1"}


def write_settings(settings: Path) -> None:
    """No news or update checks, and no cell windowing: every cell is drawn, not only those on screen."""
    for plugin, values in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                           ("notebook-extension/tracker", {"windowingMode": "none"})):
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def open_notebook(page, name: str, views: int) -> list[dict]:
    """Open `name` in the running app (the last one is closed first), wait for its kernel and for
    `views` widget views; the cells as CELLS_JS reads them."""
    page.evaluate("""async path => {
      const w = jupyterapp.shell.currentWidget;
      if (w && w.context) { await w.sessionContext.shutdown(); w.context.model.dirty = false; w.dispose(); }
      await jupyterapp.commands.execute('docmanager:open', {path});
    }""", f"{name}.ipynb")
    page.wait_for_function(
        "path => { const w = jupyterapp.shell.currentWidget;"
        " return w && w.context && w.context.path === path && w.context.isReady; }", arg=f"{name}.ipynb", timeout=120_000)
    # what a person gets: the kernel starts and connects; the saved views must survive that
    page.wait_for_function("() => { const k = jupyterapp.shell.currentWidget.sessionContext.session?.kernel;"
                           " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }", timeout=120_000)
    if views:
        try:
            page.wait_for_function(
                "n => jupyterapp.shell.currentWidget.node.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length >= n",
                arg=views, timeout=60_000)
        except PlaywrightTimeout:  # the assertions below say which output is text instead
            print(f"{name}: fewer than {views} widget views after 60 s")
    return page.evaluate(CELLS_JS)


def start_app(page, base: str, token: str) -> None:
    page.goto(f"{base}/lab?token={token}", timeout=120_000)
    page.wait_for_function("() => window.jupyterapp && jupyterapp.started && jupyterapp.restored", timeout=120_000)
    page.evaluate("async () => { await jupyterapp.started; await jupyterapp.restored; }")
    page.evaluate("() => jupyterapp.commands.execute('application:toggle-left-area')")


def shoot_cell(page, index: int, path: Path) -> None:
    cell = page.evaluate_handle("i => jupyterapp.shell.currentWidget.content.widgets[i].node", index).as_element()
    cell.scroll_into_view_if_needed()
    cell.screenshot(path=str(path))


def wrapped_cells(page) -> list[str]:
    """Draw the device table and a ten-column rollout board, as the helpers write them, in an
    800 px column; the header and short cells that wrap onto a second line (none may)."""
    from helpers import ui
    from helpers.deploy.board import COLUMNS
    from helpers.widgets import html_table

    device = [{"device": f"pi-{i}", "iot edge": True, "tags": "camera=usb, hardware=raspberry-pi-4, lab=fruit-lab",
               "online": True, "connection string": f"HostName=127.0.0.1;DeviceId=pi-{i};SharedAccessKey=abc"}
              for i in (1, 2)]
    board = [{c: v for c, v in zip(COLUMNS, (f"pi-{i}", True, "fruit-v2-apple-banana-deployment", 3, 3, 200,
                                              "runner", "running", "1.0", 1, 0, 48507, 6.8, "converged"))}
             for i in (1, 2)]
    page.set_content(f"<body style='font:13px sans-serif'><div style='width:800px'>{ui.html_table(device)}"
                     f"{html_table(board, columns=COLUMNS, caption='rollout')}</div></body>")
    return page.evaluate("""() => Array.from(document.querySelectorAll('th, td')).flatMap(cell => {
      const text = cell.innerText.trim();
      if (!text || text.length > 24) return [];
      const range = document.createRange(); range.selectNodeContents(cell);
      const lines = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top))).size;
      return lines > 1 ? [`table cell ${JSON.stringify(text)} wraps onto ${lines} lines`] : [];
    })""")


def fallbacks(cells: list[dict]) -> list[str]:
    return [f"cell {c['index']}: {m.group(0)!r} in {o['text'][:120]!r}"
            for c in cells for o in c["outputs"] for m in [FALLBACK.search(o["text"])] if m]


@pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium: apt-get install chromium (make system does it as root)")
@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e .[test])")
@pytest.mark.skipif(jupyterlab is None, reason="jupyterlab is not installed (pip install -e .[test])")
def test_widgets_render_as_views_in_jupyterlab(tmp_path):
    names = TRUSTED_BY_JUPYTER_TRUST + SIGNED_BY_PIPELINE
    missing = [n for n in names if not (REFERENCE / f"{n}.ipynb").exists()]
    assert not missing, f"reference notebooks missing: {missing} (make notebooks writes them)"
    expected = {n: saved_views(REFERENCE / f"{n}.ipynb") for n in names}
    for name, views in VIEWS.items():
        for what, snippet, _, _ in views:
            assert any(snippet in src for src in expected[name]), (
                f"{name}: the reference saved no widget view for the {what} (a cell with {snippet!r}); "
                "rerun `make notebooks`")

    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    for n in names:
        shutil.copy(REFERENCE / f"{n}.ipynb", nbdir)
    # the control: notebook 01 with one metadata key more (the notary keeps hashes, not paths: an
    # identical copy of a trusted notebook is trusted too)
    control = json.loads((REFERENCE / "01_setup_hub.ipynb").read_text())
    control["metadata"]["edgeloop_control"] = "left untrusted"
    (nbdir / "untrusted_01_setup_hub.ipynb").write_text(json.dumps(control, indent=1))
    env = lab_env(tmp_path)
    write_settings(tmp_path / "lab-settings")
    subprocess.run([sys.executable, "-m", "jupyter", "trust", *[str(nbdir / f"{n}.ipynb") for n in TRUSTED_BY_JUPYTER_TRUST]],
                   env=env, check=True, capture_output=True, timeout=120)
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from helpers.pipeline import sign_notebook;"
                    " [sign_notebook(Path(p)) for p in sys.argv[1:]]",
                    *[str(nbdir / f"{n}.ipynb") for n in SIGNED_BY_PIPELINE]],
                   env=env, check=True, capture_output=True, timeout=120, cwd=REPO)
    if SHOTS.exists():
        for old in SHOTS.glob("*.png"):
            old.unlink()
    SHOTS.mkdir(parents=True, exist_ok=True)

    proc, base, token = start_lab(nbdir, tmp_path, env)
    errors: list[str] = []
    problems: list[str] = []
    progress_bars = 0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            start_app(page, base, token)

            # the control first: untrusted, the device table is text, and the probe sees it
            cells = open_notebook(page, "untrusted_01_setup_hub", 0)
            (table,) = [c for c in cells if "ui.device_table(" in c["source"]]
            shoot_cell(page, table["index"], SHOTS / "untrusted_01_setup_hub_device_table.png")
            assert not any(o["views"] for o in table["outputs"]), "an untrusted notebook drew a widget view"
            assert any("HTML(value=" in o["text"] for o in table["outputs"]), table["outputs"]
            assert fallbacks(cells), "the probe did not see the untrusted notebook's text fallback"

            for name in names:
                n_views = sum(len(v) for v in expected[name].values())
                cells = open_notebook(page, name, n_views)
                if any("model not found" in o["text"] for c in cells for o in c["outputs"]):
                    # jupyterlab-manager restores saved views before the kernel connects; once in ~10 suite
                    # runs (4 workers on 2 cores) the kernel's arrival cleared them first: "Error displaying
                    # widget: model not found" (upstream: jupyterlab/jupyterlab#15361). What a person does
                    # then, once: close and open the notebook again. A second miss fails below.
                    print(f"{name}: 'model not found' on opening, opened once more")
                    cells = open_notebook(page, name, n_views)
                assert all(c["inPage"] for c in cells), f"{name}: cells missing from the page (windowing is on)"
                by_source = {c["source"]: c for c in cells}
                # every output the reference saved as a widget view is drawn as one
                for source, saved in expected[name].items():
                    cell = by_source.get(source)
                    if cell is None:
                        problems.append(f"{name}: a cell of the file is not in the page: {source[:60]!r}")
                        continue
                    drawn = [o for o in cell["outputs"] if o["views"]]
                    if len(drawn) < len(saved):
                        problems.append(f"{name} cell {cell['index']}: {len(drawn)} of {len(saved)} widget views drawn; "
                                        f"outputs: {[o['text'][:80] for o in cell['outputs']]}")
                    bars = sum(1 for text in saved if TQDM_TEXT.search(text))
                    if bars:  # drawn as bars, with their percentage and count
                        shown = page.evaluate(
                            "i => Array.from(jupyterapp.shell.currentWidget.content.widgets[i].node"
                            ".querySelectorAll('.jp-OutputArea-output .widget-hprogress'))"
                            ".map(e => e.closest('.jp-OutputArea-output').innerText)", cell["index"])
                        ok = [t for t in shown if re.search(r"\d+%", t) and re.search(r"\d+/\d+", t)]
                        if len(ok) < bars:
                            problems.append(f"{name} cell {cell['index']}: {len(ok)} of {bars} progress bars drawn "
                                            f"with their count; found {[t[:80] for t in shown]}")
                        progress_bars += len(ok)
                        shoot_cell(page, cell["index"], SHOTS / f"{name}_progress_bar_cell{cell['index']}.png")
                # the views a person reads, with their content, screenshotted
                for what, snippet, selector, text in VIEWS.get(name, []):
                    (cell,) = [c for c in cells if snippet in c["source"]]
                    found = page.evaluate(
                        "([i, sel]) => Array.from(jupyterapp.shell.currentWidget.content.widgets[i].node"
                        ".querySelectorAll('.jp-OutputArea-output ' + sel)).map(e => e.closest('.jp-OutputArea-output').innerText)",
                        [cell["index"], selector])
                    if not any(text in t for t in found):
                        problems.append(f"{name}: the {what} is not drawn ({selector} showing {text!r}); "
                                        f"found {[t[:80] for t in found]}")
                    shoot_cell(page, cell["index"], SHOTS / f"{name}_{what.replace(' ', '_')}.png")
                problems += [f"{name} {p}" for p in fallbacks(cells)]
                problems += [f"{name} cell {c['index']}: stray Out[] {o['text']!r}" for c in cells for o in c["outputs"]
                             if o["result"] and o["text"].strip() in ("True", "False")]
                if name == "03_label_review":  # no widgets in the oracle run, but its figures are images
                    images = page.evaluate("() => jupyterapp.shell.currentWidget.node"
                                           ".querySelectorAll('.jp-OutputArea-output.jp-RenderedImage img').length")
                    if images < 3:
                        problems.append(f"03_label_review: {images} figures drawn as images, expected >= 3")
            page.evaluate("() => jupyterapp.shell.currentWidget.sessionContext.shutdown()")

            # the tables as today's helpers write them (the references hold the HTML of their run)
            table_page = browser.new_page(viewport={"width": 900, "height": 600})
            problems += wrapped_cells(table_page)
            table_page.screenshot(path=str(SHOTS / "tables_at_900px.png"), full_page=True)
            browser.close()
    finally:
        stop(proc)
    assert not problems, "\n".join(problems)
    print(f"drawn as views: {', '.join(w for v in VIEWS.values() for w, *_ in v)}, {progress_bars} progress bars")
    widget_errors = [e for e in errors if "widget" in e.lower() or "anywidget" in e.lower()]
    assert not widget_errors, widget_errors
