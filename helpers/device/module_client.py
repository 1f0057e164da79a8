"""What a device module process (collector, runner) shares: its hub link and its run loop.

`ModuleHub` is the module's link to its hub through `IoTHubModuleClient.create_from_edge_environment()`;
`run_until_stopped` runs the module's worker until SIGTERM or SIGINT. The process entry point that
picks the module by `MODE` is `helpers.device.module`.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from helpers.config import mask
from helpers.errors import ConfigError
from helpers.protocol import module_env as env_names
from helpers.protocol.twinpatch import diff_patch

log = logging.getLogger("helpers.device.module")

#: set by `helpers.device.module` when SIGTERM or SIGINT came while the module was still importing
EARLY_STOP = threading.Event()


def run_until_stopped(config: Any, worker_type: Callable[[Any], Any], logger: logging.Logger, stopping: str = "stopping") -> int:
    """Run a module's worker (collector, runner) until SIGTERM or SIGINT; returns its exit code.

    Creates `config.workdir`, builds the worker from the config and sets its `stop` event on
    either signal. Configuration errors are raised before this, by the config's `from_env()`,
    and `main` turns them into exit code 2.

    Args:
        config: the module's configuration (read with `from_env()`), with a `workdir` path.
        worker_type: builds the worker from `config`; the worker has a `stop` event
            (`threading.Event`) and `run() -> int`.
        logger: the module's logger; it logs the signal received.
        stopping: what the log line says after "<SIGNAL> received: ".
    """
    config.workdir.mkdir(parents=True, exist_ok=True)
    requested = EARLY_STOP  # set when a signal came while the module was still importing
    worker: Any = None

    def _stop(signum: int, _frame: Any) -> None:
        logger.info("%s received: %s", signal.Signals(signum).name, stopping)
        requested.set()
        if worker is not None:
            worker.stop.set()

    # installed before the worker is built (building it connects to the hub, which takes a moment):
    # a SIGTERM meanwhile still ends in a clean stop, never in the default action
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker = worker_type(config)
    if requested.is_set():
        worker.stop.set()
    return worker.run()


class ModuleHub:
    """A module's link to its hub: `IoTHubModuleClient.create_from_edge_environment()`, nothing else.

    On a real IoT Edge device the SDK reads the IoT Edge environment (edgeHub, the workload
    API); a simulated device's agent gives the IoT Edge simulator's `EdgeHubConnectionString`
    and `EdgeModuleCACertificateFile`. The client connects in a background thread (retrying
    while the hub is away) so the module's own work never waits for it; `report()` keeps the
    module twin's reported properties equal to the latest state (only the difference is sent,
    and re-sent until acknowledged); `send()` queues a device-to-cloud message (the newest
    `max_queue` are kept while the hub is away; the older ones are dropped and counted in `dropped`).

    `ModuleHub.from_environment()` is None when neither environment is there (a module run by
    hand or by a test without a hub): the module then works and reports nowhere.
    """

    def __init__(self, client: Any, max_queue: int = 100, retry_s: float = 2.0):
        self.client = client
        self.retry_s = retry_s
        self._cond = threading.Condition()
        self._target: dict[str, Any] | None = None
        self._acked: dict[str, Any] = {}
        self._messages: collections.deque[tuple[bytes, dict[str, str]]] = collections.deque(maxlen=max_queue)
        self._closing = False
        self.sent = 0
        self.dropped = 0  # messages the full queue pushed out while the hub was away (oldest first), counted
        self._thread = threading.Thread(target=self._run, name="module-hub", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> ModuleHub | None:
        """The module's hub link from the IoT Edge (or simulator) environment, or None outside IoT Edge."""
        env = dict(os.environ if env is None else env)
        if not env.get(env_names.EDGEHUB_CONNECTION_STRING) and not env.get(env_names.IOTEDGE_WORKLOADURI):
            log.info("no IoT Edge environment (EdgeHubConnectionString / IOTEDGE_WORKLOADURI): not reporting to a hub")
            return None
        from azure.iot.device import IoTHubModuleClient  # imported here: no SDK for a module run without a hub

        logging.getLogger("azure.iot.device").setLevel(logging.WARNING)
        try:
            client = IoTHubModuleClient.create_from_edge_environment(keep_alive=30)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"the IoT Edge environment is not usable ({exc}): EdgeHubConnectionString must be a "
                              "module connection string and EdgeModuleCACertificateFile a readable CA file") from None
        return cls(client)

    def report(self, state: dict[str, Any]) -> None:
        """Make the module twin's reported properties equal `state` (sent in the background)."""
        with self._cond:
            self._target = json.loads(json.dumps(state, default=str))
            self._cond.notify_all()

    def send(self, body: dict[str, Any], properties: dict[str, str] | None = None) -> None:
        """Queue a device-to-cloud message (JSON body, application properties)."""
        with self._cond:
            if len(self._messages) == self._messages.maxlen:
                self.dropped += 1  # the deque drops the oldest: counted and logged, never silently
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("hub away: %d device-to-cloud messages dropped so far (the newest %d are kept)",
                                self.dropped, self._messages.maxlen)
            self._messages.append((json.dumps(body, default=str).encode(), dict(properties or {})))
            self._cond.notify_all()

    def close(self, flush_timeout_s: float = 3.0) -> None:
        """Send what is pending (up to `flush_timeout_s`), then disconnect."""
        deadline = time.monotonic() + flush_timeout_s
        with self._cond:
            while (self._messages or (self._target is not None and self._target != self._acked)) \
                    and time.monotonic() < deadline:
                self._cond.wait(0.1)
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=flush_timeout_s)
        from azure.iot.device.exceptions import ClientError  # the SDK is loaded already (the client is its)

        try:
            self.client.shutdown()
        except (ClientError, OSError) as exc:
            log.info("disconnecting from the hub: %s", mask(str(exc)))

    def _run(self) -> None:
        # the SDK is loaded already (the client is its); imported here, as in from_environment()
        from azure.iot.device import Message
        from azure.iot.device.exceptions import ClientError, OperationCancelled, OperationTimeout

        errors = (ClientError, OperationCancelled, OperationTimeout, OSError)
        while True:
            with self._cond:
                while not self._closing and not self._messages and (self._target is None or self._target == self._acked):
                    self._cond.wait()
                if self._closing:
                    return
                target = self._target
                message = self._messages[0] if self._messages else None
            try:
                if not self.client.connected:
                    self.client.connect()
                if target is not None and target != self._acked:
                    self.client.patch_twin_reported_properties(diff_patch(self._acked, target))
                    with self._cond:
                        self._acked = target
                        self._cond.notify_all()
                if message is not None:
                    msg = Message(message[0], content_encoding="utf-8", content_type="application/json")
                    msg.custom_properties.update(message[1])
                    self.client.send_message(msg)
                    with self._cond:
                        if self._messages and self._messages[0] is message:
                            self._messages.popleft()
                        self.sent += 1
                        self._cond.notify_all()
            except errors as exc:
                log.warning("hub: %s; retrying in %.0f s", mask(str(exc)) or type(exc).__name__, self.retry_s)
                with self._cond:
                    self._cond.wait(self.retry_s)


__all__ = ["EARLY_STOP", "ModuleHub", "run_until_stopped"]
