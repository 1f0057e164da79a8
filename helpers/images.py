"""Device images: build `Dockerfile.device`, tag and push it, or run without an engine.

`ImageBuilder` is the protocol the notebooks call. `DockerImageBuilder` drives a Docker
engine through the docker SDK (build for a platform, tag, push to Docker Hub or ACR with the
registry login from the settings), streaming progress lines. Where no engine answers,
`get_image_builder()` returns a `LocalProcessImage`: it builds nothing and tells the edge
agent to use the process runtime, which runs the same `start.sh` from the checkout.

Secrets: the registry password is a `helpers.config.Secret` from `REGISTRY_PASSWORD`, passed
to the engine only as push/login credentials; it never enters a build argument, a layer or a
progress line (every line is masked).

Example:
    >>> builder = get_image_builder(load_settings())
    >>> for line in builder.build("me/edgeloop-device:1.0"):
    ...     print(line)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

from helpers.config import REPO_ROOT, Secret, Settings, mask
from helpers.errors import ConfigError, EdgeLoopError, MissingExtra

log = logging.getLogger(__name__)

DOCKERFILE = "Dockerfile.device"
DEFAULT_PLATFORM = "linux/amd64"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


class ImageBuildError(EdgeLoopError):
    """The engine refused to build or push; the message carries its words and a fix."""


@runtime_checkable
class ImageBuilder(Protocol):
    """Builds and publishes the device image."""

    #: the runtime an agent should use for images from this builder ("docker" or "process")
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


def engine_available() -> tuple[bool, str]:
    """(True, "Docker engine X") when a Docker engine answers, else (False, why and the fix)."""
    from helpers.device.runtime import docker_engine_available

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
    """Build, tag and push `Dockerfile.device` with the docker SDK.

    Args:
        registry: where to push (`docker.io/me`, `myacr.azurecr.io`); empty: local tags only.
        username: registry login name (`REGISTRY_USERNAME`).
        password: registry password or token (`REGISTRY_PASSWORD`), a `Secret`.
        client: a `docker.DockerClient` (default: `docker.from_env()`).

    Raises:
        MissingExtra: the docker SDK is not installed.
    """

    runtime = "docker"

    def __init__(self, registry: str = "", username: str = "", password: Secret | str | None = None,
                 client: Any = None):
        try:
            import docker
        except ImportError:
            raise MissingExtra("the docker SDK is not installed: pip install docker==7.2.0") from None
        self.registry = registry
        self.username = username
        self.password = password if isinstance(password, Secret) else Secret(password or "", "REGISTRY_PASSWORD")
        self._client = client
        self._docker = docker

    @classmethod
    def from_settings(cls, settings: Settings) -> "DockerImageBuilder":
        """A builder with the registry and login from `settings` (env / .env)."""
        return cls(settings.registry, settings.registry_username, settings.registry_password)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._docker.from_env(timeout=600)
        return self._client

    def engine_available(self) -> tuple[bool, str]:
        return engine_available()

    def build(self, tag: str, platform: str = DEFAULT_PLATFORM, dockerfile: str = DOCKERFILE,
              context: str | Path | None = None) -> Iterator[str]:
        """Build `dockerfile` for `platform` as `tag` (prefixed with the registry); yield progress.

        Raises:
            ValueError: an unknown platform.
            ImageBuildError: the engine reported a build error.
        """
        if platform not in PLATFORMS:
            raise ValueError(f"platform {platform!r} is not one of {PLATFORMS}")
        ref = image_reference(tag, self.registry)
        root = Path(context) if context else REPO_ROOT
        if not (root / dockerfile).is_file():
            raise ImageBuildError(f"{root / dockerfile} does not exist: build from the repository root")
        from docker.errors import APIError, DockerException

        yield f"building {ref} for {platform} from {root / dockerfile}"
        try:
            stream = self.client.api.build(path=str(root), dockerfile=dockerfile, tag=ref, platform=platform,
                                           rm=True, decode=True, pull=True)
            for chunk in stream:
                if "error" in chunk:
                    raise ImageBuildError(f"docker build of {ref} failed: {mask(str(chunk['error']).strip())}")
                for line in _progress_lines(chunk):
                    yield line
        except (APIError, DockerException) as exc:
            raise ImageBuildError(f"docker build of {ref} failed: {mask(str(exc))}") from exc
        yield f"built {ref}"

    def push(self, tag: str) -> Iterator[str]:
        """Push `tag` (prefixed with the registry) with the configured login; yield progress.

        Raises:
            ConfigError: pushing to a registry without REGISTRY_USERNAME / REGISTRY_PASSWORD.
            ImageBuildError: the registry refused the push.
        """
        ref = image_reference(tag, self.registry)
        if not (self.username and self.password):
            raise ConfigError(
                f"pushing {ref} needs a registry login: set REGISTRY_USERNAME and REGISTRY_PASSWORD "
                "(a Docker Hub access token or the ACR admin password) in .env"
            )
        from docker.errors import APIError, DockerException

        auth = {"username": self.username, "password": self.password.get_secret_value(),
                "serveraddress": _registry_host(ref)}
        repository, _, version = ref.rpartition(":")
        if "/" in version or not repository:  # "host:port/name" without a tag
            repository, version = ref, "latest"
        yield f"pushing {repository}:{version} to {auth['serveraddress']} as {self.username}"
        try:
            for chunk in self.client.api.push(repository, tag=version, auth_config=auth, stream=True, decode=True):
                if "error" in chunk:
                    raise ImageBuildError(f"push of {ref} failed: {mask(str(chunk['error']))}; check the login "
                                          "and that the repository exists")
                for line in _progress_lines(chunk):
                    yield line
        except (APIError, DockerException) as exc:
            raise ImageBuildError(f"push of {ref} failed: {mask(str(exc))}") from exc
        yield f"pushed {repository}:{version}"


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
        prefer: `auto` (Docker when an engine answers, else the process stand-in), `docker`
            (fail without an engine) or `process`.

    Raises:
        ConfigError: `prefer="docker"` and no engine answers (the message says why), or an
            unknown `prefer`.
    """
    from helpers.config import load_settings

    if prefer not in ("auto", "docker", "process"):
        raise ConfigError(f"prefer={prefer!r} is not one of auto, docker, process")
    if prefer == "process":
        return LocalProcessImage("the process runtime was asked for")
    ok, reason = engine_available()
    if ok:
        return DockerImageBuilder.from_settings(settings or load_settings())
    if prefer == "docker":
        raise ConfigError(f"a Docker engine is needed to build {DOCKERFILE}: {reason}")
    log.info("no Docker engine (%s): using the process runtime stand-in", reason)
    return LocalProcessImage(reason)


__all__ = [
    "DEFAULT_PLATFORM",
    "DOCKERFILE",
    "DockerImageBuilder",
    "ImageBuildError",
    "ImageBuilder",
    "LocalProcessImage",
    "PLATFORMS",
    "engine_available",
    "get_image_builder",
    "image_reference",
]
