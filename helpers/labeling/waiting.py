"""What the labeling panel says in words, and what the cells below it show while a person labels.

`progress_words` is the panel's progress line (`image 4 of 120 · 3 labeled ...`); `waiting_words`
what a cell below the panel says until the queue is done (`waiting for 117 labels: ...`);
`fill_output` puts what such a cell prints and returns into its Output widget once the queue is
done (`LabelPanel.when_done`).
"""
from __future__ import annotations

import contextlib
import io
import traceback
from collections.abc import Callable
from typing import Any

from helpers.labeling.queue import LabelQueue


def progress_words(queue: LabelQueue) -> str:
    """`image 4 of 120 · 3 labeled (2 kept as proposed) · 1 skipped · 117 still to label`."""
    p = queue.progress()
    parts = [f"image {min(p.handled + 1, p.total)} of {p.total}" if len(queue) else f"{p.total} images",
             f"{p.saved} labeled ({p.accepted_unchanged} kept as proposed)"]
    parts += [f"{n} {what}" for n, what in ((p.skipped, "skipped"), (p.deleted, "deleted")) if n]
    parts.append(f"{len(queue)} still to label" if len(queue) else "all done")
    return " · ".join(parts)


def waiting_words(queue: LabelQueue) -> str:
    """What a cell below the panel says while the person labels."""
    n = len(queue)
    return (f"waiting for {n} label{'s' if n != 1 else ''}: label the images in the panel above; "
            "this cell fills in when the queue is done")


def fill_output(out: Any, show: Callable[[], Any]) -> None:
    """Put what `show()` prints and returns into the Output widget `out` (no kernel needed); an
    error is shown there as its traceback, under the cell it belongs to, as the cell would."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            shown = show()
    except Exception:  # noqa: BLE001 (shown to the person, in place of the cell's output)
        if buf.getvalue():
            out.append_stdout(buf.getvalue())
        out.append_stderr(traceback.format_exc())
        return
    if buf.getvalue():
        out.append_stdout(buf.getvalue())
    for obj in shown if isinstance(shown, (list, tuple)) else [shown]:
        if obj is not None:
            out.append_display_data(obj)


__all__ = ["fill_output", "progress_words", "waiting_words"]
