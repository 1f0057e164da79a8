"""The line after `|` belongs to the running step: a report the previous step left is not shown."""
from __future__ import annotations

import io
import time

import nbformat

from helpers import pipeline, ui


def test_the_report_after_the_bar_is_the_running_steps(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 4. Train"), nbformat.v4.new_code_cell("1"),
                                         nbformat.v4.new_markdown_cell("## Export to ONNX"), nbformat.v4.new_code_cell("2")])
    monkeypatch.setenv(ui.PROGRESS_ENV, str(tmp_path / "p.json"))
    out = io.StringIO()
    progress = pipeline.Progress(tmp_path / "p.json", every_s=0.2, stream=out, announce_s=0.2)
    try:
        progress.start_notebook("04_train", nb)
        progress.cell_started(1)
        ui.report_progress("training apple: epoch 40/40")  # as the kernel writes it
        time.sleep(0.25)
        progress.tick()
        assert out.getvalue().splitlines()[-1].endswith("| training apple: epoch 40/40")
        time.sleep(0.01)
        progress.cell_started(3)  # the next step: the file still holds the training line
        time.sleep(0.25)
        progress.tick()
        last = out.getvalue().splitlines()[-1]
        assert "step: Export to ONNX" in last and "|" not in last, last
        ui.report_progress("exporting: model.onnx")  # the new step's own report is shown
        time.sleep(0.25)
        progress.tick()
        assert out.getvalue().splitlines()[-1].endswith("| exporting: model.onnx")
    finally:
        progress.close()
