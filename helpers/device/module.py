"""`python -m helpers.device.module`: the device module process, chosen by `MODE`.

`start.sh` checks the environment and execs this. `MODE=collect` runs the camera collector
(`helpers.device.collector`), `MODE=infer` the model runner (`helpers.device.runner`).

Exit codes: 0 clean stop (SIGTERM), 1 a runtime error, 2 a configuration error (a missing or
invalid variable; the message names it), 3 a broken model (the runner could not load it).

`python -m helpers.device.module --healthcheck` is the image's HEALTHCHECK: for `infer` it
GETs `http://127.0.0.1:$PORT/api/health` (200 = healthy), for `collect` it checks that the
collector keeps writing its progress file (`$MODULE_WORKDIR/reported.json`, or that the
module process is alive when it has not written one yet).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.config import mask
from helpers.errors import ConfigError, EdgeLoopError, ModelError

log = logging.getLogger("helpers.device.module")

MODES = ("collect", "infer")
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_MODEL = 0, 1, 2, 3
#: the collector rewrites reported.json at least this often while alive
HEALTH_STALE_S = 120.0


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup_logging() -> None:
    """Log to stderr (the agent's module.log, or the container log), secrets masked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())


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
    requested = _EARLY_STOP  # set when a signal came while the module was still importing
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
    `max_queue` are kept while the hub is away).

    `ModuleHub.from_environment()` is None when neither environment is there (a module run by
    hand or by a test without a hub): the module then works and reports nowhere.
    """

    def __init__(self, client: Any, max_queue: int = 100, retry_s: float = 2.0):
        import collections
        import threading

        self.client = client
        self.retry_s = retry_s
        self._cond = threading.Condition()
        self._target: dict[str, Any] | None = None
        self._acked: dict[str, Any] = {}
        self._messages: collections.deque[tuple[bytes, dict[str, str]]] = collections.deque(maxlen=max_queue)
        self._closing = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="module-hub", daemon=True)
        self._thread.start()

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> ModuleHub | None:
        """The module's hub link from the IoT Edge (or simulator) environment, or None outside IoT Edge."""
        env = dict(os.environ if env is None else env)
        if not env.get("EdgeHubConnectionString") and not env.get("IOTEDGE_WORKLOADURI"):
            log.info("no IoT Edge environment (EdgeHubConnectionString / IOTEDGE_WORKLOADURI): not reporting to a hub")
            return None
        from azure.iot.device import IoTHubModuleClient

        logging.getLogger("azure.iot.device").setLevel(logging.WARNING)
        try:
            client = IoTHubModuleClient.create_from_edge_environment(keep_alive=30)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"the IoT Edge environment is not usable ({exc}): EdgeHubConnectionString must be a "
                              "module connection string and EdgeModuleCACertificateFile a readable CA file") from None
        return cls(client)

    def report(self, state: dict[str, Any]) -> None:
        """Make the module twin's reported properties equal `state` (sent in the background)."""
        import json

        with self._cond:
            self._target = json.loads(json.dumps(state, default=str))
            self._cond.notify_all()

    def send(self, body: dict[str, Any], properties: dict[str, str] | None = None) -> None:
        """Queue a device-to-cloud message (JSON body, application properties)."""
        import json

        with self._cond:
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
        from azure.iot.device.exceptions import ClientError

        try:
            self.client.shutdown()
        except (ClientError, OSError) as exc:
            log.info("disconnecting from the hub: %s", mask(str(exc)))

    def _run(self) -> None:
        from azure.iot.device import Message
        from azure.iot.device.exceptions import ClientError, OperationCancelled, OperationTimeout

        from helpers.device.hub_link import diff_patch

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


_EARLY_STOP = threading.Event()


def _early_stop(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT before the worker runs (while importing): remembered, the worker stops at once."""
    _EARLY_STOP.set()


def healthcheck(env: dict[str, str] | None = None) -> int:
    """The container HEALTHCHECK: 0 healthy, 1 unhealthy (reason on stderr)."""
    env = dict(os.environ if env is None else env)
    mode = env.get("MODE", "")
    if mode == "infer":
        url = f"http://127.0.0.1:{env.get('PORT', '4912')}/api/health"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return EXIT_OK if resp.status == 200 else EXIT_ERROR
        except urllib.error.HTTPError as exc:
            print(f"unhealthy: {url} answered {exc.code}: {exc.read(300).decode(errors='replace')}", file=sys.stderr)
        except (urllib.error.URLError, OSError) as exc:
            print(f"unhealthy: {url} does not answer ({exc})", file=sys.stderr)
        return EXIT_ERROR
    if mode == "collect":
        workdir = Path(env.get("MODULE_WORKDIR", "."))
        progress = workdir / "reported.json"
        if progress.is_file():
            age = time.time() - progress.stat().st_mtime
            if age <= HEALTH_STALE_S:
                return EXIT_OK
            print(f"unhealthy: {progress} not updated for {age:.0f} s", file=sys.stderr)
            return EXIT_ERROR
        try:
            cmdline = Path("/proc/1/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = ""
        if "helpers.device.module" in cmdline:
            return EXIT_OK
        print("unhealthy: the collector has written no progress yet and PID 1 is not the module", file=sys.stderr)
        return EXIT_ERROR
    print(f"unhealthy: MODE={mode!r} is not one of {MODES}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run the module MODE names; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--healthcheck"]:
        return healthcheck()
    if argv:
        print(f"usage: python -m helpers.device.module [--healthcheck] (got {argv})", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging()
    signal.signal(signal.SIGTERM, _early_stop)  # the imports below take a while on a small device
    signal.signal(signal.SIGINT, _early_stop)
    mode = os.environ.get("MODE", "")
    try:
        if mode == "collect":
            from helpers.device.collector import main as run
        elif mode == "infer":
            from helpers.device.runner import main as run
        else:
            raise ConfigError(f"MODE={mode!r} is not valid: set MODE=collect (collector) or MODE=infer (runner)")
        return run()
    except ModelError as exc:
        log.error("broken model: %s", exc)
        return EXIT_MODEL
    except ConfigError as exc:
        log.error("configuration: %s", exc)
        return EXIT_CONFIG
    except EdgeLoopError as exc:
        log.error("%s", exc)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ModuleHub", "healthcheck", "main", "run_until_stopped"]
