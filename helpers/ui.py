"""Notebook displays: tables, panels and plots. Each function renders; none holds loop logic.

Every panel here has a headless path: it renders once and returns the numbers, so a papermill
run never waits for a click.
"""
from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import ipywidgets as w
import numpy as np
import requests
from IPython.display import Markdown, display
from matplotlib.figure import Figure

from helpers.config import REPO_ROOT, mask, mask_connection_string
from helpers.geometry import BBox
from helpers.protocol.joblog import parse_epoch_line
from helpers.widgets import agent_words, bring_into_view, cell_style, display_all, show_figures_inline

show_figures_inline()  # the figures below are pyplot-free `Figure`s: show them as PNG

# --------------------------------------------------------------------------- generic
PROGRESS_ENV = "EDGELOOP_PROGRESS_FILE"


def report_progress(line: str) -> None:
    """Tell a headless pipeline what a long step is doing (one line, shown in its terminal).

    The pipeline names the file in EDGELOOP_PROGRESS_FILE; interactively nothing is written
    (the notebook's own progress displays are what a person watches).
    """
    target = os.environ.get(PROGRESS_ENV)
    if not target:
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"line": line, "at": time.time()}))
        os.replace(tmp, path)
    except OSError:  # the pipeline's out folder went away: progress is a nicety, the step goes on
        tmp.unlink(missing_ok=True)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An HTML table of `rows` (dicts); values are escaped and masked."""
    if not rows:
        return "<p><i>(nothing yet)</i></p>"
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th style='text-align:left;padding:2px 8px;white-space:nowrap'>{html.escape(str(c))}</th>"
                   for c in columns)
    values = [[mask(str(r.get(c, ""))) for c in columns] for r in rows]
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px;{cell_style(v)}'>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in values
    )
    # scrolls inside the output area when wider than it; only long values may break (cell_style)
    return (f"<div style='max-width:100%;overflow-x:auto'><table>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A fixed-width text table (deterministic output for nbval)."""
    if not rows:
        return "(nothing)"
    columns = list(columns or rows[0].keys())
    cells = [[str(c) for c in columns]] + [[mask(str(r.get(c, ""))) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def show_file(path: str | Path, language: str | None = None) -> None:
    """Display a repository file as a highlighted code block."""
    p = Path(path)
    if not p.is_absolute():
        p = REPO_ROOT / p
    lang = language or {".sh": "sh", ".py": "python", ".json": "json"}.get(p.suffix, "dockerfile")
    # The title is the name relative to the repository: an absolute path would put this
    # machine's folders into the notebook's outputs.
    try:
        name = p.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        name = p.name
    display(Markdown(f"**{name}**\n```{lang}\n{mask(p.read_text())}\n```"))


def show_now(show: Callable[[], Any]) -> None:
    """Run `show()` and display what it returns, now: the headless twin of `LabelPanel.when_done`.

    A notebook writes the cells below the labeling step once: `after_labeling(show)` is
    `panel.when_done` when a person labels (the cell waits for the queue) and `show_now` when
    the oracle labeled already.
    """
    display_all(show())


class StillLabeling(Exception):
    """Raised by `continue_when_labeled` to stop a Run All before cells that need the labels.

    IPython shows its message alone (`_render_traceback_`), not a traceback: it is an instruction,
    not a failure.
    """

    def _render_traceback_(self) -> list[str]:
        return [str(self)]


def continue_when_labeled(queue: Any) -> None:
    """Go on when the labeling queue is done; else stop the Run All here, saying what to do.

    The cells below a labeling panel that need the labels (training) cannot wait in the kernel:
    the panel's own clicks are handled there. So this stops the run, and the person runs the
    cells from here on once the queue is done.

    Raises:
        StillLabeling: images are still waiting in the panel (the message says how many).
    """
    n = len(queue)
    if n:
        raise StillLabeling(
            f"waiting for {n} label{'s' if n != 1 else ''}: label them in the panel above; when the queue is done, "
            "click this cell and run it and the ones below (Run > Run Selected Cell and All Below)")
    print(f"all {queue.progress().total} images of the queue handled: the cells below use the labels")


def show_json(obj: Any) -> None:
    """Display a JSON document (masked) as a code block."""
    display(Markdown("```json\n" + mask(json.dumps(obj, indent=2, default=str)) + "\n```"))


def jpeg_data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def draw_boxes(rgb: np.ndarray, boxes: Iterable[BBox], color: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """A copy of `rgb` with labelled boxes drawn on it."""
    out = rgb.copy()
    for b in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in b.xyxy)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
        text = b.label if b.value is None else f"{b.label} {b.value:.2f}"
        cv2.putText(out, text, (x0 + 2, max(y0 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------- fleet


def device_rows(hub: Any, device_ids: Sequence[str]) -> list[dict[str, Any]]:
    """One row per device: identity, tags, connection and its masked connection string."""
    rows = []
    for d in device_ids:
        dev = hub.get_device(d)
        status = hub.device_status(d)
        rows.append({
            "device": d,
            "iot edge": dev.edge,
            "tags": ", ".join(f"{k}={v}" for k, v in sorted(dev.tags.items())),
            "online": status.connected,
            "connection string": mask_connection_string(hub.connection_string(d)),
        })
    return rows


def device_table(hub: Any, device_ids: Sequence[str]):
    """An HTML widget of `device_rows`."""
    return w.HTML(html_table(device_rows(hub, device_ids)))


def install_commands(hub: Any, device_id: str) -> str:
    """The commands that turn a Raspberry Pi (Raspberry Pi OS / Debian 11 or 12) into this IoT Edge device.

    The connection string is shown masked; copy the real one from `hub.connection_string(id)`
    with `.get_secret_value()` in a private cell, never into a saved output.
    """
    cs = mask_connection_string(hub.connection_string(device_id))
    return f"""# On the device ({device_id}), Debian 12 "bookworm" (use 11 for bullseye):
curl https://packages.microsoft.com/config/debian/12/packages-microsoft-prod.deb > packages-microsoft-prod.deb
sudo apt-get install ./packages-microsoft-prod.deb && rm packages-microsoft-prod.deb
sudo apt-get update && sudo apt-get install -y moby-engine aziot-edge
sudo iotedge config mp --connection-string '{cs}'
sudo iotedge config apply
sudo iotedge system status && sudo iotedge list"""


def module_rows(hub: Any, device_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Per device and module: runtime status, restarts, version, host port, and whether the
    device's agent accepted the last deployment (`agent_words`: accepted / refused (code: why))."""
    rows = []
    for d in device_ids:
        st = hub.device_status(d)
        answer = agent_words(st.last_desired_status, getattr(st, "last_desired_description", None))
        if not st.modules:
            rows.append({"device": d, "online": st.connected, "module": "-", "status": "-", "restarts": "",
                         "version": "", "port": "", "deployment": answer})
        for name, m in sorted(st.modules.items()):
            rows.append({"device": d, "online": st.connected, "module": name, "status": m.runtime_status,
                         "restarts": m.restart_count, "version": m.version, "port": m.host_port,
                         "deployment": answer})
    return rows


# --------------------------------------------------------------------------- collection


def sample_counts(studio: Any, device_ids: Sequence[str], label: str | None = None) -> dict[str, int]:
    """Samples in the studio per device (optionally only those uploaded with `label`)."""
    counts = {d: 0 for d in device_ids}
    for s in studio.samples():
        dev = s.device or s.metadata.get("device")
        if dev in counts and (label is None or s.label == label or s.metadata.get("collect_label") == label):
            counts[dev] += 1
    return counts


class CollectionPanel:
    """Per device: collector status, samples uploaded, and the newest thumbnails."""

    def __init__(self, hub: Any, studio: Any, device_ids: Sequence[str], label: str | None = None, thumbs: int = 6,
                 expected: Mapping[str, int] | None = None):
        self.hub, self.studio, self.device_ids, self.label, self.thumbs = hub, studio, list(device_ids), label, thumbs
        self.expected = dict(expected or {})  # device -> images asked for: "37 of 60 asked for"
        self.status = w.HTML()
        self.strip = w.HTML()
        self.widget = w.VBox([self.status, self.strip])

    def refresh(self) -> dict[str, int]:
        counts = sample_counts(self.studio, self.device_ids, self.label)
        def images(d: str) -> Any:
            n = counts.get(d, 0)
            return f"{n} of {self.expected[d]} asked for" if d in self.expected else n

        rows = [dict(r, samples=images(r["device"])) for r in module_rows(self.hub, self.device_ids)]
        self.status.value = html_table(rows)
        newest = sorted(self.studio.samples(), key=lambda s: s.id)[-self.thumbs:]
        imgs = "".join(
            f"<img src='{jpeg_data_url(self.studio.get_image(s.id))}' title='{html.escape(s.filename)}' "
            "style='width:96px;margin:2px'>" for s in newest
        )
        self.strip.value = imgs
        return counts


def wait_for_samples(studio: Any, expected: Mapping[str, int], label: str | None = None, timeout: float = 300,
                     on_poll: Callable[[], Any] | None = None, poll_s: float = 1.0) -> dict[str, int]:
    """Wait until each device has uploaded at least `expected[device]` samples.

    Raises:
        TimeoutError: naming the devices that fell short and their counts.
    """
    deadline = time.monotonic() + timeout
    while True:
        counts = sample_counts(studio, list(expected), label)
        if on_poll:
            on_poll()
        report_progress("collecting " + (f"{label} " if label else "") + "images: "
                        + ", ".join(f"{d} {min(counts[d], n)}/{n}" for d, n in expected.items()))
        if all(counts[d] >= n for d, n in expected.items()):
            return counts
        if time.monotonic() > deadline:
            short = {d: f"{counts[d]}/{n}" for d, n in expected.items() if counts[d] < n}
            raise TimeoutError(f"samples still missing after {timeout:.0f} s: {short}; check the collector module logs "
                               "under WORKSPACE/devices/<id>/modules/collector/")
        time.sleep(poll_s)


# --------------------------------------------------------------------------- training


class LivePlot:
    """Loss and validation F1 per epoch, redrawn in place (works headless: the last frame stays)."""

    def __init__(self, title: str = "training", epochs: int | None = None):
        self.title, self.history, self._handle, self.epochs = title, [], None, epochs
        self._view: Any = None

    def __call__(self, row: Mapping[str, Any]) -> None:
        self.history.append(dict(row))
        of = f"/{self.epochs}" if self.epochs else ""
        report_progress(f"training {self.title}: epoch {row.get('epoch')}{of}, loss {row.get('loss', float('nan')):.3f}, "
                        f"validation F1 {row.get('val_f1', float('nan')):.3f}, {row.get('elapsed_s', 0):.0f} s")
        fig = self.figure()
        if self._handle is None:
            self._view = bring_into_view()  # Run All left the window at the notebook's end: show the plot
            display(self._view)
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
            self._view.follow()

    def figure(self):
        fig = Figure(figsize=(9, 3))
        ax = fig.subplots(1, 2)
        ep = [h.get("epoch") for h in self.history]
        ax[0].plot(ep, [h.get("loss") for h in self.history], marker=".")
        ax[0].set(title="training loss", xlabel="epoch")
        ax[1].plot(ep, [h.get("val_f1") for h in self.history], marker=".", color="tab:green")
        ax[1].set(title="validation F1@0.5", xlabel="epoch", ylim=(0, 1.02))
        fig.suptitle(self.title)
        fig.tight_layout()
        return fig


class JobLog:
    """A studio training job's log as the notebook's progress view (`Studio.train(on_log=...)`).

    The local job's epoch lines (`helpers.protocol.joblog.format_epoch_line`) become the
    records `LivePlot` draws (and reports to a headless pipeline's terminal); every other line,
    and every line of an Edge Impulse job (its own log format), is printed as text and reported.
    """

    def __init__(self, plot: LivePlot | None = None):
        self.plot, self.lines, self.records = plot, [], []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        rec = parse_epoch_line(line)
        if rec is not None and self.plot is not None:
            self.records.append(rec)
            self.plot(rec)
            return
        print(line, flush=True)
        if line.strip():
            report_progress(f"training job: {line.strip()[:160]}")


def metrics_rows(report: Any) -> list[dict[str, Any]]:
    """Per-class and overall P/R/F1@0.5 and AP rows of an evaluation report (rounded for display)."""
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    rows = []
    for name, m in list(d["per_class"].items()) + [("overall", d["overall"])]:
        rows.append({"class": name, "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
                     "f1": round(m["f1"], 3), "ap50": "" if m.get("ap50") is None else round(m["ap50"], 3)})
    return rows


def plot_confusion(report: Any):
    """The confusion matrix with its background row and column."""
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    conf = d["confusion"]
    names, matrix = conf["names"], np.array(conf["matrix"])
    fig = Figure(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.5))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (IoU 0.5)")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, int(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    fig.tight_layout()
    return fig


def plot_predictions(detector: Any, items: Sequence[tuple[np.ndarray, list[BBox]]], n: int = 8, cols: int = 4):
    """Test images with true boxes (blue) and predicted boxes (green)."""
    items = list(items)[:n]
    rows = max(1, (len(items) + cols - 1) // cols)
    fig = Figure(figsize=(3 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (rgb, truth) in zip(axes.flat, items):
        img = draw_boxes(rgb, truth, (40, 90, 255))
        img = draw_boxes(img, detector.detect(rgb), (0, 220, 0))
        ax.imshow(img)
    fig.suptitle("blue: true boxes, green: predictions")
    fig.tight_layout()
    return fig


def image_features(rgb: np.ndarray, size: int = 24) -> np.ndarray:
    """A small feature vector of an image: a downscaled colour thumbnail plus an HSV hue histogram."""
    thumb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() / 255.0
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [18, 4], [0, 180, 0, 256]).ravel()
    return np.concatenate([thumb, 4 * hist / max(hist.sum(), 1.0)])


def feature_explorer(items: Sequence[tuple[np.ndarray, list[BBox]]], seed: int = 0):
    """Each sample's features projected to 2-D (PCA then t-SNE), coloured by its main class.

    Edge Impulse shows this after "Generate features": clusters say the classes are separable,
    outliers are often labeling mistakes.
    """
    # scikit-learn (about 3 s to import) only for this view, not for every notebook that imports ui
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    feats = np.stack([image_features(rgb) for rgb, _ in items])
    classes = [max({b.label for b in boxes}, key=lambda c: sum(b.label == c for b in boxes)) if boxes else "(none)"
               for _, boxes in items]
    reduced = PCA(n_components=min(30, len(items) - 1, feats.shape[1]), random_state=seed).fit_transform(feats)
    perplexity = max(2.0, min(30.0, (len(items) - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(reduced)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for c in sorted(set(classes)):
        sel = [i for i, k in enumerate(classes) if k == c]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, label=c)
    ax.set(title="feature explorer (t-SNE of image features)", xticks=[], yticks=[])
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- runner pages


def runner_urls(hub: Any, device_ids: Sequence[str], module: str = "runner", host: str = "127.0.0.1") -> dict[str, str | None]:
    """The port-4912 page of each device's runner (local runtime: the mapped host port)."""
    urls: dict[str, str | None] = {}
    for d in device_ids:
        m = hub.device_status(d).modules.get(module)
        urls[d] = f"http://{host}:{m.host_port}/" if m and m.host_port else None
    return urls


def get_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET a JSON document (the runner's API)."""
    r = requests.get(url, timeout=timeout)
    r.raise_for_status()
    return r.json()
