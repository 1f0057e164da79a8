"""The label-review panel: a bounding-box widget over a `LabelQueue`.

Built on `jupyter_bbox_widget.BBoxWidget` plus a few ipywidgets and one small anywidget
(`PanelKeys`) that owns the keyboard. The panel only draws; every callback calls exactly one
`LabelQueue` method (`save`, `skip`, `delete`, `undo`, `select`, `add_label`, `refresh`) and
then redraws, so what a click does is the same as what a headless run does. The ground truth in
a synthetic sample's metadata is never shown.

Keyboard: while the pointer has been in the panel (a click anywhere on it, or on a button,
puts the focus on the image), every key stays in the panel: JupyterLab's notebook shortcuts
(D,D deletes a cell, A/B insert cells, ...) never see them. Esc gives the keys back.

| key | action |
|---|---|
| Enter | Save the boxes on screen |
| Space | Skip (the image stays in the queue) |
| U or Ctrl+Z | Undo the last save, skip or delete |
| 1..9, 0 | pick class 1..10 for the next box |
| Tab / Shift+Tab | select the next / previous box |
| Delete | delete the selected *box* |
| C | give the selected box the current class |
| W A S D | move the selected box (Shift: 10 px) |
| Q E / R F | narrower / wider, taller / shorter |
| Esc | leave the panel (keys go to JupyterLab again) |

Deleting the whole *frame* has no key on purpose: it is the "Delete frame" button, and Undo
brings the frame back. After every button the focus returns to the image, so Enter next
saves (it never presses the button again).

The image is shown scaled to the panel's width (up to about two thirds of the window's
height); box coordinates stay in the image's own pixels.
"""
from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from helpers.errors import DatasetError
from helpers.geometry import BBox
from helpers.labeling.queue import LabelQueue
from helpers.labeling.waiting import fill_output, progress_words, waiting_words
from helpers.widgets import data_url, draw_boxes, encode_jpeg

SHORTCUTS = (
    "Enter: save · Space: skip · U: undo · 1-9: class · Tab: next box · Delete: delete box · "
    "C: relabel box · WASD: move · QE/RF: resize · Esc: give the keys back to JupyterLab"
)

