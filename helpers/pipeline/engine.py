"""The papermill engine the pipeline runs notebooks with: nbclient's, with quiet kernels and per-cell progress."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from papermill.engines import NBClientEngine, papermill_engines

from helpers.pipeline.progress import Progress

ENGINE = "edgeloop"


class QuietKernelManager(AsyncKernelManager):
    """A kernel manager over IPC (no 'running over TCP without encryption' warning) that shuts
    an idle kernel down without interrupting it first (jupyter_client's default interrupt made
    every successful run print the kernel's 'KeyboardInterrupt caught in kernel')."""

    def __init__(self, **kw: Any):
        kw.setdefault("transport", "ipc")
        # jupyter_client's default IPC name is `kernel-ipc-<n>` in the working directory, with
        # n counted from 1: two pipelines (or a pipeline and a test) starting kernels at the
        # same time took each other's sockets ("Invalid Signature"). A private folder per kernel.
        self._ipc_dir = tempfile.mkdtemp(prefix="edgeloop-kernel-")
        kw.setdefault("ip", os.path.join(self._ipc_dir, "k"))
        super().__init__(**kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        if now or not self.has_kernel:
            return await super()._async_shutdown_kernel(now=now, restart=restart)
        self.shutting_down = True
        self.stop_restarter()
        await self._async_request_shutdown(restart=restart)
        await self._async_finish_shutdown(restart=restart)  # kills it if it does not stop
        await self._async_cleanup_resources(restart=restart)

    # jupyter_client binds `shutdown_kernel` (what nbclient calls) to the base class's coroutine
    # function, so overriding `_async_shutdown_kernel` alone never ran: rebind it here.
    shutdown_kernel = _async_shutdown_kernel


def register_engine(progress: Progress) -> str:
    """Register papermill's engine `edgeloop`: quiet kernels, each cell's start reported to `progress`."""

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            start = nb_man.cell_start

            def cell_start(cell, cell_index=None, **kw):
                if cell_index is not None:
                    progress.cell_started(cell_index)
                return start(cell, cell_index, **kw)

            nb_man.cell_start = cell_start
            progress.set_cells(nb_man.nb)
            kwargs.setdefault("kernel_manager_class", QuietKernelManager)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, ProgressEngine)
    return ENGINE
