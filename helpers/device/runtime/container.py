"""The container runtime: each module a container of its image, through any Docker-API engine.

It pulls and runs the module's image with the docker SDK (Docker, or podman's socket from
`make containers`), applying the manifest's createOptions (ports bound to 127.0.0.1 unless the
manifest names an address, device mappings, binds), as Azure IoT Edge does. The docker SDK is
optional on a device: its names are imported only where the engine is called.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from helpers.config import mask
from helpers.containers.engine import MANAGED_LABEL, docker_client, docker_engine_available
from helpers.device.runtime.supervision import (
    CONTAINER_PORT,
    LOG_MAX_BYTES,
    LOG_NAME,
    ModuleLaunch,
    RuntimeUnavailable,
    free_port,
    utc_now,
)

log = logging.getLogger("helpers.device.runtime")

#: Network of the module containers when the manifest's HostConfig.NetworkMode names none:
#: `bridge` (a real device: ports published per PortBindings) or `host` (simulated devices on
#: this machine: the modules reach the hub and studio stand-ins on the host's loopback).
CONTAINER_NETWORK_ENV = "EDGELOOP_CONTAINER_NETWORK"
NETWORKS = ("bridge", "host")
#: The container runtime's names: `container`, and `docker` as the earlier name of the same.
CONTAINER_RUNTIMES = ("container", "docker")
#: Labels on every container the runtime creates; it removes no container without them.
LABEL_MANAGED = MANAGED_LABEL
LABEL_DEVICE = "edgeloop.device"
LABEL_MODULE = "edgeloop.module"
LABEL_GENERATION = "edgeloop.generation"

def registry_auth_for(credentials: dict[str, Any] | None, image: str) -> dict[str, str] | None:
    """The docker SDK `auth_config` for pulling `image`, from a manifest's `registryCredentials`.

    Args:
        credentials: `$edgeAgent` `runtime.settings.registryCredentials` (name -> address,
            username, password).
        image: the module's image reference.
    """
    first = image.split("/", 1)[0]
    host = first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"
    for entry in (credentials or {}).values():
        if not isinstance(entry, dict):
            continue
        address = str(entry.get("address", "")).split("://", 1)[-1].rstrip("/")
        if address.split("/", 1)[0] in (host, "index." + host) and entry.get("username"):
            password = entry.get("password", "")
            password = password.get_secret_value() if hasattr(password, "get_secret_value") else str(password)
            return {"username": str(entry["username"]), "password": password, "serveraddress": address}
    return None


def env_file_binds(env: dict[str, str], workdir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """Make the host files the module's environment names by absolute path readable inside.

    A value such as the hub CA's path (`EdgeModuleCACertificateFile=/ws/localcloud/tls/ca.pem`)
    means the same file inside the container, as it does for a module run as a process (IoT
    Edge mounts its trust bundle likewise). A file others may read is bound read-only at the
    same path; an owner-only one (the container's user could not read it through a bind) is
    copied, 0400, into `workdir/.host-files/` (the module folder, mounted at `/data`, which the
    runtime gives to the container's user) and the variable points there.

    Returns:
        (read-only binds, variables whose value changed).
    """
    binds: list[str] = []
    changed: dict[str, str] = {}
    for key, value in sorted(env.items()):
        path = Path(value)
        if not value.startswith("/") or "\n" in value or ":" in value or not path.is_file():
            continue
        if path.stat().st_mode & 0o004 or workdir is None:
            bind = f"{path}:{path}:ro"
            if bind not in binds:
                binds.append(bind)
            continue
        dest_dir = workdir / ".host-files"
        dest_dir.mkdir(mode=0o700, exist_ok=True)
        dest = dest_dir / f"{key}-{path.name}"
        dest.unlink(missing_ok=True)
        dest.write_bytes(path.read_bytes())
        dest.chmod(0o400)
        changed[key] = f"/data/.host-files/{dest.name}"
    return binds, changed


class ContainerHandle:
    """A module running as a container; its output goes to `module.log` as it runs (followed
    from the engine, masked), so the agent's `GetModuleLogs` reads it as for a process."""

    def __init__(self, name: str, container: Any, host_port: int | None, log_path: Path | None = None):
        self.name = name
        self.container = container
        self.host_port = host_port
        self.log_path = log_path
        self.started_at = utc_now()
        self._exit: int | None = None
        self._follower: threading.Thread | None = None
        if log_path is not None:
            self._follower = threading.Thread(target=self._follow_logs, name=f"logs-{name}", daemon=True)
            self._follower.start()

    def _follow_logs(self) -> None:
        """Append the container's output to module.log until it exits (a daemon thread)."""
        from docker.errors import APIError, NotFound

        try:
            with open(self.log_path, "ab") as out:  # type: ignore[arg-type]
                for chunk in self.container.logs(stdout=True, stderr=True, stream=True, follow=True):
                    out.write(mask(chunk.decode(errors="replace")).encode())
                    out.flush()
        except (APIError, NotFound, OSError) as exc:
            log.info("stopped following the output of %s: %s", self.name, exc)

    def poll(self) -> int | None:
        from docker.errors import APIError, NotFound

        if self._exit is None:
            try:
                self.container.reload()
            except NotFound:
                self._exit = -1
                return self._exit
            except APIError as exc:
                log.warning("the engine did not answer for %s: %s", self.name, exc)
                return None
            if self.container.status in ("exited", "dead", "stopped"):
                self._exit = int(self.container.attrs.get("State", {}).get("ExitCode", -1))
                self._save_logs()
        return self._exit

    def _save_logs(self) -> None:
        if self.log_path is None:
            return
        if self._follower is not None:
            self._follower.join(timeout=5)  # the stream ends with the container: let it write the last lines
        with open(self.log_path, "ab") as out:
            out.write(f"---- {utc_now()} container {self.container.name} exited {self._exit}\n".encode())

    def terminate(self) -> None:
        from docker.errors import APIError, NotFound

        if self.poll() is None:
            try:
                self.container.kill(signal="SIGTERM")
            except (APIError, NotFound) as exc:
                log.warning("the engine could not signal %s: %s", self.name, exc)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll() is not None:
                break
            time.sleep(0.2)
        code = self.poll()
        if code is not None:
            self._remove()
        return code

    def kill(self) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.container.kill()
        except (APIError, NotFound) as exc:
            log.warning("the engine could not kill %s: %s", self.name, exc)

    def _remove(self) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.container.remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            log.warning("the engine could not remove the container of %s: %s", self.name, exc)

    def record(self) -> dict[str, Any]:
        return {"kind": "container", "container": self.container.id, "name": self.container.name}

    def __repr__(self) -> str:
        return f"ContainerHandle({self.name!r}, {self.container.name}, port={self.host_port}, exit={self._exit})"


DockerHandle = ContainerHandle  # the earlier name


class ContainerRuntime:
    """Runs each module as a container of its image, pulled from its registry, per createOptions.

    As Azure IoT Edge's edgeAgent does, it pulls the image (with the deployment's
    `registryCredentials`) when it starts a new module generation, creates the container from
    the manifest's createOptions (`Env`, `HostConfig.PortBindings` bound to 127.0.0.1 unless a
    binding names its `HostIp`, `Devices`, `Binds`, `NetworkMode`, `Privileged`, `Cmd`,
    `Entrypoint`, `User`, `Memory`) and leaves restarts to the agent (the container's own
    restart policy is `no`). The module's folder is mounted at `/data` (`MODULE_WORKDIR`,
    where it writes `reported.json`), the device folder read-only at `/device` (the synthetic
    scene file). Every container it creates carries the `edgeloop.managed` label; it replaces
    or removes no other container.

    Networks: `bridge` publishes the module's ports; `host` (simulated devices on one machine,
    `EDGELOOP_CONTAINER_NETWORK=host`) shares the host's network, so the modules reach the
    loopback stand-ins by the same URLs; container port 4912 is then stood for by a free host
    port passed as `PORT`, bound to 127.0.0.1 (`BIND_HOST`).

    Args:
        network: `bridge` or `host` (default: `$EDGELOOP_CONTAINER_NETWORK`, else `bridge`).
        client: a `docker.DockerClient` (default: `helpers.containers.docker_client()`).

    Raises:
        RuntimeUnavailable: the docker SDK is missing, no engine answers, or an unknown network.
    """

    name = "container"

    def __init__(self, network: str | None = None, client: Any = None) -> None:
        network = network or os.environ.get(CONTAINER_NETWORK_ENV) or "bridge"
        if network not in NETWORKS:
            raise RuntimeUnavailable(f"container network {network!r} is not one of {NETWORKS} "
                                     f"(set {CONTAINER_NETWORK_ENV}=bridge or host)")
        self.network = network
        if client is None:
            ok, reason = docker_engine_available()
            if not ok:
                raise RuntimeUnavailable(f"the container runtime cannot run modules: {reason}")
            client = docker_client(timeout=120)
            self.engine = reason
        else:
            self.engine = "given client"
        self.client = client
        self._pulled: set[tuple[str, str]] = set()

    def describe(self) -> str:
        return f"container runtime ({self.engine}, network {self.network})"

    def _container_name(self, launch: ModuleLaunch) -> str:
        return f"edgeloop-{launch.device_id}-{launch.name}".replace("/", "-")

    def _pull(self, launch: ModuleLaunch) -> Any:
        """Pull the image once per module generation (as edgeAgent does on create); the image."""
        from docker.errors import APIError, ImageNotFound

        key = (launch.image, launch.generation)
        if key not in self._pulled:
            log.info("pulling %s", launch.image)
            try:
                self.client.images.pull(launch.image, auth_config=launch.registry_auth)
                self._pulled.add(key)
            except APIError as exc:
                try:
                    image = self.client.images.get(launch.image)
                except ImageNotFound:
                    raise RuntimeUnavailable(
                        f"cannot pull {launch.image}: {mask(str(exc))}; check the image name, that it was pushed, "
                        "and the registryCredentials in the deployment"
                    ) from exc
                log.warning("cannot pull %s (%s): running the copy already on this device", launch.image,
                            mask(str(exc)))
                return image
        return self.client.images.get(launch.image)

    def _replace_old(self, name: str) -> None:
        from docker.errors import NotFound

        try:
            old = self.client.containers.get(name)
        except NotFound:
            return
        if (old.labels or {}).get(LABEL_MANAGED) != "true":
            raise RuntimeUnavailable(f"a container named {name} exists that the edge agent did not create: "
                                     "remove or rename it (the agent removes only its own, labelled "
                                     f"{LABEL_MANAGED}=true)")
        old.remove(force=True)

    def _user(self, image: Any, opts: dict[str, Any], workdir: Path) -> str | None:
        """Who runs the module: createOptions `User`; else the agent's own uid when it is not root
        (the bind-mounted module folder stays the user's); else the image's user, who is then
        given the module folder."""
        if opts.get("User"):
            return str(opts["User"])
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        user = str(((image.attrs or {}).get("Config") or {}).get("User") or "")
        uid, _, gid = user.partition(":")
        if uid.isdigit() and int(uid) != 0:
            gid_n = int(gid) if gid.isdigit() else int(uid)
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, int(uid), gid_n, follow_symlinks=False)
        return None

    def start(self, launch: ModuleLaunch) -> ContainerHandle:
        """Pull the image for a new generation, replace the module's old container, run it."""
        from docker.errors import APIError

        launch.workdir.mkdir(parents=True, exist_ok=True)
        image = self._pull(launch)
        name = self._container_name(launch)
        self._replace_old(name)
        opts = dict(launch.create_options or {})
        host_config = opts.get("HostConfig") or {}
        network = str(host_config.get("NetworkMode") or self.network)
        env = dict(launch.env)
        for item in opts.get("Env") or []:
            key, _, value = str(item).partition("=")
            env.setdefault(key, value)
        env.update({
            "MODULE_WORKDIR": "/data",
            "EDGELOOP_SCENE_FILE": f"/device/{launch.scene_file.name}",
            "IOTEDGE_DEVICEID": launch.device_id,
            "IOTEDGE_MODULEID": launch.name,
            "IOTEDGE_MODULEGENERATIONID": launch.generation,
        })
        bindings = host_config.get("PortBindings") or {}
        main_key = f"{CONTAINER_PORT}/tcp"
        main_ip = "127.0.0.1"
        for b in bindings.get(main_key) or []:
            main_ip = str((b or {}).get("HostIp") or main_ip)
        ports: dict[str, Any] = {}
        host_port: int | None = None
        if network == "host":
            # no publishing on the host's network: the module listens on the host port itself
            host_port = free_port(launch.host_port, host=main_ip if main_ip != "0.0.0.0" else "127.0.0.1")
            env["PORT"] = str(host_port)
            env.setdefault("BIND_HOST", main_ip)
        else:
            env["PORT"] = str(CONTAINER_PORT)
            for key, entries in bindings.items():
                key = key if "/" in key else f"{key}/tcp"
                published = []
                for b in entries or [{}]:
                    ip = str((b or {}).get("HostIp") or "127.0.0.1")
                    wanted = int((b or {}).get("HostPort") or 0) or None
                    if key == main_key:
                        wanted = launch.host_port or wanted
                    port = free_port(wanted, host=ip if ip != "0.0.0.0" else "127.0.0.1")
                    published.append((ip, port))
                    if key == main_key and host_port is None:
                        host_port = port
                ports[key] = published if len(published) > 1 else published[0]
        file_binds, moved = env_file_binds(env, launch.workdir)
        env.update(moved)
        volumes = [
            f"{launch.workdir.resolve()}:/data:rw",
            f"{launch.scene_file.parent.resolve()}:/device:ro",
            *[str(b) for b in host_config.get("Binds") or []],
            *file_binds,
        ]
        devices = [
            f"{d['PathOnHost']}:{d.get('PathInContainer', d['PathOnHost'])}:{d.get('CgroupPermissions', 'rwm')}"
            for d in host_config.get("Devices") or []
        ]
        user = self._user(image, opts, launch.workdir)
        log_path = launch.workdir / LOG_NAME
        if log_path.exists() and log_path.stat().st_size > LOG_MAX_BYTES:
            os.replace(log_path, log_path.with_suffix(".log.1"))
        with open(log_path, "ab") as out:
            out.write(f"---- {utc_now()} start {launch.name} image={launch.image} container={name} "
                      f"network={network} port={host_port}\n".encode())
        kwargs: dict[str, Any] = {
            "name": name,
            "detach": True,
            "environment": env,
            "volumes": volumes,
            "devices": devices or None,
            "privileged": bool(host_config.get("Privileged")),
            "labels": {LABEL_MANAGED: "true", LABEL_DEVICE: launch.device_id, LABEL_MODULE: launch.name,
                       LABEL_GENERATION: launch.generation},
            "restart_policy": {"Name": "no"},  # restarts are the agent's, per the manifest's restartPolicy
        }
        if network == "host":
            kwargs["network_mode"] = "host"
        else:
            kwargs["ports"] = ports
            if network != "bridge":
                kwargs["network"] = network
        if user:
            kwargs["user"] = user
        if opts.get("Cmd"):
            kwargs["command"] = opts["Cmd"]
        if opts.get("Entrypoint"):
            kwargs["entrypoint"] = opts["Entrypoint"]
        if host_config.get("Memory"):
            kwargs["mem_limit"] = int(host_config["Memory"])
        try:
            container = self.client.containers.run(image.id if hasattr(image, "id") else launch.image, **kwargs)
        except APIError as exc:
            raise RuntimeUnavailable(f"the engine could not start {name} from {launch.image}: {mask(str(exc))}") from exc
        return ContainerHandle(launch.name, container, host_port, log_path)

    def managed_containers(self, device_id: str | None = None) -> list[Any]:
        """The containers this runtime created (for `device_id`, or every device)."""
        filters = [f"{LABEL_MANAGED}=true"] + ([f"{LABEL_DEVICE}={device_id}"] if device_id else [])
        return self.client.containers.list(all=True, filters={"label": filters})

    def kill_stale(self, record: dict[str, Any]) -> bool:
        """Remove a container a previous agent run left, when it carries this runtime's label."""
        from docker.errors import NotFound

        if record.get("kind") not in CONTAINER_RUNTIMES:
            return False
        try:
            container = self.client.containers.get(record["container"])
        except NotFound:
            return False
        if (container.labels or {}).get(LABEL_MANAGED) != "true":
            return False
        container.remove(force=True)
        return True


DockerRuntime = ContainerRuntime  # the earlier name


__all__ = [
    "CONTAINER_NETWORK_ENV",
    "CONTAINER_RUNTIMES",
    "LABEL_DEVICE",
    "LABEL_GENERATION",
    "LABEL_MANAGED",
    "LABEL_MODULE",
    "NETWORKS",
    "ContainerHandle",
    "ContainerRuntime",
    "DockerHandle",
    "DockerRuntime",
    "env_file_binds",
    "registry_auth_for",
]
