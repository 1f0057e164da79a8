"""`python -m helpers.localcloud start|status|stop|serve|credentials --workspace DIR`: prints JSON.

`consumer-group create|list|delete [NAME]` manages the consumer groups of the hub's built-in
Event Hubs-compatible endpoint, as `az iot hub consumer-group ...` does (kept in the workspace).

`credentials` prints every setting a tool needs to reach the stand-ins: the hub's service connection
string and the CA file to trust for it (the service SDK, `az iot` with its own CA setting), the
studio's API key, project id, `EI_API_ENDPOINT` and `EI_INGESTION_ENDPOINT` (what the `edgeimpulse`
SDK reads); `--format env` prints them as `NAME=value` lines for a `.env` file or `eval "$(...)"`.
"""
from __future__ import annotations

import argparse
import json
import sys

from helpers.endpoints import cloud_dir, read_service, resolve_workspace
from helpers.errors import ConfigError, EdgeLoopError
from helpers.localcloud import service
from helpers.localcloud.app import serve
from helpers.localcloud.common.db import Store
from helpers.localcloud.credentials import credentials, env_lines
from helpers.localcloud.eventhub.groups import ConsumerGroups
from helpers.localcloud.hub.runtime import hub_runtime_from


def consumer_group(workspace: str | None, action: str, name: str | None) -> dict:
    """`consumer-group create|list|delete [NAME]`: the groups after the action (service.json follows)."""
    ws = resolve_workspace(workspace)
    db = cloud_dir(ws) / "state.db"
    if not db.is_file():
        raise ConfigError(f"{db} does not exist: start the local cloud first (python -m helpers.localcloud start "
                          f"--workspace {ws})")
    if action not in ("create", "list", "delete") or (action != "list") != bool(name):
        raise ConfigError("usage: consumer-group create NAME | consumer-group list | consumer-group delete NAME")
    store = Store(db)
    try:
        groups = ConsumerGroups(store)
        names = groups.list() if action == "list" else getattr(groups, action)(name)
    finally:
        store.close()
    info = read_service(ws)
    if info is not None and "eventhub_consumer_groups" in info:
        service.write_service(ws, {**info, "eventhub_consumer_groups": names})
    return {"consumer_groups": names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.localcloud", description=__doc__)
    parser.add_argument("command", choices=["start", "status", "stop", "serve", "credentials", "consumer-group"],
                        help="start (detached, idempotent), status, stop, serve (foreground), or credentials "
                             "(every setting a tool needs: the hub's connection string and CA file, the studio's key, "
                             "project id and endpoints), or consumer-group create|list|delete [NAME]")
    parser.add_argument("args", nargs="*", help="consumer-group: create NAME, list, or delete NAME")
    parser.add_argument("--workspace", default=None, help="workspace folder (default: EDGELOOP_WORKSPACE / settings)")
    parser.add_argument("--format", choices=["json", "env"], default="json",
                        help="credentials: JSON (default) or NAME=value lines for a .env file or eval")
    parser.add_argument("--port", type=int, default=None, help="port (default: the previous one if free, else any free port)")
    parser.add_argument("--max-body-mb", type=float, default=None, help="request body limit in MB (default 20)")
    parser.add_argument("--hub-port", type=int, default=None, help="serve: the hub's HTTPS port on the workspace's hub address")
    parser.add_argument("--throttle-rps", type=float, default=None,
                        help="hub requests per second before 429 + Retry-After (default EDGELOOP_HUB_THROTTLE_RPS; off)")
    parser.add_argument("--throttle-burst", type=int, default=None, help="hub burst size (default EDGELOOP_HUB_THROTTLE_BURST)")
    parser.add_argument("--deployment-timing", default=None,
                        help="when deployments are evaluated: fast (default), azure (~30 s, then every 5 min), or DELAY,INTERVAL "
                             "seconds (default EDGELOOP_HUB_DEPLOYMENT_TIMING)")
    args = parser.parse_args(argv)
    if args.args and args.command != "consumer-group":
        parser.error(f"{args.command} takes no further arguments (got {' '.join(args.args)})")
    hub_settings = {k: getattr(args, k) for k in ("throttle_rps", "throttle_burst", "deployment_timing")
                    if getattr(args, k) is not None}
    try:
        if args.command == "serve":
            if args.port is None:
                parser.error("serve needs --port (use `start` to pick one)")
            serve(resolve_workspace(args.workspace), args.port, args.max_body_mb, hub_port=args.hub_port,
                  hub=hub_runtime_from(**hub_settings))
            return 0
        if args.command == "credentials":
            out = credentials(args.workspace)
            if args.format == "env":
                print(env_lines(out), end="")
                return 0
        elif args.command == "start":
            out = service.ensure_running(args.workspace, port=args.port, max_body_mb=args.max_body_mb, hub_settings=hub_settings)
        elif args.command == "consumer-group":
            out = consumer_group(args.workspace, args.args[0] if args.args else "", (args.args + [None, None])[1])
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
