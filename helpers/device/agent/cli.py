"""`python -m helpers.device.agent`: the edge agent of one device, from its connection string and a CA file."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from helpers.config import Secret, mask, parse_connection_string
from helpers.device.agent.core import EdgeAgent
from helpers.device.agent.state import AgentConfig
from helpers.device.hub_link import EDGE_AGENT, AgentLink, HubEndpoint, ModuleRegistry
from helpers.device.runtime import RuntimeUnavailable
from helpers.errors import ConfigError
from helpers.protocol.module_env import IOTEDGE_CONNECTION_STRING

log = logging.getLogger("helpers.device.agent")

CONNECTION_STRING_ENV = IOTEDGE_CONNECTION_STRING


class _MaskingFormatter(logging.Formatter):
    """Formats records, then masks anything that looks like a key or a signature."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with masked secrets (the fleet sends stderr to `agent.log`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("azure.iot.device").setLevel(logging.WARNING)
    logging.getLogger("paho").setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.device.agent",
        description="Edge agent: runs the modules of this device's IoT Edge deployment and reports their state.",
    )
    p.add_argument("--connection-string", default=None,
                   help=f"device connection string (default: ${CONNECTION_STRING_ENV}; the environment "
                        "keeps it out of the process list)")
    p.add_argument("--workdir", required=True, help="the device's folder (state, scene, module folders)")
    p.add_argument("--runtime", choices=("process", "container", "docker"),
                   default=os.environ.get("EDGELOOP_RUNTIME", "process"),
                   help="module runtime: process (start.sh as a process) or container (the module images, "
                        "through a Docker-API engine; docker is the same)")
    p.add_argument("--backoff-max", type=float, default=30.0, help="cap of the module restart backoff (s)")
    p.add_argument("--stable-after", type=float, default=60.0, help="seconds of running that reset the backoff")
    p.add_argument("--hub-backoff-max", type=float, default=10.0, help="cap of the hub connect retry delay (s)")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="SIGTERM grace per module before SIGKILL (s)")
    p.add_argument("--ca-file", default=None,
                   help="the CA certificate to trust for the hub (the local stand-in's; its modules get it as "
                        "EdgeModuleCACertificateFile); omit it for Azure IoT Hub (the system's CAs)")
    p.add_argument("--rest-url", default=None,
                   help="the hub's HTTPS URL when it is not https://HostName (the local stand-in's REST port)")
    p.add_argument("--hub-timeout", type=float, default=10.0, help="seconds per registry request")
    p.add_argument("--health-grace", type=float, default=30.0,
                   help="seconds after a runner starts before its /api/health is probed")
    p.add_argument("--health-interval", type=float, default=10.0, help="seconds between health probes")
    p.add_argument("--log-level", default=os.environ.get("EDGELOOP_LOG_LEVEL", "INFO"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m helpers.device.agent`; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    raw = args.connection_string or os.environ.get(CONNECTION_STRING_ENV, "")
    if not raw:
        log.error("no connection string: set %s (or pass --connection-string); get it from "
                  "hub.connection_string(device_id)", CONNECTION_STRING_ENV)
        return 2
    cs = Secret(raw, CONNECTION_STRING_ENV)
    try:
        parts = parse_connection_string(cs)
        device_id = parts.get("DeviceId")
        if not device_id or not parts.get("SharedAccessKey") or parts.get("ModuleId"):
            raise ConfigError("the connection string needs DeviceId=... and SharedAccessKey=... of the device (not a "
                              "module's, not the service's): hub.connection_string(device_id)")
        endpoint = HubEndpoint.for_connection_string(cs, ca_file=args.ca_file, rest_url=args.rest_url)
        registry = ModuleRegistry(cs, endpoint, timeout=args.hub_timeout)
        config = AgentConfig(
            workdir=Path(args.workdir), runtime=args.runtime, backoff_max_s=args.backoff_max,
            stable_after_s=args.stable_after, hub_backoff_max_s=args.hub_backoff_max, stop_timeout_s=args.stop_timeout,
            health_grace_s=args.health_grace, health_interval_s=args.health_interval,
        )
        agent = EdgeAgent(lambda: AgentLink(registry.connection_string(EDGE_AGENT), endpoint),
                          registry.connection_string, endpoint.ca_bundle_path(), device_id, config)
    except RuntimeUnavailable as exc:
        log.error("%s", exc)
        return 3
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    return agent.run()


__all__ = ["CONNECTION_STRING_ENV", "build_parser", "main", "setup_logging"]
