"""Small shared pieces for the notebook panels: HTML tables, JPEG/data-URL images, box drawing.

Pure functions (strings and arrays in, strings and arrays out) so panels stay thin and the
same rendering works headless.
"""
from __future__ import annotations

import base64
import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from IPython import get_ipython
from IPython.core.pylabtools import select_figure_formats

from helpers.geometry import BBox

# Matplotlib's tab10, the same colours jupyter_bbox_widget uses by default.
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def show_figures_inline() -> None:
    """Make matplotlib `Figure` objects display as PNG in a notebook; nothing outside IPython.

    The helpers build figures without pyplot (no global figure list, so a cell never shows a
    figure twice), and a plain kernel only shows such a figure as "<Figure size ...>" text until
    pyplot happens to set the inline backend up. Idempotent.
    """
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    select_figure_formats(shell, {"png"}, bbox_inches="tight")


def display_all(shown: Any) -> None:
    """Display what a `show()` callback returned: one object, a list of them (figures, widgets), or None."""
    from IPython.display import display

    for obj in shown if isinstance(shown, (list, tuple)) else [shown]:
        if obj is not None:
            display(obj)


def agent_words(code: Any, description: str | None = None) -> str:
    """The edge agent's last answer to a deployment in plain words: `accepted` (200), else
    `refused (406: ...)`; empty before any deployment."""
    if code is None or code == "":
        return ""
    try:
        ok = int(code) == 200
    except (TypeError, ValueError):
        ok = False
    if ok:
        return "accepted"
    return f"refused ({code}{': ' + description if description else ''})"


def label_color(label: str, labels: Sequence[str] = ()) -> str:
    """The hex colour of `label`: its position in `labels`, else a stable hash of the name."""
    if label in labels:
        return TAB10[list(labels).index(label) % len(TAB10)]
    return TAB10[sum(label.encode()) % len(TAB10)]


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def draw_boxes(rgb: np.ndarray, boxes: Iterable[BBox], labels: Sequence[str] = (), thickness: int = 2,
               show_labels: bool = True) -> np.ndarray:
    """A copy of `rgb` with `boxes` drawn (colour per label, label text on top)."""
    out = np.ascontiguousarray(rgb.copy())
    for b in boxes:
        color = _hex_to_rgb(label_color(b.label, labels))
        x0, y0 = int(round(b.x)), int(round(b.y))
        x1, y1 = int(round(b.x + b.width)), int(round(b.y + b.height))
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness)
        if show_labels:
            text = b.label if b.value is None else f"{b.label} {b.value:.2f}"
            cv2.putText(out, text, (x0 + 2, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = 90, max_side: int | None = None) -> bytes:
    """RGB array -> JPEG bytes (optionally shrunk so the longer side is at most `max_side`)."""
    img = rgb
    if max_side is not None and max(img.shape[:2]) > max_side:
        scale = max_side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, int(img.shape[1] * scale)), max(1, int(img.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {rgb.shape} as JPEG")
    return buf.tobytes()


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    """`data:image/jpeg;base64,...` for an <img> or jupyter_bbox_widget's `image`."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


# A value this long may wrap anywhere (a deployment name, a connection string); shorter ones never
# wrap, so a narrow output area scrolls the table instead of breaking "device" into "devi / ce".
WRAP_OVER = 24


def cell_style(text: str) -> str:
    """CSS for a table cell holding `text`: short values on one line, long ones may break anywhere."""
    return "overflow-wrap:anywhere" if len(text) > WRAP_OVER else "white-space:nowrap"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return ""
    return str(value)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
               styles: Sequence[Mapping[str, str]] | None = None, caption: str | None = None) -> str:
    """An escaped HTML table of dict rows.

    Args:
        rows: one dict per row.
        columns: column order (default: keys of the first row, then new keys as they appear).
        styles: per row, optional CSS per column (`{"status": "color:#c00"}`).
        caption: optional caption.
    """
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    head = "".join(f"<th style='text-align:left;padding:2px 8px;white-space:nowrap'>{html.escape(str(c))}</th>"
                   for c in columns)
    body = []
    for i, r in enumerate(rows):
        style = styles[i] if styles is not None and i < len(styles) else {}
        cells = "".join(
            f"<td style='padding:2px 8px;{cell_style(_cell(r.get(c)))};{html.escape(style.get(c, ''), quote=True)}'>"
            f"{html.escape(_cell(r.get(c)))}</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    # Wrapped so a wide table (the rollout board's ten columns) scrolls inside the output area
    # instead of overflowing the notebook's width; only long values (deployment names) may break
    # (`cell_style`): a table-wide word-break let the browser squeeze every column to a few letters.
    return (f"<div style='max-width:100%;overflow-x:auto'><table style='border-collapse:collapse'>"
            f"{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


# A view that keeps the output after it (a live plot) in the window while its cell runs: during
# Run All JupyterLab scrolls to the notebook's last cell, so a live plot in a cell above (04's
# training) would be drawn off-screen. It follows the plot at each update (`follow`) until the
# person scrolls, clicks or types, and only while `until` (seconds since the epoch) has not
# passed, so opening a saved notebook later does not jump to it.
_IN_VIEW_ESM = r"""
function render({ model, el }) {
  el.style.height = "0px";
  let moved = false;
  const person = () => { moved = true; };
  const events = ["wheel", "pointerdown", "keydown", "touchstart"];
  setTimeout(() => events.forEach((e) => document.addEventListener(e, person, true)), 300);
  const go = () => {
    if (moved || !(Date.now() / 1000 < model.get("until"))) return;
    const child = el.closest(".jp-OutputArea-child");
    const target = (child && child.nextElementSibling) || child || el;
    target.scrollIntoView({ block: target.offsetHeight > 40 ? "center" : "start" });
  };
  requestAnimationFrame(() => setTimeout(go, 50));
  model.on("change:tick", () => requestAnimationFrame(go));
  return () => events.forEach((e) => document.removeEventListener(e, person, true));
}
export default { render };
"""
_IN_VIEW_CLASS: Any = None


def bring_into_view(seconds: float = 60.0) -> Any:
    """An invisible widget that scrolls what is displayed after it (a live plot) into the window when
    drawn, and again at each `follow()` call, for `seconds` after the last call and until the person
    scrolls; display it just before the plot."""
    global _IN_VIEW_CLASS
    if _IN_VIEW_CLASS is None:
        import anywidget  # only where a live view is shown: the pure helpers above do not need it
        import traitlets

        class InView(anywidget.AnyWidget):
            _esm = _IN_VIEW_ESM
            until = traitlets.Float(0.0).tag(sync=True)
            tick = traitlets.Int(0).tag(sync=True)

            def follow(self, seconds: float = 60.0) -> None:
                """The plot below changed: bring it into the window again (unless the person scrolled)."""
                self.until = time.time() + seconds
                self.tick += 1

        _IN_VIEW_CLASS = InView
    return _IN_VIEW_CLASS(until=time.time() + seconds)
