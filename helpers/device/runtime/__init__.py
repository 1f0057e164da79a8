"""Module runtimes for the edge agent: local processes, or containers where a Docker-API engine runs.

A runtime starts one module from a `ModuleLaunch` and gives back a `ModuleHandle` the agent
polls and stops. Two runtimes share that shape:

- `ProcessRuntime` (the default, no container engine needed): runs the repository's
  `start.sh` as a process in its own process group, with the module's environment, so the
  same entrypoint the image uses runs here. Container port 4912 is stood for by a free host
  port passed as `PORT`. Each module's stdout/stderr goes to `module.log` in its own folder.
- `ContainerRuntime` (`container`, formerly `docker`): pulls and runs the module's image with
  the docker SDK through any Docker-API endpoint (Docker, or podman's socket from
  `make containers`), applying the manifest's createOptions (ports bound to 127.0.0.1 unless
  the manifest names an address, device mappings, binds), as Azure IoT Edge does.

Modules: `supervision` (launch, handle, stop, pids and ports), `process`, `container`;
`make_runtime(name)` picks one.
"""
from __future__ import annotations

from helpers.device.runtime.container import (
    CONTAINER_NETWORK_ENV,
    CONTAINER_RUNTIMES,
    LABEL_DEVICE,
    LABEL_GENERATION,
    LABEL_MANAGED,
    LABEL_MODULE,
    NETWORKS,
    ContainerHandle,
    ContainerRuntime,
    DockerHandle,
    DockerRuntime,
    env_file_binds,
    registry_auth_for,
)
from helpers.device.runtime.process import (
    INHERITED_ENV,
    START_SCRIPT_ENV,
    ProcessHandle,
    ProcessRuntime,
    find_start_script,
    published_host_ip,
)
from helpers.device.runtime.supervision import (
    CONTAINER_PORT,
    LOG_MAX_BYTES,
    LOG_NAME,
    ModuleHandle,
    ModuleLaunch,
    RuntimeUnavailable,
    free_port,
    kill_group,
    pid_alive,
    port_free,
    process_start_ticks,
    read_json,
    stop_handles,
    utc_now,
)


def make_runtime(name: str) -> ProcessRuntime | ContainerRuntime:
    """The runtime called `name`: `process`, or `container` (`docker` is the same).

    Raises:
        RuntimeUnavailable: an unknown name, or the runtime cannot run here.
    """
    if name == "process":
        return ProcessRuntime()
    if name in CONTAINER_RUNTIMES:
        return ContainerRuntime()
    raise RuntimeUnavailable(f"unknown runtime {name!r}: use 'process' or 'container'")


__all__ = [
    "CONTAINER_NETWORK_ENV",
    "CONTAINER_PORT",
    "CONTAINER_RUNTIMES",
    "INHERITED_ENV",
    "LABEL_DEVICE",
    "LABEL_GENERATION",
    "LABEL_MANAGED",
    "LABEL_MODULE",
    "LOG_MAX_BYTES",
    "LOG_NAME",
    "NETWORKS",
    "START_SCRIPT_ENV",
    "ContainerHandle",
    "ContainerRuntime",
    "DockerHandle",
    "DockerRuntime",
    "ModuleHandle",
    "ModuleLaunch",
    "ProcessHandle",
    "ProcessRuntime",
    "RuntimeUnavailable",
    "env_file_binds",
    "find_start_script",
    "free_port",
    "kill_group",
    "make_runtime",
    "pid_alive",
    "port_free",
    "process_start_ticks",
    "published_host_ip",
    "read_json",
    "registry_auth_for",
    "stop_handles",
    "utc_now",
]
