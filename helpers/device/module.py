"""`python -m helpers.device.module`: the device module process, chosen by `MODE`.

`start.sh` checks the environment and execs this. `MODE=collect` runs the camera collector
(`helpers.device.collector`), `MODE=infer` the model runner (`helpers.device.runner`). This is
only the dispatcher; what both modules share (the hub link, the run loop) is
`helpers.device.module_client`.

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
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from helpers.config import mask
from helpers.device.module_client import EARLY_STOP
from helpers.errors import ConfigError, EdgeLoopError, ModelError
from helpers.protocol import module_env as env_names

log = logging.getLogger("helpers.device.module")

MODES = env_names.MODES
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
    root.setLevel(os.environ.get(env_names.LOG_LEVEL, "INFO").upper())


def _early_stop(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGINT before the worker runs (while importing): remembered, the worker stops at once."""
    EARLY_STOP.set()


def healthcheck(env: dict[str, str] | None = None) -> int:
    """The container HEALTHCHECK: 0 healthy, 1 unhealthy (reason on stderr)."""
    env = dict(os.environ if env is None else env)
    mode = env.get(env_names.MODE, "")
    if mode == env_names.MODE_INFER:
        url = f"http://127.0.0.1:{env.get(env_names.PORT, '4912')}/api/health"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return EXIT_OK if resp.status == 200 else EXIT_ERROR
        except urllib.error.HTTPError as exc:
            print(f"unhealthy: {url} answered {exc.code}: {exc.read(300).decode(errors='replace')}", file=sys.stderr)
        except (urllib.error.URLError, OSError) as exc:
            print(f"unhealthy: {url} does not answer ({exc})", file=sys.stderr)
        return EXIT_ERROR
    if mode == env_names.MODE_COLLECT:
        workdir = Path(env.get(env_names.MODULE_WORKDIR, "."))
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
    mode = os.environ.get(env_names.MODE, "")
    try:
        # imported after the signal handlers: the import takes seconds on a small device (numpy,
        # OpenCV, a model backend), and --healthcheck, which runs every few seconds, needs neither
        if mode == env_names.MODE_COLLECT:
            from helpers.device.collector import main as run
        elif mode == env_names.MODE_INFER:
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


__all__ = ["healthcheck", "main"]
