"""Device images: build `Dockerfile.device`, tag and push it, or run without an engine.

`ImageBuilder` is the protocol the notebooks call. `DockerImageBuilder` drives any Docker-API
endpoint through the docker SDK: `DOCKER_HOST` (a laptop's Docker, a CI engine), else the
local podman stack of `make containers` (`helpers.containers`: podman's Docker-API socket, a
registry on 127.0.0.1:5000 and a debootstrapped bookworm base, no Docker engine), else the
default Docker socket. It builds for a platform (default: this machine's architecture;
`linux/arm64` for a Raspberry Pi, emulated where qemu-user-static's binfmt handler is
registered), tags, and pushes to Docker Hub, ACR or the local registry, streaming progress
lines. Where no engine answers, `get_image_builder()` returns a `LocalProcessImage`: it builds
nothing and tells the edge agent to use the process runtime, which runs the same `start.sh`
from the checkout.

Secrets: the registry password is a `helpers.config.Secret` from `REGISTRY_PASSWORD`, passed
to the engine only as push credentials and to the deployment's `registryCredentials`
(`registry_credentials()`); it never enters a build argument, a layer or a progress line
(every line is masked).

Example:
    >>> builder = get_image_builder(load_settings())
    >>> for line in builder.build("me/edgeloop-device:1.0"):
    ...     print(line)
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from helpers.config import REPO_ROOT, Secret, Settings, load_settings, mask
from helpers.containers.base_image import base_image_name
from helpers.containers.engine import docker_client, docker_engine_available, engine_endpoint, load_stack
from helpers.containers.platforms import DEFAULT_PLATFORM, PLATFORMS, can_emulate, host_platform
from helpers.errors import ConfigError, EdgeLoopError, MissingExtra

log = logging.getLogger(__name__)

DOCKERFILE = "Dockerfile.device"
#: The official base for real users (multi-arch); Dockerfile.device's BASE_IMAGE default
OFFICIAL_BASE = "python:3.11-slim"


class ImageBuildError(EdgeLoopError):
    """The engine refused to build or push; the message carries its words and a fix."""


@runtime_checkable
class ImageBuilder(Protocol):
    """Builds and publishes the device image."""

    #: the runtime an agent should use for images from this builder ("container" or "process")
    runtime: str

    def engine_available(self) -> tuple[bool, str]:
        """(whether this builder can build, why not / which engine)."""

    def build(self, tag: str, platform: str = DEFAULT_PLATFORM, dockerfile: str = DOCKERFILE,
              context: str | Path | None = None) -> Iterator[str]:
        """Build the image and yield progress lines."""

    def push(self, tag: str) -> Iterator[str]:
        """Push a built image and yield progress lines."""


def image_reference(tag: str, registry: str = "") -> str:
    """`registry/tag` unless `tag` already names a registry (or none is set).

    Args:
        tag: `name:tag` or `repo/name:tag`.
        registry: e.g. `docker.io/me` or `myacr.azurecr.io`.

    Raises:
        ValueError: an empty tag.
    """
    if not tag:
        raise ValueError("an image tag is needed, e.g. 'edgeloop-device:1.0'")
    first = tag.split("/", 1)[0]
    has_registry = "/" in tag and ("." in first or ":" in first or first == "localhost")
    if not registry or has_registry:
        return tag
    return f"{registry.rstrip('/')}/{tag}"


def _registry_host(ref: str) -> str:
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("localhost", "::1") or name.startswith("127.")


def image_registry(settings: Settings) -> str:
    """Where device images go: `EDGELOOP_REGISTRY`, else the local stack's registry, else none."""
    if settings.registry:
        return settings.registry
    stack = load_stack()
    return stack.registry if stack is not None else ""


