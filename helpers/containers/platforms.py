"""Docker platforms: this machine's, and whether another one's build steps can run here.

Another platform's steps (a `linux/arm64` image for a Raspberry Pi built on an amd64 laptop)
run under qemu-user-static, when its binfmt_misc handler is registered with the kernel.
"""
from __future__ import annotations

import platform as _platform
from pathlib import Path

PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")
#: `uname -m` -> Docker platform
_MACHINES = {"x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64", "arm64": "linux/arm64",
             "armv7l": "linux/arm/v7"}
#: Docker platform -> the binfmt_misc handler qemu-user-static registers for it
_QEMU_HANDLERS = {"linux/amd64": "qemu-x86_64", "linux/arm64": "qemu-aarch64", "linux/arm/v7": "qemu-arm"}
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"


def host_platform() -> str:
    """This machine's Docker platform (`linux/amd64`, `linux/arm64`, `linux/arm/v7`)."""
    machine = _platform.machine().lower()
    return _MACHINES.get(machine, f"linux/{machine}")


DEFAULT_PLATFORM = host_platform()


def can_emulate(platform: str, binfmt_dir: str | Path = BINFMT_DIR) -> tuple[bool, str]:
    """Whether build steps for `platform` can run here: (yes/no, how or why not and the fix).

    The host's own platform always can; another one needs qemu-user-static's binfmt handler
    registered with the kernel (`/proc/sys/fs/binfmt_misc/qemu-aarch64` for linux/arm64).
    """
    host = host_platform()
    if platform == host:
        return True, f"native {host}"
    handler = _QEMU_HANDLERS.get(platform)
    entry = Path(binfmt_dir) / handler if handler else None
    if entry is not None and entry.is_file():
        try:
            enabled = entry.read_text().splitlines()[0].strip() == "enabled"
        except (OSError, IndexError):
            enabled = False
        if enabled:
            return True, f"{platform} emulated with {handler} (binfmt_misc) on this {host} machine"
    return False, (
        f"this {host} machine cannot run {platform} build steps: no {handler or 'qemu'} handler is registered in "
        f"{binfmt_dir} (install qemu-user-static and binfmt-support, e.g. `apt-get install qemu-user-static "
        "binfmt-support`, where the kernel allows binfmt_misc; Docker Desktop has it built in). Or build it on a "
        f"machine that can, and push it to the same registry: `docker buildx build --platform {platform} "
        "-f Dockerfile.device -t REGISTRY/edgeloop-device:TAG --push .` (or `docker build` on the Raspberry Pi "
        "itself); the devices then pull it as usual"
    )


__all__ = ["BINFMT_DIR", "DEFAULT_PLATFORM", "PLATFORMS", "can_emulate", "host_platform"]