# The panel's keyboard and layout. JupyterLab (4.x) handles shortcuts in a keydown listener on
# the document, in the bubbling phase, and ignores targets under `data-lm-suppress-shortcuts`;
# stopping a key's propagation at the panel keeps it from JupyterLab.
_KEYS_ESM = r"""
const TEXT = "input, textarea, select, [contenteditable='true']";
function render({ model, el }) {
  el.style.display = "none";
  let root = null, tries = 0;
  const image = () => root && root.querySelector(".edgeloop-bbox .wrapper");
  const focusImage = () => {
    const w = image();
    if (w && w.offsetParent !== null) { w.focus({ preventScroll: true }); return true; }
    const next = root && Array.from(root.querySelectorAll(".edgeloop-next button:not([disabled])"))
      .find((b) => b.offsetParent !== null);
    if (next) { next.focus({ preventScroll: true }); return true; }
    if (root) { root.focus({ preventScroll: true }); return true; }  // the end of the queue: keys stay here
    return false;
  };
  // Widget state arrives through a promise chain and a custom message can overtake it: try
  // again for half a second, unless the person has gone elsewhere meanwhile.
  // The image hidden at the end of the queue and shown again ("Back to the skipped") keeps a 0x0
  // box overlay: the bbox widget measures its image through a hidden iframe's resize event, which
  // the iframe does not fire when it is shown again. So when the image comes back (a size
  // observer on it, and after each redraw), tell that iframe it was resized.
  let hidden = false;
  const wake = () => {
    if (!root) return;
    root.querySelectorAll(".edgeloop-bbox .image-measure iframe").forEach((f) => {
      if (f.contentWindow) f.contentWindow.dispatchEvent(new Event("resize"));
    });
    window.dispatchEvent(new Event("resize"));
  };
  const reflow = () => {
    const w = image(), now = !(w && w.offsetParent !== null);
    if (hidden && !now) wake();
    hidden = now;
  };
  const sizes = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    reflow();  // and when the overlay is not as large as the image it lies on:
    const svg = root && root.querySelector(".edgeloop-bbox svg"), img = root && root.querySelector(".edgeloop-bbox img");
    if (svg && img && img.clientWidth > 0 && Math.abs(svg.getBoundingClientRect().width - img.clientWidth) >= 2) wake();
  });
  const requestFocus = () => [0, 60, 200, 500].forEach((t) => setTimeout(() => {
    reflow();
    const a = document.activeElement, w = image();
    if (w && w.offsetParent !== null && a === w) return;
    if (a && a !== document.body && root && !root.contains(a)) return;
    focusImage();
  }, t));
  // ipywidgets holds back a model's state updates while one is in flight, and a custom message
  // overtakes them: a Save would store the boxes of one nudge ago. So a save carries the boxes
  // the image shows now, read from the bbox widget's model.
  let bboxModel = null;
  const bboxId = model.get("bbox_id");
  if (bboxId && model.widget_manager) model.widget_manager.get_model(bboxId).then((m) => { bboxModel = m; });
  const send = (action) => model.send(action === "save" && bboxModel
    ? { type: "key", action, bboxes: bboxModel.get("bboxes") } : { type: "key", action });
  const aspect = () => root && root.style.setProperty("--edgeloop-aspect", String(model.get("aspect") || 1));
  function capture(e) {
    if (e.ctrlKey && !e.metaKey && e.code === "KeyZ" && !e.target.closest(TEXT)) {
      e.preventDefault(); e.stopPropagation(); send("undo"); return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;  // Ctrl+S etc. stay JupyterLab's
    if (e.target.closest(TEXT)) return;                // typing a class name
    if (e.code === "Escape") {                         // leave the panel from a button too
      const w = image();
      if (!(w && w.contains(e.target)) && document.activeElement) document.activeElement.blur();
      return;
    }
    if (e.code === "Enter" || e.code === "NumpadEnter" || e.code === "Space" || e.code === "KeyU") {
      e.preventDefault(); e.stopPropagation();
      send(e.code === "KeyU" ? "undo" : e.code === "Space" ? "skip" : "save");
      return;
    }
    const w = image();
    if (w && !w.contains(e.target) && e.code !== "Escape" && e.code !== "Tab") {
      // a box key pressed with the focus on a button or the panel: give it to the image
      e.preventDefault(); e.stopPropagation();
      if (focusImage() && w === document.activeElement) {
        w.dispatchEvent(new KeyboardEvent("keydown", { code: e.code, key: e.key, shiftKey: e.shiftKey, bubbles: true }));
      }
    }
  }
  function bubble(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    e.stopPropagation();  // nothing typed in the panel reaches JupyterLab's shortcuts
  }
  function keyup(e) {
    const w = image();
    // the image tracks held keys (W+D moves diagonally): forward releases too
    if (w && !w.contains(e.target) && !e.target.closest(TEXT)) {
      w.dispatchEvent(new KeyboardEvent("keyup", { code: e.code, key: e.key, shiftKey: e.shiftKey, bubbles: true }));
    }
    if (!(e.ctrlKey || e.metaKey || e.altKey)) e.stopPropagation();
  }
  // The panel is "in use" from a pointer press in it until one elsewhere (or Esc). While in use,
  // a key that finds nothing focused (a button just hidden, a redraw) is the panel's too.
  let inUse = false;
  function pointer(e) { inUse = !!(root && root.contains(e.target)); }
  function orphan(e) {
    const a = document.activeElement;
    if (e.code === "Escape") { inUse = false; return; }  // Esc: the keys are JupyterLab's again
    if (!inUse || !root || !root.isConnected || (a && a !== document.body && a !== root)) return;
    if (e.altKey || e.metaKey || (e.ctrlKey && e.code !== "KeyZ")) return;
    e.preventDefault(); e.stopPropagation();
    focusImage();
    const action = { Enter: "save", NumpadEnter: "save", Space: "skip", KeyU: "undo", KeyZ: "undo" }[e.code];
    if (action) { send(action); return; }
    const w = image();
    if (w && w === document.activeElement) {
      w.dispatchEvent(new KeyboardEvent("keydown", { code: e.code, key: e.key, shiftKey: e.shiftKey, bubbles: true }));
    }
  }
  function saveClick(e) {
    if (!e.target.closest(".edgeloop-save")) return;
    e.preventDefault(); e.stopPropagation();  // the button's own click message could overtake the boxes
    send("save");
    requestFocus();
  }
  function click(e) {
    if (e.target.closest(TEXT)) return;
    // after a button or a click on the panel's text, the image has the focus: never the button
    requestFocus();
  }
  function attach() {
    root = el.closest(".edgeloop-label-panel");
    if (!root) { if (tries++ < 200) setTimeout(attach, 50); return; }
    root.setAttribute("data-lm-suppress-shortcuts", "true");
    if (!root.hasAttribute("tabindex")) root.setAttribute("tabindex", "-1");
    root.addEventListener("keydown", capture, true);
    root.addEventListener("keydown", bubble, false);
    root.addEventListener("keyup", keyup, false);
    root.addEventListener("click", click, false);
    root.addEventListener("click", saveClick, true);
    document.addEventListener("pointerdown", pointer, true);
    document.addEventListener("keydown", orphan, true);
    const bbox = root.querySelector(".edgeloop-bbox");
    if (sizes && bbox) sizes.observe(bbox);
    aspect();
  }
  attach();
  model.on("change:aspect", aspect);
  model.on("msg:custom", (msg) => { if (msg && msg.type === "focus") requestFocus(); });
  return () => {
    if (!root) return;
    root.removeEventListener("keydown", capture, true);
    root.removeEventListener("keydown", bubble, false);
    root.removeEventListener("keyup", keyup, false);
    root.removeEventListener("click", click, false);
    root.removeEventListener("click", saveClick, true);
    document.removeEventListener("pointerdown", pointer, true);
    document.removeEventListener("keydown", orphan, true);
    if (sizes) sizes.disconnect();
  };
}
export default { render };
"""