def registry_credentials(settings: Settings, image: str) -> dict[str, Any] | None:
    """The deployment's `registryCredentials` entry for `image`, from the environment; or None.

    `REGISTRY_USERNAME` / `REGISTRY_PASSWORD` (a `Secret`, shown masked in every manifest
    display) log the devices in to the image's registry, as the tutorial's Portal step does.
    None when no login is set (a public image, or the local registry that needs none).

    Raises:
        ConfigError: a username without a password, or a password without a username.
    """
    user, password = settings.registry_username, settings.registry_password
    if not user and not password:
        return None
    if not (user and password):
        raise ConfigError("set both REGISTRY_USERNAME and REGISTRY_PASSWORD (the registry login the devices "
                          "pull with), or neither for a registry without login")
    address = _registry_host(image_reference(image, settings.registry))
    name = re.sub(r"[^A-Za-z0-9]", "", address.split(".")[0]) or "registry"
    return {"name": name, "address": address, "username": user, "password": password}


def engine_available() -> tuple[bool, str]:
    """(True, "Docker engine X") when a Docker engine answers, else (False, why and the fix)."""
    return docker_engine_available()


@dataclass
class LocalProcessImage:
    """The stand-in where no container engine runs: nothing to build, agents run `start.sh`.

    `build()` and `push()` check that the files the image would contain are present and
    yield lines saying so; deployments made with this builder's image run under the agent's
    process runtime (`start_devices(..., runtime="process")`).
    """

    reason: str = "no container engine"
    image: str = "local/edgeloop-device:process"
    runtime: str = "process"

    def engine_available(self) -> tuple[bool, str]:
        return False, self.reason

    def build(self, tag: str = "", platform: str = DEFAULT_PLATFORM, dockerfile: str = DOCKERFILE,
              context: str | Path | None = None) -> Iterator[str]:
        root = Path(context) if context else REPO_ROOT
        for needed in (dockerfile, "start.sh", "helpers"):
            if not (root / needed).exists():
                raise ImageBuildError(f"{root / needed} is missing: run from a checkout of the repository")
        yield f"no image built: {self.reason}"
        yield f"the edge agents run {root / 'start.sh'} as a process (runtime 'process'), the image's entrypoint"
        yield f"deploy with image name {tag or self.image!r}; the process runtime records it and runs the checkout"

    def push(self, tag: str = "") -> Iterator[str]:
        yield f"nothing pushed: {self.reason}; process-runtime devices read the code from this checkout"


