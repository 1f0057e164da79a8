"""helpers.images without an engine: platforms and emulation, registry logins, push rules,
and the container runtime's pure pieces (registry auth from a manifest, env-named file binds)."""
from __future__ import annotations

import json
import platform

import pytest

from helpers.config import Secret, load_settings
from helpers.containers.platforms import can_emulate, host_platform
from helpers.device.runtime import env_file_binds, registry_auth_for
from helpers.errors import ConfigError
from helpers.images import (
    DockerImageBuilder,
    ImageBuildError,
    image_registry,
    registry_credentials,
)
from helpers.protocol import manifest as mf


def test_host_platform_is_this_machine():
    expected = {"x86_64": "linux/amd64", "aarch64": "linux/arm64", "armv7l": "linux/arm/v7"}
    assert host_platform() == expected.get(platform.machine(), host_platform())
    assert can_emulate(host_platform()) == (True, f"native {host_platform()}")


def test_other_platforms_need_a_registered_qemu_handler(tmp_path):
    other = "linux/arm64" if host_platform() != "linux/arm64" else "linux/amd64"
    handler = {"linux/arm64": "qemu-aarch64", "linux/amd64": "qemu-x86_64"}[other]
    ok, why = can_emulate(other, binfmt_dir=tmp_path)
    assert not ok
    assert "qemu-user-static" in why and f"--platform {other}" in why and "buildx" in why
    (tmp_path / handler).write_text("disabled\ninterpreter /usr/bin/qemu\n")
    assert can_emulate(other, binfmt_dir=tmp_path)[0] is False  # registered but switched off
    (tmp_path / handler).write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n")
    ok, how = can_emulate(other, binfmt_dir=tmp_path)
    assert ok and handler in how and "emulated" in how


def test_build_for_an_unemulated_platform_says_where_to_build(tmp_path, monkeypatch):
    import helpers.containers.platforms as platforms

    other = "linux/arm64" if host_platform() != "linux/arm64" else "linux/amd64"
    monkeypatch.setattr(platforms, "BINFMT_DIR", str(tmp_path))  # an empty binfmt_misc: no handler
    monkeypatch.setattr(platforms.can_emulate, "__defaults__", (str(tmp_path),))
    builder = DockerImageBuilder("127.0.0.1:5000", client=object())
    with pytest.raises(ImageBuildError, match="cannot run .* build steps") as err:
        next(builder.build("edgeloop-device:1", platform=other))
    assert "docker buildx build --platform" in str(err.value)
    with pytest.raises(ValueError, match="not one of"):
        next(builder.build("edgeloop-device:1", platform="linux/s390x"))


def test_registry_credentials_fill_the_manifest_masked(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGELOOP_REGISTRY", "myacr.azurecr.io")
    monkeypatch.setenv("REGISTRY_USERNAME", "myacr")
    monkeypatch.setenv("REGISTRY_PASSWORD", "fake-registry-password-123")
    settings = load_settings(tmp_path)
    creds = registry_credentials(settings, "edgeloop-device:1.0")
    assert creds["address"] == "myacr.azurecr.io" and creds["name"] == "myacr" and creds["username"] == "myacr"
    assert isinstance(creds["password"], Secret) and "fake-registry" not in repr(creds)
    manifest = mf.build_manifest([mf.module_spec("m", "myacr.azurecr.io/edgeloop-device:1.0")], registry=creds)
    shown = json.dumps(mf.redact_manifest(manifest))
    assert "fake-registry-password-123" not in shown and "myacr.azurecr.io" in shown
    sent = mf.reveal_secrets(manifest)
    entries = sent["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]
    # the agent's container runtime pulls with exactly this login
    auth = registry_auth_for(entries, "myacr.azurecr.io/edgeloop-device:1.0")
    assert auth == {"username": "myacr", "password": "fake-registry-password-123", "serveraddress": "myacr.azurecr.io"}
    assert registry_auth_for(entries, "docker.io/library/python:3.11-slim") is None
    assert registry_auth_for(None, "x:1") is None


def test_registry_credentials_need_both_or_neither(monkeypatch, tmp_path):
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("REGISTRY_USERNAME", "me")
    with pytest.raises(ConfigError, match="REGISTRY_USERNAME and REGISTRY_PASSWORD"):
        registry_credentials(load_settings(tmp_path), "docker.io/me/x:1")
    monkeypatch.delenv("REGISTRY_USERNAME")
    assert registry_credentials(load_settings(tmp_path), "127.0.0.1:5000/x:1") is None


def test_explicit_registry_wins_over_the_local_stack(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGELOOP_REGISTRY", "docker.io/me")
    assert image_registry(load_settings(tmp_path)) == "docker.io/me"


def test_push_without_login_only_to_this_machine():
    remote = DockerImageBuilder("docker.io/me", client=object())
    with pytest.raises(ConfigError, match="REGISTRY_USERNAME and REGISTRY_PASSWORD"):
        next(remote.push("x:1"))
    local = DockerImageBuilder("127.0.0.1:5000", client=object())
    first = next(local.push("edgeloop-device:1"))  # no ConfigError: the local registry takes anonymous pushes
    assert first == "pushing 127.0.0.1:5000/edgeloop-device:1 to 127.0.0.1:5000 (no login)"


def test_runtime_setting_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGELOOP_RUNTIME", "container")
    assert load_settings(tmp_path).runtime == "container"
    monkeypatch.setenv("EDGELOOP_RUNTIME", "kubernetes")
    with pytest.raises(ConfigError, match="EDGELOOP_RUNTIME='kubernetes' is not a module runtime"):
        load_settings(tmp_path)


def test_env_named_host_files_are_bound_or_copied(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    ca.chmod(0o644)
    env = {"CA_FILE": str(ca), "MODE": "infer", "MISSING": str(tmp_path / "nope"), "DIR": str(tmp_path),
           "URL": "https://127.0.0.1:1/x"}
    assert env_file_binds(env, tmp_path / "m") == ([f"{ca}:{ca}:ro"], {})
    # an owner-only file (an owner-only workspace): copied into the module folder, read-only
    ca.chmod(0o600)
    workdir = tmp_path / "m"
    workdir.mkdir()
    binds, moved = env_file_binds(env, workdir)
    assert binds == [] and moved == {"CA_FILE": "/data/.host-files/CA_FILE-ca.pem"}
    copy = workdir / ".host-files" / "CA_FILE-ca.pem"
    assert copy.read_text() == ca.read_text() and copy.stat().st_mode & 0o777 == 0o400
    assert env_file_binds(env, workdir)[1] == moved  # a restart replaces the copy


def test_same_socket_reads_the_unix_adapter_path(tmp_path):
    import docker

    from helpers.images import _same_socket

    sock = tmp_path / "podman.sock"
    client = docker.DockerClient(base_url=f"unix://{sock}", version="1.41")  # no connection needed
    try:
        assert _same_socket(client, f"unix://{sock}")
        assert not _same_socket(client, f"unix://{tmp_path / 'other.sock'}")
        assert not _same_socket(object(), f"unix://{sock}")
    finally:
        client.close()