_PANEL_CSS = """
.edgeloop-label-panel .edgeloop-bbox .image-measure {
  display: block;
  width: min(100%, calc(62vh * var(--edgeloop-aspect, 1)));
}
.edgeloop-label-panel .edgeloop-bbox img { width: 100%; max-width: 100%; height: auto; }
/* room above and right of the image so a box's label tag and its x are never cut */
.edgeloop-label-panel .edgeloop-bbox .image { margin: 20px 72px 2px 0; }
.edgeloop-label-panel .edgeloop-bbox svg { overflow: visible; }
.edgeloop-label-panel .edgeloop-bbox svg text { font-size: 14px; }
.edgeloop-label-panel .edgeloop-bbox .classes { margin-bottom: 4px; }
.edgeloop-label-panel .edgeloop-bbox .wrapper:focus { outline: 2px solid #1976d2; outline-offset: 1px; }
"""


def _keys_widget_class() -> type:
    import anywidget
    import traitlets

    class PanelKeys(anywidget.AnyWidget):
        """Invisible: keeps the panel's keys out of JupyterLab, forwards Enter/Space/U, moves focus."""

        _esm = _KEYS_ESM
        _css = _PANEL_CSS
        aspect = traitlets.Float(1.0).tag(sync=True)
        bbox_id = traitlets.Unicode("").tag(sync=True)

    return PanelKeys


def boxes_to_widget(boxes: list[BBox]) -> list[dict[str, Any]]:
    """Boxes as the bbox widget's dicts (x, y, width, height, label; pixels, one decimal)."""
    return [{"x": round(b.x, 1), "y": round(b.y, 1), "width": round(b.width, 1), "height": round(b.height, 1),
             "label": b.label} for b in boxes]


def boxes_from_widget(items: list[dict[str, Any]]) -> list[BBox]:
    """The bbox widget's dicts as boxes (extra keys from attached widgets are ignored)."""
    return [BBox(str(d["label"]), float(d["x"]), float(d["y"]), float(d["width"]), float(d["height"])) for d in items]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=False)