class DockerImageBuilder:
    """Build, tag and push `Dockerfile.device` through a Docker-API endpoint with the docker SDK.

    Args:
        registry: where to push (`docker.io/me`, `myacr.azurecr.io`, `127.0.0.1:5000`); empty:
            local tags only.
        username: registry login name (`REGISTRY_USERNAME`).
        password: registry password or token (`REGISTRY_PASSWORD`), a `Secret`.
        client: a `docker.DockerClient` (default: `helpers.containers.docker_client()`:
            `DOCKER_HOST`, else the `make containers` stack, else the default socket).
        base_image: Dockerfile.device's `BASE_IMAGE` (default: the local stack's debootstrapped
            base when the client is that stack, else the official `python:3.11-slim`).

    Raises:
        MissingExtra: the docker SDK is not installed.
    """

    runtime = "container"

    def __init__(self, registry: str = "", username: str = "", password: Secret | str | None = None,
                 client: Any = None, base_image: str | None = None):
        try:
            import docker
        except ImportError:
            raise MissingExtra("the docker SDK is not installed: pip install docker==7.2.0") from None
        self.registry = registry
        self.username = username
        self.password = password if isinstance(password, Secret) else Secret(password or "", "REGISTRY_PASSWORD")
        self._client = client
        self._own_client = client is None  # made from engine_endpoint() on first use
        self._docker = docker
        self.base_image = base_image

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerImageBuilder:
        """A builder with the registry (`image_registry`) and login from `settings` (env / .env)."""
        return cls(image_registry(settings), settings.registry_username, settings.registry_password)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client(timeout=900)
        return self._client

    def engine_available(self) -> tuple[bool, str]:
        return engine_available()

    def _base_image(self, platform: str) -> str:
        """The explicit base; the local stack's for `platform` when this builder talks to that
        stack; else the official one.

        Raises:
            ImageBuildError: the local stack has no base for `platform` (says how to add one).
        """
        if self.base_image:
            return self.base_image
        stack = load_stack()
        if stack is None:
            return OFFICIAL_BASE
        if self._client is not None and not self._own_client:
            local = _same_socket(self._client, stack.docker_host)
        else:
            base_url, _ = engine_endpoint()
            local = (base_url or os.environ.get("DOCKER_HOST", "")) == stack.docker_host
        if not local:
            return OFFICIAL_BASE
        name = base_image_name(platform)
        if platform != host_platform():
            from docker.errors import ImageNotFound

            try:
                self.client.images.get(name)
            except ImageNotFound:
                raise ImageBuildError(
                    f"the local stack has no {platform} base ({name}): `python -m helpers.containers up --platform "
                    f"{platform}` debootstraps one under qemu emulation; or build on the official base "
                    f"({OFFICIAL_BASE}) where a registry serves it") from None
        return name

    def _mask(self, text: str) -> str:
        secret = self.password.get_secret_value()
        return mask(text.replace(secret, "********") if secret else text)

    def build(self, tag: str, platform: str | None = None, dockerfile: str = DOCKERFILE,
              context: str | Path | None = None, nocache: bool = False) -> Iterator[str]:
        """Build `dockerfile` for `platform` (default: this machine's) as `tag` (prefixed with the
        registry); yield progress.

        Raises:
            ValueError: an unknown platform.
            ImageBuildError: the engine reported a build error, or this machine cannot build
                for `platform` (the message says where to build it instead).
        """
        platform = platform or host_platform()
        if platform not in PLATFORMS:
            raise ValueError(f"platform {platform!r} is not one of {PLATFORMS}")
        ref = image_reference(tag, self.registry)
        root = Path(context) if context else REPO_ROOT
        if not (root / dockerfile).is_file():
            raise ImageBuildError(f"{root / dockerfile} does not exist: build from the repository root")
        ok, how = can_emulate(platform)
        if not ok:
            raise ImageBuildError(how)
        base = self._base_image(platform)
        from docker.errors import APIError, DockerException

        yield f"building {ref} for {platform} ({how}) from {root / dockerfile}, base {base}"
        # Pull the base only when it comes from a registry; the local stack's base is imported.
        pull = not base.startswith("localhost/")
        try:
            stream = self.client.api.build(path=str(root), dockerfile=dockerfile, tag=ref, platform=platform,
                                           rm=True, decode=True, pull=pull, nocache=nocache,
                                           buildargs={"BASE_IMAGE": base})
            for chunk in stream:
                if "error" in chunk:
                    raise ImageBuildError(f"docker build of {ref} failed: {self._mask(str(chunk['error']).strip())}")
                for line in _progress_lines(chunk):
                    yield self._mask(line)
        except (APIError, DockerException) as exc:
            raise ImageBuildError(f"docker build of {ref} failed: {self._mask(str(exc))}") from exc
        yield f"built {ref}"

    def push(self, tag: str) -> Iterator[str]:
        """Push `tag` (prefixed with the registry) with the configured login; yield progress.

        A registry on this machine (127.0.0.1, localhost: the local stack's) takes pushes
        without a login; every other one needs REGISTRY_USERNAME and REGISTRY_PASSWORD.

        Raises:
            ConfigError: pushing to a remote registry without REGISTRY_USERNAME / REGISTRY_PASSWORD.
            ImageBuildError: the registry refused the push.
        """
        ref = image_reference(tag, self.registry)
        host = _registry_host(ref)
        has_login = bool(self.username and self.password)
        if not has_login and not _is_loopback(host):
            raise ConfigError(
                f"pushing {ref} needs a registry login: set REGISTRY_USERNAME and REGISTRY_PASSWORD "
                "(a Docker Hub access token or the ACR admin password) in .env"
            )
        from docker.errors import APIError, DockerException

        auth = ({"username": self.username, "password": self.password.get_secret_value(), "serveraddress": host}
                if has_login else None)
        repository, _, version = ref.rpartition(":")
        if "/" in version or not repository:  # "host:port/name" without a tag
            repository, version = ref, "latest"
        yield f"pushing {repository}:{version} to {host}" + (f" as {self.username}" if has_login else " (no login)")
        try:
            for chunk in self.client.api.push(repository, tag=version, auth_config=auth, stream=True, decode=True):
                if "error" in chunk:
                    raise ImageBuildError(f"push of {ref} failed: {self._mask(str(chunk['error']))}; check the login "
                                          "and that the repository exists")
                for line in _progress_lines(chunk):
                    yield self._mask(line)
        except (APIError, DockerException) as exc:
            raise ImageBuildError(f"push of {ref} failed: {self._mask(str(exc))}") from exc
        yield f"pushed {repository}:{version}"

    def image_size(self, tag: str) -> int:
        """The size in bytes of the built image `tag` (prefixed with the registry)."""
        return int(self.client.images.get(image_reference(tag, self.registry)).attrs.get("Size") or 0)


