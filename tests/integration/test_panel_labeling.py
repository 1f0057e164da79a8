"""The label-review panel renders headless and each callback calls one queue method; the plots."""
from __future__ import annotations

import json

import ipywidgets
import pytest
from matplotlib.figure import Figure
from test_labeling_queue import upload_stream

from helpers.labeling import plots
from helpers.labeling.panel import LabelPanel, boxes_from_widget, boxes_to_widget
from helpers.labeling.queue import LabelQueue
from helpers.sim.oracle import OracleLabeler
from helpers.ui import StillLabeling, continue_when_labeled


class Spy:
    """Wraps a queue's public methods and counts the calls, passing them through."""

    def __init__(self, queue, names):
        self.calls = []
        for name in names:
            real = getattr(queue, name)

            def wrapper(*a, _real=real, _name=name, **kw):
                self.calls.append(_name)
                return _real(*a, **kw)

            setattr(queue, name, wrapper)


def _widget_text(panel) -> str:
    """Every string a user could see in the panel's widgets (except the image itself)."""
    parts = [panel.header.value, panel.progress.value, panel.message.value, panel.offer.value, json.dumps(panel.bbox.bboxes)]
    for child in panel.strip.children:
        parts.extend(getattr(c, "value", "") for c in child.children if isinstance(getattr(c, "value", ""), str))
    return "\n".join(parts)


def test_panel_headless_callbacks(cloud, unique_name):
    studio = cloud.studio
    studio.add_label("apple")
    dev = unique_name("cam")
    truth = upload_stream(studio, dev, 5, seed=21)
    q = LabelQueue(studio, device=dev, model=None)
    # label the first frame so the second gets a tracking proposal
    q.save(truth[1][1])
    panel = LabelPanel(q)
    assert panel.bbox.image.startswith("data:image/jpeg;base64,")
    assert panel.bbox.classes == studio.labels() and "apple" in panel.bbox.classes
    assert panel.bbox.bboxes == boxes_to_widget(q.proposal().boxes) and len(panel.bbox.bboxes) == 2
    assert panel.source.value == "tracking"
    assert "image 2 of 5 · 1 labeled" in panel.progress.value and "4 still to label" in panel.progress.value
    # the offered proposal names its origin and confidence, per box too
    assert f"tracking from #{truth[1][0]} (1 frame back): 2 boxes, confidence" in panel.offer.value
    assert panel.offer.value.count("apple 0.") == 2
    assert len(panel.strip.children) == 1
    # the ground truth is never shown: its exact coordinates do not appear anywhere
    text = _widget_text(panel)
    assert "ground_truth" not in text
    gt = truth[2][1][0]
    assert json.dumps({"x": gt.x, "y": gt.y}) not in text

    spy = Spy(q, ["save", "skip", "delete", "undo", "select", "add_label"])
    panel._on_save()  # Enter / Submit: the proposal as drawn
    assert spy.calls == ["save"]
    assert studio.get_sample(truth[2][0]).labeled
    assert "image 3 of 5" in panel.progress.value and len(panel.strip.children) == 2

    panel.bbox.bboxes = []  # the user removed every box: a frame with nothing on it
    spy.calls.clear()
    panel._on_skip()  # Space
    assert spy.calls == ["skip"] and not studio.get_sample(truth[3][0]).labeled

    spy.calls.clear()
    panel._on_delete()
    assert spy.calls == ["delete"]
    assert truth[4][0] not in [s.id for s in studio.samples(device=dev)]
    assert "Undo (U) brings it back" in panel.message.value and not panel.undo_button.disabled

    # U (sent by the panel's key widget) undoes the delete: the frame is back, with its metadata
    spy.calls.clear()
    panel._on_key(panel.keys, {"type": "key", "action": "undo"})
    assert spy.calls == ["undo"]
    restored = [s for s in studio.samples(device=dev) if s.metadata.get("frame_index") == 4]
    assert len(restored) == 1 and not restored[0].labeled and restored[0].id == q.current().sample_id
    assert "image 5 of 5" not in panel.progress.value and "image 4 of 5" in panel.progress.value
    panel._on_delete()  # and gone again
    assert restored[0].id not in [s.id for s in studio.samples(device=dev)]

    spy.calls.clear()
    panel.new_class.value = "banana"
    panel._on_add_class()
    assert spy.calls == ["add_label"] and "banana" in panel.bbox.classes and "banana" in panel.class_picker.options

    spy.calls.clear()
    panel.class_picker.value = "banana"  # linked to the widget's class for new boxes, no queue call
    assert panel.bbox.label == "banana" and spy.calls == []

    # switching the proposal source calls select() once (only tracking here: selecting model fails cleanly)
    panel._on_source({"new": "model"})
    assert spy.calls == ["select"] and "no 'model' proposal" in panel.message.value

    spy.calls.clear()
    panel.bbox.bboxes = [{"x": 1, "y": 1, "width": 5, "height": 5, "label": "banana"}]  # stale state
    # Enter carries the boxes the browser shows at that moment; they win over the synced state
    panel._on_key(panel.keys, {"type": "key", "action": "save",
                               "bboxes": [{"x": 10, "y": 12, "width": 30, "height": 20, "label": "banana"}]})
    assert spy.calls == ["save"]
    last = studio.get_sample(truth[5][0])
    assert [(b.label, b.x, b.width) for b in last.boxes] == [("banana", 10.0, 30.0)]
    # the end of the queue: said so, counts, no image, Save/Skip/Delete disabled, back to the skipped one
    assert panel.header.value == "<b>The queue is done.</b>"
    assert "Of the 5 images in this pass: 3 labeled, 1 skipped, 1 deleted. 1 skipped" in panel.end_text.value
    assert panel.bbox.layout.display == "none" and panel.end_box.layout.display is None
    assert panel.save_button.disabled and panel.skip_button.disabled and panel.delete_button.disabled
    spy.calls.clear()
    panel._on_key(panel.keys, {"type": "key", "action": "save"})  # Enter at the end: nothing, and said so
    assert spy.calls == [] and "the queue is done" in panel.message.value
    panel._on_back()
    assert q.current().sample_id == truth[3][0] and panel.bbox.layout.display is None
    assert not panel.save_button.disabled and "image 1 of 1 · 0 labeled" in panel.progress.value