class LabelPanel:
    """Label the queue by hand: image with proposed boxes, Save/Skip/Undo/Delete, class picker.

    Args:
        queue: the `LabelQueue` to work through.
        thumbnails: how many just-labeled samples the strip at the bottom shows.
        image_width: display width of thumbnails in pixels.
        show_dataset: called by the "Show the dataset" button at the end of the queue; what it
            returns (figures, widgets) is displayed under the panel. None: no such button.

    Example:
        >>> panel = LabelPanel(LabelQueue(studio))
        >>> panel  # in a notebook cell: shows the panel
    """

    def __init__(self, queue: LabelQueue, thumbnails: int = 6, image_width: int = 96,
                 show_dataset: Callable[[], Any] | None = None):
        import ipywidgets as w
        import traitlets
        from jupyter_bbox_widget import BBoxWidget

        self.queue = queue
        self.thumbnails = int(thumbnails)
        self.image_width = int(image_width)
        self.show_dataset = show_dataset
        self._updating = False
        self._waiters: list[tuple[Any, Any, Callable[[], Any]]] = []  # (status, output, show): `when_done`
        self._finished: bool | None = None
        labels = queue.labels
        # the widget's own Submit/Skip buttons sit under the image; ours sit above it
        self.bbox = BBoxWidget(classes=labels, bboxes=[], hide_buttons=True)
        self.bbox.add_class("edgeloop-bbox")
        self.keys = _keys_widget_class()(bbox_id=self.bbox.model_id)
        self.header = w.HTML()
        self.progress = w.HTML()
        self.offer = w.HTML(layout=w.Layout(min_height="40px"))
        self.source = w.ToggleButtons(options=[("tracking", "tracking"), ("model", "model")], value=None,
                                      style={"button_width": "84px"}, layout=w.Layout(width="auto"),
                                      tooltips=["boxes of the previous frame, moved", "detections of the current model"])
        self.class_picker = w.Dropdown(options=labels, value=labels[0] if labels else None, description="class",
                                       layout=w.Layout(width="190px"))
        self.save_button = w.Button(description="Save (Enter)", button_style="success", icon="check",
                                    tooltip="save the boxes on screen and go to the next image")
        self.save_button.add_class("edgeloop-save")
        self.skip_button = w.Button(description="Skip (Space)", icon="arrow-right",
                                    tooltip="leave this image unlabeled for now (it comes back with 'Back to the skipped')")
        self.undo_button = w.Button(description="Undo (U)", icon="undo",
                                    tooltip="take back the last save, skip or delete")
        self.delete_button = w.Button(description="Delete frame", button_style="danger", icon="trash",
                                      tooltip="delete this image from the dataset (a bad frame); Undo brings it back")
        self.new_class = w.Text(placeholder="new class, e.g. banana", description="add class")
        self.add_button = w.Button(description="Add", icon="plus")
        self.message = w.HTML(layout=w.Layout(min_height="24px"))  # a status line never moves the image down
        self.end_text = w.HTML()
        self.back_button = w.Button(description="Back to the skipped", icon="backward", layout=w.Layout(width="auto"),
                                    tooltip="reload the images you skipped and label them now")
        self.dataset_button = w.Button(description="Show the dataset", icon="table", layout=w.Layout(width="auto"),
                                       tooltip="plots of the labeled dataset, under the panel")
        self.end_box = w.VBox([self.end_text, w.HBox([self.back_button, self.dataset_button])],
                              layout=w.Layout(display="none"))
        self.end_box.add_class("edgeloop-next")
        self.dataset_out = w.Output()
        self.strip = w.HBox()
        self.help = w.HTML(f"<small>{SHORTCUTS}</small>")
        # the picker and the widget's own class buttons (hotkeys 1-9) stay in step; no queue call
        traitlets.link((self.class_picker, "value"), (self.bbox, "label"),
                       transform=(lambda v: v or "", lambda v: v or None))

        self.bbox.on_submit(self._on_save)
        self.bbox.on_skip(self._on_skip)
        self.keys.on_msg(self._on_key)
        self.save_button.on_click(self._on_save)
        self.skip_button.on_click(self._on_skip)
        self.undo_button.on_click(self._on_undo)
        self.delete_button.on_click(self._on_delete)
        self.back_button.on_click(self._on_back)
        self.dataset_button.on_click(self._on_show_dataset)
        self.source.observe(self._on_source, names="value")
        self.add_button.on_click(self._on_add_class)

        self.actions = w.HBox([self.save_button, self.skip_button, self.undo_button, self.delete_button],
                              layout=w.Layout(flex_flow="row wrap"))
        # fixed height: the row does not jump when the proposal toggle gets a second option
        self.choices = w.HBox([w.Label("proposal", layout=w.Layout(width="72px")), self.source, self.class_picker],
                              layout=w.Layout(min_height="36px", align_items="center", flex_flow="row nowrap"))
        self.widget = w.VBox([
            self.header,
            self.progress,
            self.actions,
            self.choices,
            self.offer,
            self.message,
            self.end_box,
            self.bbox,
            w.HBox([self.new_class, self.add_button]),
            self.help,
            self.strip,
            self.dataset_out,
            self.keys,
        ])
        self.widget.add_class("edgeloop-label-panel")
        self.render()

    # ------------------------------------------------------------------ drawing
    def render(self) -> None:
        """Show the queue's current sample with the selected proposal, progress and thumbnails."""
        item = self.queue.current()
        self._updating = True
        try:
            labels = self.queue.labels
            if list(self.bbox.classes) != labels:
                self.bbox.classes = labels
                self.class_picker.options = labels
            self.undo_button.disabled = not self.queue.can_undo
            if item is None:
                self._render_end()
            else:
                info = item.info
                self.header.value = (
                    f"<b>sample #{_e(info['sample_id'])}</b> · device {_e(info['device'] or '?')} · "
                    f"frame {_e(info['frame_index'] if info['frame_index'] is not None else '?')} · "
                    f"<small>{_e(info['captured_at'] or '')}</small>"
                )
                rgb = self.queue.image(item.sample_id)
                self.keys.aspect = float(rgb.shape[1]) / float(rgb.shape[0])
                self.bbox.image = data_url(encode_jpeg(rgb, quality=92))
                proposal = self.queue.proposal()
                # a new frame starts with no box selected (else Tab would step past the first box)
                # (sent even when unchanged here: the browser may have selected a box without telling)
                self.bbox.selected_index = -1
                self.bbox.send_state("selected_index")
                self.bbox.bboxes = boxes_to_widget(proposal.boxes) if proposal is not None else []
                options = [(s, s) for s in item.proposals]
                self.source.options = options
                self.source.value = self.queue.source
                self.source.disabled = len(options) < 2
                self.offer.value = self._offer_html(item)
                self.end_box.layout.display = "none"
                self.choices.layout.display = None
                self.bbox.layout.display = None
                for b in (self.save_button, self.skip_button, self.delete_button):
                    b.disabled = False
            self.progress.value = f"<b>{_e(progress_words(self.queue))}</b>"
            self._render_strip()
        finally:
            self._updating = False
        self._update_waiters()

    def _offer_html(self, item: Any) -> str:
        """Every proposal with its origin and confidence; what is on screen in bold."""
        if not item.proposals:
            return "no proposal: draw the boxes (drag on the image)"
        lines = []
        for src, p in item.proposals.items():
            per_box = ", ".join(f"{_e(b.label)} {b.value:.2f}" for b in p.boxes if b.value is not None)
            line = _e(p.describe()) + (f" <small>[{per_box}]</small>" if per_box else "")
            if p.warning:
                line = f"<span style='color:#b35c00'>{line}</span>"
            lines.append(f"<b>▶ {line}</b>" if src == self.queue.source else line)
        if self.queue.source is None:
            lines.insert(0, "<b>nothing offered: draw the boxes</b> (the proposal below was not trusted)")
        return "<br>".join(lines)

    def _render_end(self) -> None:
        p = self.queue.progress()
        skipped = self.queue.skipped_count()
        self.header.value = "<b>The queue is done.</b>"
        again = f" {skipped} skipped: go back to them now, or later with a new queue." if skipped else ""
        below = ("The cells below now show the dataset and how the labels compare." if self._waiters
                 else "The cells below show the dataset: run them.")
        self.end_text.value = (f"Of the {p.total} images in this pass: {p.saved} labeled, {p.skipped} skipped, "
                               f"{p.deleted} deleted.{again} {below}")
        self.back_button.disabled = skipped == 0
        self.dataset_button.layout.display = None if self.show_dataset is not None else "none"
        self.end_box.layout.display = None
        self.bbox.layout.display = "none"
        self.bbox.bboxes = []
        self.offer.value = ""
        self.source.options = []
        self.source.disabled = True
        self.choices.layout.display = "none"
        for b in (self.save_button, self.skip_button, self.delete_button):
            b.disabled = True

    def _render_strip(self) -> None:
        import ipywidgets as w

        labels = self.queue.labels
        thumbs = []
        for sample_id, rgb, boxes in self.queue.recent()[-self.thumbnails:]:
            jpeg = encode_jpeg(draw_boxes(rgb, boxes, labels, show_labels=False), quality=80, max_side=2 * self.image_width)
            thumbs.append(w.VBox([w.Image(value=jpeg, format="jpeg", width=self.image_width),
                                  w.HTML(f"<small>#{sample_id} ({len(boxes)})</small>")]))
        self.strip.children = thumbs

    def _show_error(self, err: Exception) -> None:
        self.message.value = f"<span style='color:#c00'>{_e(type(err).__name__)}: {_e(err)}</span>"

    def _refocus(self) -> None:
        """Put the focus back on the image (or the end-of-queue buttons) after the panel redrew."""
        self.keys.send({"type": "focus"})

    def _say(self, text: str) -> None:
        self.message.value = f"<span style='color:#555'>{_e(text)}</span>"

    # ------------------------------------------------------------------ callbacks: one queue call each
    def _on_key(self, _widget: Any, content: dict[str, Any], _buffers: Any = None) -> None:
        action = content.get("action") if isinstance(content, dict) else None
        if action == "save" and isinstance(content.get("bboxes"), list):
            self._on_save(boxes=content["bboxes"])  # the boxes on screen at the key press
            return
        handler = {"save": self._on_save, "skip": self._on_skip, "undo": self._on_undo}.get(action)
        if handler is not None:
            handler()

    def _on_save(self, _button: Any = None, boxes: list[dict[str, Any]] | None = None) -> None:
        if self.queue.done:
            self._say("the queue is done: nothing to save")
            return
        try:
            shown = list(self.bbox.bboxes) if boxes is None else list(boxes)
            self.queue.save(boxes_from_widget(shown), source=self.queue.source)
        except DatasetError as e:
            self._show_error(e)
            return
        self.message.value = ""
        self.render()
        self._refocus()

    def _on_skip(self, _button: Any = None) -> None:
        if self.queue.done:
            self._say("the queue is done: nothing to skip")
            return
        try:
            self.queue.skip()
        except DatasetError as e:
            self._show_error(e)
            return
        self.message.value = ""
        self.render()
        self._refocus()

    def _on_delete(self, _button: Any = None) -> None:
        if self.queue.done:
            return
        try:
            sample_id = self.queue.current().sample_id
            self.queue.delete()
        except DatasetError as e:
            self._show_error(e)
            return
        self._say(f"deleted frame #{sample_id}: Undo (U) brings it back")
        self.render()
        self._refocus()

    def _on_undo(self, _button: Any = None) -> None:
        try:
            item = self.queue.undo()
        except DatasetError as e:
            self._show_error(e)
            return
        self._say(f"undone: sample #{item.sample_id} is back on screen")
        self.render()
        self._refocus()

    def _on_back(self, _button: Any = None) -> None:
        try:
            n = self.queue.refresh()
        except DatasetError as e:
            self._show_error(e)
            return
        self._say(f"{n} image(s) back in the queue")
        self.render()
        self._refocus()

    def _on_show_dataset(self, _button: Any = None) -> None:
        from IPython.display import display

        if self.show_dataset is None:
            return
        self.dataset_out.clear_output()
        with self.dataset_out:
            shown = self.show_dataset()
            for obj in shown if isinstance(shown, (list, tuple)) else [shown]:
                if obj is not None:
                    display(obj)

    def _on_source(self, change: dict[str, Any]) -> None:
        if self._updating or change["new"] is None:
            return
        try:
            proposal = self.queue.select(change["new"])
        except DatasetError as e:
            self._show_error(e)
            return
        self.bbox.bboxes = boxes_to_widget(proposal.boxes)
        item = self.queue.current()
        if item is not None:
            self.offer.value = self._offer_html(item)

    def _on_add_class(self, _source: Any = None) -> None:
        try:
            labels = self.queue.add_label(self.new_class.value)
        except DatasetError as e:
            self._show_error(e)
            return
        self.new_class.value = ""
        self.message.value = f"classes: {_e(', '.join(labels))}"
        self._updating = True
        try:
            self.bbox.classes = labels
            self.class_picker.options = labels
        finally:
            self._updating = False

    # ------------------------------------------------------------------ the cells below the panel
    def when_done(self, show: Callable[[], Any]) -> Any:
        """A widget for a cell below the panel: `waiting for N labels` while the queue is open, then
        what `show()` prints and returns (figures, widgets), drawn again whenever the queue is finished.

        Example:
            >>> display(panel.when_done(lambda: plots.dataset_figures(studio)))
        """
        import ipywidgets as w

        status, out = w.HTML(), w.Output()
        self._waiters.append((status, out, show))
        self._update_waiters(only=self._waiters[-1])
        return w.VBox([status, out])

    def _update_waiters(self, only: tuple[Any, Any, Callable[[], Any]] | None = None) -> None:
        finished, changed = self.queue.done, self.queue.done != self._finished or only is not None
        self._finished = finished
        for status, out, show in [only] if only is not None else self._waiters:
            status.value = "" if finished else f"<i>{_e(waiting_words(self.queue))}</i>"  # counts down
            if not changed:
                continue
            out.outputs = ()
            if finished:
                fill_output(out, show)

    # ------------------------------------------------------------------ display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
