"""A local container stack without a Docker engine: podman, a local registry, a Docker-API socket.

`python -m helpers.containers up|down|status` (`make containers`, `make containers-down`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from helpers.containers.engine import STACK_DIR_ENV, ContainerStackError, load_stack, stack_dir
from helpers.containers.stack import down, up


def main(argv: list[str] | None = None) -> int:
    """`python -m helpers.containers up|down|status`."""
    p = argparse.ArgumentParser(prog="python -m helpers.containers", description=__doc__.split("\n", 1)[0])
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("--dir", default=None, help=f"the stack's folder (default ${STACK_DIR_ENV} or .containers/)")
    p.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing missing packages")
    p.add_argument("--platform", action="append", default=[], metavar="linux/arm64",
                   help="also a base image for this platform (needs qemu-user-static's binfmt emulation)")
    args = p.parse_args(argv)
    say = lambda line: print(f"containers: {line}", flush=True)  # noqa: E731
    try:
        if args.action == "up":
            started = time.monotonic()
            up(args.dir, say, install=not args.no_install, platforms=tuple(args.platform))
            say(f"done in {time.monotonic() - started:.1f} s")
        elif args.action == "down":
            down(args.dir, say)
        else:
            stack = load_stack(args.dir)
            say(json.dumps(asdict(stack)) if stack else f"not running (no answering stack in {stack_dir(args.dir)})")
            return 0 if stack else 1
    except ContainerStackError as exc:
        say(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