def test_boxes_roundtrip_through_widget_dicts():
    from helpers.geometry import BBox

    boxes = [BBox("apple", 1.26, 2.0, 30.04, 40.0, value=0.9)]
    back = boxes_from_widget(boxes_to_widget(boxes))
    assert back[0].label == "apple" and back[0].x == pytest.approx(1.3) and back[0].value is None


def test_plots_and_overview(cloud, unique_name):
    studio = cloud.studio
    studio.add_label("apple")
    dev = unique_name("cam")
    upload_stream(studio, dev, 4, seed=31)
    q = LabelQueue(studio, device=dev, model=None)
    report = OracleLabeler(q).run(limit=3, progress=False)
    samples = studio.samples(device=dev)
    rows = plots.dataset_overview(samples)
    assert rows[0] == {"device": dev, "samples": 4, "labeled": 3, "unlabeled": 1, "training": 4, "testing": 0,
                       "boxes": sum(len(s.boxes) for s in samples if s.labeled), "empty": 0}
    assert rows[-1]["device"] == "total" and rows[-1]["samples"] == 4
    html = plots.overview_html(rows)
    assert dev in html and "<table" in html
    assert plots.overview_widget(rows).value == html
    for fig in (plots.class_counts(samples), plots.box_distributions(samples),
                plots.sample_grid(samples, studio.get_image, n=4), plots.assist_quality(report)):
        assert isinstance(fig, Figure) and fig.axes
        fig.canvas.draw()  # renders without error (Agg)


def test_cells_below_the_panel_wait_then_fill_in_when_the_queue_is_done(cloud, unique_name):
    studio = cloud.studio
    studio.add_label("apple")
    dev = unique_name("cam")
    upload_stream(studio, dev, 3, seed=91)
    q = LabelQueue(studio, device=dev, model=None)
    panel = LabelPanel(q)
    calls = []

    def show():
        calls.append(len(q))
        print("every collected image labeled:", q.done)
        return ipywidgets.HTML(f"{len(studio.samples(device=dev, labeled=True))} labeled")

    below = panel.when_done(show)
    status, out = below.children
    assert status.value == "<i>waiting for 3 labels: label the images in the panel above; this cell fills in when the queue is done</i>"
    assert calls == [] and out.outputs == ()
    with pytest.raises(StillLabeling, match="waiting for 3 labels"):
        continue_when_labeled(q)
    panel._on_save()
    assert "waiting for 2 labels" in status.value and calls == []  # counts down as the person labels
    panel._on_save()
    panel._on_save()
    assert calls == [0] and status.value == ""  # the queue is done: drawn once
    texts = [o.get("text", "") for o in out.outputs if o.get("output_type") == "stream"]
    assert "every collected image labeled: True\n" in texts
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in out.outputs)  # what it returned
    panel._on_undo()  # one more to label: the cell waits again, its old figures gone
    assert "waiting for 1 label:" in status.value and out.outputs == ()
    panel._on_save()
    assert calls == [0, 0] and status.value == ""
    continue_when_labeled(q)  # done: the run goes on
    late = panel.when_done(lambda: None)  # a cell run after the queue was done fills in at once
    assert late.children[0].value == ""
