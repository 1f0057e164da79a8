"""The pipeline's kernels shut down without an interrupt.

jupyter_client's shutdown interrupts the kernel first; a kernel that is inside a message
handler at that moment logs 'KeyboardInterrupt caught in kernel' on the terminal of every
successful run. This starts a real kernel through the pipeline's kernel manager, leaves it busy
in a cell that records an interrupt, and shuts it down the way nbclient does
(`km.shutdown_kernel()`).
"""
from __future__ import annotations

import asyncio
import time

import pytest

from helpers.pipeline.engine import QuietKernelManager

pytestmark = pytest.mark.timeout(120)

CELL = """
import time
try:
    open({started!r}, "w").write("started")
    time.sleep(30)
except KeyboardInterrupt:
    open({marker!r}, "w").write("interrupted")
    raise
"""


async def _busy_then_shutdown(manager_class, tmp_path):
    started, marker = tmp_path / "started", tmp_path / "interrupted"
    km = manager_class(kernel_name="python3")
    await km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        kc.execute(CELL.format(started=str(started), marker=str(marker)))
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert started.exists(), "the cell never started"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel()  # what nbclient calls at the end of a notebook
    time.sleep(0.5)
    return km, marker


def test_pipeline_kernel_shuts_down_without_interrupting(tmp_path):
    km, marker = asyncio.run(_busy_then_shutdown(QuietKernelManager, tmp_path))
    assert not km.has_kernel or not km.is_alive
    assert not marker.exists(), "the kernel was interrupted on shutdown (prints 'KeyboardInterrupt caught in kernel')"


def test_the_default_manager_does_interrupt(tmp_path):
    """Control: the same probe sees jupyter_client's default shutdown interrupt the kernel."""
    from jupyter_client.manager import AsyncKernelManager

    _, marker = asyncio.run(_busy_then_shutdown(AsyncKernelManager, tmp_path))
    assert marker.exists()
