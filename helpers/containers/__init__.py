"""A local container stack without a Docker engine: podman, a local registry, a Docker-API socket.

`make containers` (`python -m helpers.containers up`) sets up, idempotently, in a
project-owned folder (`.containers/` in the checkout, or `$EDGELOOP_CONTAINERS_DIR`):

- podman's configuration: `containers.conf` (runc, cgroupfs, lowered default ulimits: the
  host's limits are refused inside a container here), `storage.conf` (overlay storage in the
  folder), `registries.conf` (the local registry marked insecure, short names from docker.io);
  every podman call and the API service read these three through `CONTAINERS_CONF`,
  `CONTAINERS_STORAGE_CONF` and `CONTAINERS_REGISTRIES_CONF`;
- a base image without any registry: `debootstrap --variant=minbase bookworm` with
  python3 (3.11, as the official `python:3.11-slim`), imported with `podman import` as
  `localhost/edgeloop-base:bookworm`;
- Debian's `docker-registry` on 127.0.0.1:5000 (another free port when 5000 is taken), with
  filesystem storage in the folder;
- `podman system service --time=0 unix://.../podman.sock`: the Docker API (1.41) the `docker`
  SDK talks to (`DOCKER_HOST=unix://.../podman.sock`).

`stack.json` in the folder says what runs (socket, registry, base image); `helpers.images` and
the agent's container runtime read it when `DOCKER_HOST` is not set. `make containers-down`
(`python -m helpers.containers down`) stops the service and the registry, removes the
containers the stack ran and deletes the folder.

Missing Debian packages (podman, runc, debootstrap, docker-registry) are installed with apt-get
when running as root on Debian; elsewhere the error names the command to run.

Modules: `engine` (which Docker-API endpoint, the docker SDK client, podman calls),
`platforms` (this machine's platform, qemu emulation), `base_image` (the debootstrapped
base), `stack` (up / down), `__main__` (the command line).
"""
from helpers.containers.base_image import (
    BASE_IMAGE,
    DEBIAN_ARCH,
    add_local_cas,
    base_image_name,
    ensure_base_image,
    unmount_below,
)
from helpers.containers.engine import (
    MANAGED_LABEL,
    STACK_DIR_ENV,
    STACK_FILE,
    ContainerStackError,
    Stack,
    docker_client,
    docker_engine_available,
    engine_endpoint,
    load_stack,
    podman_env,
    run_podman,
    stack_dir,
)
from helpers.containers.platforms import PLATFORMS, can_emulate, host_platform
from helpers.containers.stack import down, missing_packages, running, stop, up

__all__ = [
    "running",
    "stop",
    "BASE_IMAGE",
    "DEBIAN_ARCH",
    "MANAGED_LABEL",
    "PLATFORMS",
    "STACK_DIR_ENV",
    "STACK_FILE",
    "ContainerStackError",
    "Stack",
    "add_local_cas",
    "base_image_name",
    "can_emulate",
    "docker_client",
    "docker_engine_available",
    "down",
    "engine_endpoint",
    "ensure_base_image",
    "host_platform",
    "load_stack",
    "missing_packages",
    "podman_env",
    "run_podman",
    "stack_dir",
    "unmount_below",
    "up",
]
