"""The label-review panel: a bounding-box widget over a `LabelQueue`.

Built on `jupyter_bbox_widget.BBoxWidget` plus a few ipywidgets. The panel only draws; every
callback calls exactly one `LabelQueue` method (`save`, `skip`, `delete`, `select`,
`add_label`) and then redraws, so what a click does is the same as what a headless run does.
The ground truth in a synthetic sample's metadata is never shown.

Keyboard (the bbox widget's own hotkeys, active while the image has focus):

| key | action |
|---|---|
| Enter | Save (the widget's Submit) |
| Space | Skip |
| 1..9, 0 | pick class 1..10 for the next box |
| Tab / Shift+Tab | select the next / previous box |
| Delete | delete the selected *box* |
| C | give the selected box the current class |
| W A S D | move the selected box (Shift: 10 px) |
| Q E / R F | narrower / wider, taller / shorter |
| Esc | leave the widget (unfocus) |

Deleting the whole *sample* has no hotkey on purpose: it is the "Delete frame" button.
"""
from __future__ import annotations

from typing import Any

from helpers.errors import DatasetError
from helpers.geometry import BBox
from helpers.labeling.queue import LabelQueue
from helpers.widgets import data_url, draw_boxes, encode_jpeg

SHORTCUTS = (
    "Enter: save · Space: skip · 1-9: class · Tab: next box · Delete: delete box · "
    "C: relabel box · WASD: move · QE/RF: resize"
)


def boxes_to_widget(boxes: list[BBox]) -> list[dict[str, Any]]:
    """Boxes as the bbox widget's dicts (x, y, width, height, label; pixels, one decimal)."""
    return [{"x": round(b.x, 1), "y": round(b.y, 1), "width": round(b.width, 1), "height": round(b.height, 1),
             "label": b.label} for b in boxes]


def boxes_from_widget(items: list[dict[str, Any]]) -> list[BBox]:
    """The bbox widget's dicts as boxes (extra keys from attached widgets are ignored)."""
    return [BBox(str(d["label"]), float(d["x"]), float(d["y"]), float(d["width"]), float(d["height"])) for d in items]


class LabelPanel:
    """Label the queue by hand: image with proposed boxes, class picker, Save/Skip/Delete.

    Args:
        queue: the `LabelQueue` to work through.
        thumbnails: how many just-labeled samples the strip at the bottom shows.
        image_width: display width of thumbnails in pixels.

    Example:
        >>> panel = LabelPanel(LabelQueue(studio))
        >>> panel  # in a notebook cell: shows the panel
    """

    def __init__(self, queue: LabelQueue, thumbnails: int = 6, image_width: int = 96):
        import ipywidgets as w
        import traitlets
        from jupyter_bbox_widget import BBoxWidget

        self.queue = queue
        self.thumbnails = int(thumbnails)
        self.image_width = int(image_width)
        self._updating = False
        labels = queue.labels
        self.bbox = BBoxWidget(classes=labels, bboxes=[], hide_buttons=False)
        self.header = w.HTML()
        self.source = w.ToggleButtons(options=[("tracking", "tracking"), ("model", "model")], value=None,
                                      description="proposal", tooltips=["boxes of the previous frame, moved",
                                                                        "detections of the current model"])
        self.class_picker = w.Dropdown(options=labels, value=labels[0] if labels else None, description="class")
        self.delete_button = w.Button(description="Delete frame", button_style="danger", icon="trash",
                                      tooltip="delete this image from the dataset (a bad frame)")
        self.new_class = w.Text(placeholder="new class, e.g. banana", description="add class")
        self.add_button = w.Button(description="Add", icon="plus")
        self.message = w.HTML()
        self.progress = w.HTML()
        self.strip = w.HBox()
        self.help = w.HTML(f"<small>{SHORTCUTS}</small>")
        # the picker and the widget's own class buttons (hotkeys 1-9) stay in step; no queue call
        traitlets.link((self.class_picker, "value"), (self.bbox, "label"),
                       transform=(lambda v: v or "", lambda v: v or None))

        self.bbox.on_submit(self._on_save)
        self.bbox.on_skip(self._on_skip)
        self.delete_button.on_click(self._on_delete)
        self.source.observe(self._on_source, names="value")
        self.add_button.on_click(self._on_add_class)

        self.widget = w.VBox([
            self.header,
            w.HBox([self.source, self.class_picker]),
            self.bbox,
            w.HBox([self.delete_button, self.new_class, self.add_button]),
            self.message,
            self.progress,
            self.help,
            self.strip,
        ])
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
            if item is None:
                self.header.value = "<b>queue done</b>: nothing left to label (skipped samples come back on refresh)"
                self.bbox.bboxes = []
                self.bbox.image = ""
                self.source.value = None
                self.source.disabled = True
                self.delete_button.disabled = True
            else:
                info = item.info
                proposal = self.queue.proposal()
                desc = proposal.describe() if proposal is not None else "no proposal: draw the boxes"
                self.header.value = (
                    f"<b>sample {info['sample_id']}</b> · device {info['device'] or '?'} · "
                    f"frame {info['frame_index'] if info['frame_index'] is not None else '?'} · "
                    f"{info['captured_at'] or ''}<br>offered: {desc}"
                )
                self.bbox.image = data_url(encode_jpeg(self.queue.image(item.sample_id), quality=92))
                self.bbox.bboxes = boxes_to_widget(proposal.boxes) if proposal is not None else []
                self.source.options = [(s, s) for s in ("tracking", "model") if s in item.proposals]
                self.source.value = self.queue.source
                self.source.disabled = len(item.proposals) < 2
                self.delete_button.disabled = False
            self.progress.value = self.queue.progress().text
            self._render_strip()
        finally:
            self._updating = False

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
        self.message.value = f"<span style='color:#c00'>{type(err).__name__}: {err}</span>"

    # ------------------------------------------------------------------ callbacks: one queue call each
    def _on_save(self) -> None:
        try:
            self.queue.save(boxes_from_widget(list(self.bbox.bboxes)), source=self.queue.source)
        except DatasetError as e:
            self._show_error(e)
            return
        self.message.value = ""
        self.render()

    def _on_skip(self) -> None:
        try:
            self.queue.skip()
        except DatasetError as e:
            self._show_error(e)
            return
        self.render()

    def _on_delete(self, _button: Any = None) -> None:
        try:
            self.queue.delete()
        except DatasetError as e:
            self._show_error(e)
            return
        self.render()

    def _on_source(self, change: dict[str, Any]) -> None:
        if self._updating or change["new"] is None:
            return
        try:
            proposal = self.queue.select(change["new"])
        except DatasetError as e:
            self._show_error(e)
            return
        self.bbox.bboxes = boxes_to_widget(proposal.boxes)
        self.header.value = self.header.value.split("<br>")[0] + f"<br>showing: {proposal.describe()}"

    def _on_add_class(self, _source: Any = None) -> None:
        try:
            labels = self.queue.add_label(self.new_class.value)
        except DatasetError as e:
            self._show_error(e)
            return
        self.new_class.value = ""
        self.message.value = f"classes: {', '.join(labels)}"
        self._updating = True
        try:
            self.bbox.classes = labels
            self.class_picker.options = labels
        finally:
            self._updating = False

    # ------------------------------------------------------------------ display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
