"""What the terminal shows while a notebook runs: the step (the heading above the cell), its time, the kernel's report."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _fmt_elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def step_titles(nb: Any) -> list[str]:
    """For each cell of a notebook, the title of the step it belongs to (the last heading above it)."""
    title, titles = "", []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    title = line.lstrip("#").strip()
                    break
        titles.append(title)
    return titles


class Progress:
    """What the terminal shows while a notebook runs: the step, training/collection progress, time.

    Quick steps pass silently. A step still running after `announce_s` seconds is named, and
    then every `every_s` seconds a line shows how long it has run and what the kernel last
    reported (`helpers.ui` writes training epochs and collection counts to the file named by
    EDGELOOP_PROGRESS_FILE).
    """

    def __init__(self, progress_file: Path, every_s: float = 20.0, stream: Any = None, announce_s: float = 5.0):
        self.progress_file = progress_file
        self.every_s = every_s
        self.announce_s = announce_s
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.notebook: str | None = None
        self.titles: list[str] = []
        self.cell_index = 0
        self.step = ""
        self.t_notebook = self.t_step = time.monotonic()
        self._step_wall = time.time()  # the step's start on the clock the kernel's reports carry ("at")
        self._last_line: float | None = None  # when this step last printed (None: not yet)

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self._last_line = time.monotonic()

    def start_notebook(self, name: str, nb: Any) -> None:
        with self._lock:
            self.notebook, self.step, self.cell_index = name, "", 0
            self.titles = step_titles(nb)
            self.t_notebook = self.t_step = time.monotonic()
            self._step_wall = time.time()
            self._last_line = None
            self.progress_file.unlink(missing_ok=True)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pipeline-progress", daemon=True)
            self._thread.start()

    def set_cells(self, nb: Any) -> None:
        """The notebook as executed (papermill inserts the parameters cell: indexes shift)."""
        with self._lock:
            self.titles = step_titles(nb)

    def end_notebook(self) -> None:
        with self._lock:
            self.notebook = None

    def cell_started(self, index: int) -> None:
        with self._lock:
            self.cell_index = index
            title = self.titles[index] if index < len(self.titles) else self.step
            if title != self.step:
                self.step, self.t_step, self._last_line = title, time.monotonic(), None
                self._step_wall = time.time()

    def kernel_report(self) -> str:
        """The kernel's last progress report of the running step as one line ('' when there is none).

        A report written before the step began is the previous step's (the file keeps the last
        line until a new one replaces it): it is not shown after the step's name.
        """
        try:
            doc = json.loads(self.progress_file.read_text())
        except (FileNotFoundError, ValueError):
            return ""
        at = doc.get("at")
        if isinstance(at, (int, float)) and at < self._step_wall:
            return ""
        return str(doc.get("line", ""))

    def tick(self) -> None:
        """Print a line if the running step is due one (called every second by the thread)."""
        with self._lock:
            if self.notebook is None:
                return
            now = time.monotonic()
            due = (now - self.t_step >= self.announce_s) if self._last_line is None else (now - self._last_line >= self.every_s)
            if not due:
                return
            report = self.kernel_report()
            self._print(f"[pipeline] {self.notebook} {_fmt_elapsed(now - self.t_notebook)}"
                        f"  step: {self.step or 'start'} ({_fmt_elapsed(now - self.t_step)})"
                        + (f"  | {report}" if report else ""))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

