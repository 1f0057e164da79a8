"""helpers.images with the real docker SDK where no engine answers: the process stand-in."""
from __future__ import annotations

import pytest

from helpers.config import Secret, load_settings
from helpers.errors import ConfigError
from helpers.images import (
    DockerImageBuilder,
    ImageBuilder,
    LocalProcessImage,
    engine_available,
    get_image_builder,
    image_reference,
)


def test_image_reference():
    assert image_reference("edgeloop-device:1.0", "docker.io/me") == "docker.io/me/edgeloop-device:1.0"
    assert image_reference("myacr.azurecr.io/x:2", "docker.io/me") == "myacr.azurecr.io/x:2"
    assert image_reference("x:1") == "x:1"
    with pytest.raises(ValueError):
        image_reference("")


def test_no_engine_gives_a_reason_and_the_process_stand_in(tmp_path, monkeypatch):
    # Decided here, not from the host: a private DOCKER_HOST where nothing listens, and a stack folder
    # with no stack, so an engine or a `make containers` stack running on this machine changes nothing.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("EDGELOOP_CONTAINERS_DIR", str(tmp_path / "no-stack"))
    ENGINE, REASON = engine_available()
    assert ENGINE is False and "Docker" in REASON and "process runtime" in REASON
    builder = get_image_builder(load_settings(tmp_path))
    assert isinstance(builder, LocalProcessImage) and isinstance(builder, ImageBuilder)
    assert builder.runtime == "process" and builder.engine_available() == (False, REASON)
    lines = list(builder.build("me/edgeloop-device:1"))
    assert any("no image built" in l for l in lines) and any("start.sh" in l for l in lines)
    assert "nothing pushed" in " ".join(builder.push("me/edgeloop-device:1"))
    with pytest.raises(ConfigError, match="Docker engine is needed"):
        get_image_builder(load_settings(tmp_path), prefer="docker")


def test_push_needs_login_and_masks_it():
    b = DockerImageBuilder("docker.io/me", "me", Secret("", "REGISTRY_PASSWORD"))
    with pytest.raises(ConfigError, match="REGISTRY_USERNAME and REGISTRY_PASSWORD"):
        next(b.push("x:1"))
    b2 = DockerImageBuilder("docker.io/me", "me", "fake-registry-token")
    assert "fake-registry-token" not in repr(b2.password) and isinstance(b2.password, Secret)

# Building with an engine: tests/integration/test_container_runtime.py (podman's Docker API).
