"""The device image on the local container stack: set-up, cold and warm builds, push, size.

Needs `make containers` (podman's Docker API, the local registry, the debootstrapped base):

    .venv/bin/python bench/bench_containers.py [--platform linux/arm64]

- `stack_up_s`: `helpers.containers.up()` (cold when the stack was down: debootstrap + import);
- `cold_build_s`: Dockerfile.device built without the layer cache (pip downloads included);
- `warm_build_s`: the same again after a change to helpers/ only (the COPY layer and after);
- `push_s`, `image_bytes`: push to the local registry and the image's size.
Writes bench/results/containers[_<arch>].json with the machine's load beside the timings.
"""
from __future__ import annotations

import argparse
import time

from common import REPO, write_result

from helpers import containers
from helpers.containers.platforms import host_platform
from helpers.images import DockerImageBuilder


def timed(fn):
    start = time.monotonic()
    value = fn()
    return value, round(time.monotonic() - start, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--platform", default=None, help="default: this machine's")
    args = p.parse_args()
    platform = args.platform or host_platform()
    platforms = () if platform == host_platform() else (platform,)
    stack, up_s = timed(lambda: containers.up(say=print, platforms=platforms))
    builder = DockerImageBuilder(stack.registry)
    tag = f"edgeloop-device:bench-{platform.split('/', 1)[1].replace('/', '')}"
    _, cold_s = timed(lambda: list(builder.build(tag, platform=platform, nocache=True)))
    marker = REPO / "helpers" / ".bench-touch"  # a code-only change: only the COPY layer and later rebuild
    marker.write_text(str(time.time()))
    try:
        _, warm_s = timed(lambda: list(builder.build(tag, platform=platform)))
    finally:
        marker.unlink(missing_ok=True)
    _, push_s = timed(lambda: list(builder.push(tag)))
    size = builder.image_size(tag)
    result = {"platform": platform, "host_platform": host_platform(), "stack_up_s": up_s, "cold_build_s": cold_s,
              "warm_build_s": warm_s, "push_s": push_s, "image_bytes": size, "image_mb": round(size / 1e6),
              "base_image": containers.base_image_name(platform)}
    name = "containers" if platform == host_platform() else f"containers_{platform.split('/', 1)[1].replace('/', '')}"
    print(result)
    print(write_result(name, result))


if __name__ == "__main__":
    main()