def _same_socket(client: Any, docker_host: str) -> bool:
    """Whether the docker SDK `client` talks to the unix socket `docker_host`."""
    api = getattr(client, "api", None)
    # a unix-socket client's base_url is "http+docker://localhost"; its adapter knows the path
    path = getattr(getattr(api, "_custom_adapter", None), "socket_path", None)
    return bool(docker_host) and path is not None and docker_host.split("://", 1)[-1] == str(path)


def _progress_lines(chunk: dict[str, Any]) -> list[str]:
    """Readable lines from one decoded engine progress chunk (masked)."""
    out = []
    if chunk.get("stream"):
        text = str(chunk["stream"]).rstrip()
        if text:
            out.append(text)
    elif chunk.get("status"):
        parts = [str(chunk.get("id", "")), str(chunk["status"]), str(chunk.get("progress", ""))]
        out.append(" ".join(p for p in parts if p))
    elif chunk.get("aux"):
        out.append(f"digest {chunk['aux'].get('Digest', chunk['aux'].get('ID', ''))}".strip())
    return [mask(line) for line in out]


def get_image_builder(settings: Settings | None = None, prefer: str = "auto") -> ImageBuilder:
    """The image builder for this machine.

    Args:
        settings: registry and login (default: `load_settings()`).
        prefer: `auto` (an engine when one answers, else the process stand-in), `container`
            (or `docker`: fail without an engine) or `process`.

    Raises:
        ConfigError: `prefer="docker"` and no engine answers (the message says why), or an
            unknown `prefer`.
    """
    if prefer not in ("auto", "container", "docker", "process"):
        raise ConfigError(f"prefer={prefer!r} is not one of auto, container, docker, process")
    if prefer == "process":
        return LocalProcessImage("the process runtime was asked for")
    ok, reason = engine_available()
    if ok:
        return DockerImageBuilder.from_settings(settings or load_settings())
    if prefer == "docker":
        raise ConfigError(f"a Docker engine is needed to build {DOCKERFILE} ({reason}); without Docker on Linux, "
                          "`make containers` runs podman's Docker API and a local registry")
    log.info("no Docker engine (%s): using the process runtime stand-in", reason)
    return LocalProcessImage(reason)


__all__ = [
    "DOCKERFILE",
    "DockerImageBuilder",
    "ImageBuildError",
    "ImageBuilder",
    "LocalProcessImage",
    "OFFICIAL_BASE",
    "engine_available",
    "get_image_builder",
    "image_reference",
    "image_registry",
    "registry_credentials",
]
