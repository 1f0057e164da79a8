"""The helpers' figures show as pictures in a real kernel, once per display."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.timeout(120)

CELL = """
from helpers import ui

lp = ui.LivePlot("t")
lp.history = [{"epoch": 1, "loss": 1.0, "val_f1": 0.5}, {"epoch": 2, "loss": 0.5, "val_f1": 0.8}]
display(lp.figure())
display(ui.plot_confusion({"confusion": {"names": ["apple", "background"], "matrix": [[3, 1], [2, 0]]}}))
"""


def test_helper_figures_display_as_png_once():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    NotebookClient(nb, kernel_name="python3", timeout=90).execute()
    outputs = nb.cells[0].outputs
    kinds = [sorted(o.get("data", {}).keys()) for o in outputs if o.output_type == "display_data"]
    assert kinds == [["image/png", "text/plain"], ["image/png", "text/plain"]], kinds  # two figures, two pictures
