"""`python -m helpers.localcloud start|status|stop|serve --workspace DIR`: prints JSON."""
from __future__ import annotations

import argparse
import json
import sys

from helpers.errors import EdgeLoopError
from helpers.localcloud import service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.localcloud", description=__doc__)
    parser.add_argument("command", choices=["start", "status", "stop", "serve"],
                        help="start (detached, idempotent), status, stop, or serve (foreground)")
    parser.add_argument("--workspace", default=None, help="workspace folder (default: EDGELOOP_WORKSPACE / settings)")
    parser.add_argument("--port", type=int, default=None, help="port (default: the previous one if free, else any free port)")
    parser.add_argument("--max-body-mb", type=float, default=None, help="request body limit in MB (default 20)")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from helpers.localcloud.app import serve

            if args.port is None:
                parser.error("serve needs --port (use `start` to pick one)")
            serve(service.resolve_workspace(args.workspace), args.port, args.max_body_mb)
            return 0
        if args.command == "start":
            out = service.ensure_running(args.workspace, port=args.port, max_body_mb=args.max_body_mb)
        elif args.command == "status":
            out = service.status(args.workspace)
        else:
            out = service.stop(args.workspace)
    except EdgeLoopError as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}), file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0 if args.command != "status" or out.get("running") else 3


if __name__ == "__main__":
    sys.exit(main())
