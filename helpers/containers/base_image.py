"""The local stack's base image, with no registry: `debootstrap --variant=minbase bookworm`
with python3 (3.11, as the official `python:3.11-slim`), imported with `podman import` as
`localhost/edgeloop-base:bookworm` (`...:bookworm-arm64` etc. for another platform, its second
stage run under qemu-user-static's binfmt emulation).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from helpers.containers.engine import ContainerStackError, Say, podman_env, run_podman
from helpers.containers.platforms import can_emulate, host_platform

BASE_IMAGE = "localhost/edgeloop-base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: Packages in the base image: python3 3.11 with venv (pip comes with it), certificates for HTTPS
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: Where Debian keeps a machine's own CA certificates (copied into the local base image)
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


def add_local_cas(rootfs: Path, source: Path = LOCAL_CA_DIR) -> list[str]:
    """Make the base trust this machine's own CAs, as the host does (a TLS-inspecting proxy's).

    Copies `/usr/local/share/ca-certificates/*.crt` into the root filesystem (so a later
    `update-ca-certificates` keeps them), appends them to its bundle, and points pip at the
    system bundle (`/etc/pip.conf`): pip otherwise trusts only its own certifi copy. Only
    public certificates travel; the local base never leaves this machine.

    Returns:
        The names of the certificates added.
    """
    certs = sorted(source.glob("*.crt")) if source.is_dir() else []
    bundle = rootfs / "etc/ssl/certs/ca-certificates.crt"
    if not certs or not bundle.is_file():
        return []
    dest = rootfs / "usr/local/share/ca-certificates"
    dest.mkdir(parents=True, exist_ok=True)
    with open(bundle, "a") as out:
        for cert in certs:
            text = cert.read_text()
            (dest / cert.name).write_text(text)
            out.write("\n" + text.strip() + "\n")
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    return [c.name for c in certs]


#: Docker platform -> Debian architecture
DEBIAN_ARCH = {"linux/amd64": "amd64", "linux/arm64": "arm64", "linux/arm/v7": "armhf"}


def base_image_name(platform: str | None = None) -> str:
    """The local base for `platform`: `localhost/edgeloop-base:bookworm` for this machine's,
    `...:bookworm-arm64` (etc.) for another one."""
    if platform is None or platform == host_platform():
        return BASE_IMAGE
    if platform not in DEBIAN_ARCH:
        raise ContainerStackError(f"no Debian architecture for {platform}: use one of {sorted(DEBIAN_ARCH)}")
    return f"{BASE_IMAGE}-{DEBIAN_ARCH[platform].replace('armhf', 'armv7')}"


def unmount_below(root: Path) -> list[str]:
    """Unmount every mount point under `root` (deepest first), so deleting the tree never
    reaches into a mounted /proc, /sys or /dev.

    Raises:
        ContainerStackError: something stays mounted (then nothing may delete the tree).
    """
    prefix = str(root.resolve()) + "/"
    def mounted() -> list[str]:
        points = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
        return sorted(set(points), key=len, reverse=True)
    done = []
    for point in mounted():
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
        done.append(point)
    left = mounted()
    if left:
        raise ContainerStackError(f"still mounted under {root}: {left}; unmount them before deleting {root}")
    return done


def ensure_base_image(folder: Path, say: Say, mirror: str = MIRROR, platform: str | None = None) -> None:
    """The local base (debootstrap minbase + python3) for `platform` (default this machine's), unless present.

    Another platform's base is debootstrapped for its Debian architecture, its second stage run
    under qemu-user-static's binfmt emulation.

    Raises:
        ContainerStackError: another platform without emulation (the message says how to get it).
    """
    platform = platform or host_platform()
    image = base_image_name(platform)
    if run_podman(folder, "image", "exists", image, check=False).returncode == 0:
        say(f"base image: {image} already present")
        return
    ok, how = can_emulate(platform)
    if not ok:
        raise ContainerStackError(how)
    arch = DEBIAN_ARCH.get(platform, "")
    started = time.monotonic()
    # emulated, debootstrap's second stage (dpkg under qemu) takes many times longer
    timeout = 1200 if platform == host_platform() else 3600
    tmp = Path(tempfile.mkdtemp(dir=folder / "tmp"))
    try:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--arch={arch}", f"--include={','.join(BASE_PACKAGES)}", SUITE,
               str(rootfs), mirror]
        say(f"base image: {' '.join(cmd)}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its chroot'ed dpkg children go with it
            proc.wait()
            unmount_below(rootfs)  # a killed debootstrap leaves /proc mounted in the tree
            raise ContainerStackError(
                f"debootstrap for {platform} did not finish in {timeout} s ({how}); on a busy or small machine "
                "run it again later, or build the image on a machine of that platform") from None
        if proc.returncode != 0:
            unmount_below(rootfs)
            raise ContainerStackError(f"debootstrap failed ({proc.returncode}): {output[-1200:]}")
        unmount_below(rootfs)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        # as debian:bookworm-slim does: no manuals, no docs but each package's copyright file
        for docs in ("usr/share/man", "usr/share/info"):
            shutil.rmtree(rootfs / docs, ignore_errors=True)
        for item in (rootfs / "usr/share/doc").glob("*/*"):
            if item.name != "copyright":
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        trusted = add_local_cas(rootfs)
        if trusted:
            say(f"base image: trusts this machine's local CA certificate(s) {', '.join(trusted)}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        env = {**os.environ, **podman_env(folder)}
        os_name, _, rest = platform.partition("/")
        cpu, _, variant = rest.partition("/")
        cmd_import = ["podman", "import", "--change", "CMD=/bin/bash", "--os", os_name, "--arch", cpu]
        if variant:
            cmd_import += ["--variant", variant]
        proc2 = subprocess.run([*cmd_import, "-", image], stdin=tar.stdout,
                               env=env, capture_output=True, text=True, timeout=600)
        tar.stdout.close()  # type: ignore[union-attr]
        tar.wait()
        if proc2.returncode != 0 or tar.returncode != 0:
            raise ContainerStackError(f"podman import of the base image failed: {proc2.stderr.strip()[-800:]}")
    finally:
        # never delete through a mount: unmount_below raises while anything stays mounted
        unmount_below(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"base image: {image} imported ({time.monotonic() - started:.0f} s, {how})")


__all__ = [
    "BASE_IMAGE",
    "BASE_PACKAGES",
    "DEBIAN_ARCH",
    "LOCAL_CA_DIR",
    "MIRROR",
    "SUITE",
    "add_local_cas",
    "base_image_name",
    "ensure_base_image",
    "unmount_below",
]
