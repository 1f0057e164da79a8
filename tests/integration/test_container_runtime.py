"""Real containers without a Docker engine: podman's Docker API, the local registry, the agent.

`make containers` (helpers.containers) runs podman's Docker-API socket, Debian's
docker-registry on 127.0.0.1 and a debootstrapped bookworm base. These tests build
Dockerfile.device through the docker SDK, push it to that registry, and let the edge agent's
container runtime pull and run it: the collector and then the runner, deployed through the
local hub, the runner's detections read from the container's port. They skip, with the reason,
only where podman cannot be installed.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import pytest
import requests

from helpers import containers
from helpers.device import fleet
from helpers.protocol import manifest as mf

pytestmark = pytest.mark.timeout(1500)

FAST = ["--stop-timeout", "5", "--backoff-max", "4"]
RUNNER_ENV = {"INFER_RATE_HZ": "4", "TELEMETRY_INTERVAL_S": "1", "CAMERA_SIZE": "96x96"}


@pytest.fixture(scope="module")
def stack():
    """The local stack, set up (idempotently) when it is not; skips only without podman.

    A stack this fixture started is stopped again at the end, also on failure (the podman service,
    the registry, every mount under `.containers/`; the base image stays cached), so the suite
    leaves the machine as it found it; a stack that `make containers` left running stays running.
    """
    from helpers.containers import ContainerStackError, missing_packages

    if os.environ.get("DOCKER_HOST"):
        pytest.skip("DOCKER_HOST is set: these tests drive the podman stack of `make containers`")
    was_running = containers.running()
    try:
        st = containers.up(say=lambda line: print(f"containers: {line}"))
    except ContainerStackError as exc:
        if missing_packages():
            pytest.skip(f"podman cannot be installed here: {exc}")
        raise
    try:
        yield st
    finally:
        if not was_running:
            containers.stop(say=lambda line: print(f"containers: {line}"))


@pytest.fixture(scope="module")
def image(stack):
    """Dockerfile.device built through the docker SDK on podman's socket, pushed to the registry."""
    from helpers.images import DockerImageBuilder

    builder = DockerImageBuilder(stack.registry)
    tag = "edgeloop-device:citest"
    started = time.monotonic()
    lines = list(builder.build(tag))
    build_s = time.monotonic() - started
    assert lines[0].startswith(f"building {stack.registry}/{tag}") and f"base {stack.base_image}" in lines[0]
    assert lines[-1] == f"built {stack.registry}/{tag}", lines[-20:]
    pushed = list(builder.push(tag))
    assert pushed[-1] == f"pushed {stack.registry}/{tag}", pushed[-10:]
    ref = f"{stack.registry}/{tag}"
    size = builder.image_size(tag)
    print(f"device image {ref}: {size / 1e6:.0f} MB, build {build_s:.1f} s")
    # the registry serves it: its manifest is there
    req = urllib.request.Request(f"http://{stack.registry}/v2/edgeloop-device/manifests/citest",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                                    "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["layers"]
    return ref


@pytest.fixture()
def engine(stack):
    from helpers.containers import docker_client

    client = docker_client(timeout=120)
    yield client
    client.close()


def _wait(fn, timeout, what, logs=None):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    tails = ""
    for path in sorted(logs.rglob("*.log")) if logs else []:
        tails += f"\n--- {path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-25:])
    raise AssertionError(f"timed out after {timeout} s waiting for {what}: {value!r}{tails}")


def test_image_runs_as_non_root_with_only_the_device_stack(image, engine):
    out = engine.containers.run(
        image, entrypoint=["python", "-c",
                           "import os, importlib.util as u, helpers.device.runner, helpers.device.collector;"
                           "print(os.getuid(), os.getgid(), [m for m in ('torch','fastapi','docker','jupyter')"
                           " if u.find_spec(m)])"],
        remove=True, network_mode="none", labels={containers.MANAGED_LABEL: "true"})
    uid, gid, extra = out.decode().split(maxsplit=2)
    assert (uid, gid) == ("10001", "10001") and extra.strip() == "[]"
    config = engine.images.get(image).attrs["Config"]
    assert not any(e.split("=", 1)[0] in ("EI_API_KEY", "REGISTRY_PASSWORD") for e in config.get("Env") or [])


def test_collector_then_runner_as_containers_through_the_hub(cloud, image, engine, unique_name, request,
                                                             tmp_path_factory):
    from test_gate_models import models_cache, tiny_models

    ws = cloud.workspace
    dev = unique_name("ctr")
    try:
        fleet.start_devices(cloud.hub, [dev], ws, runtime="container", agent_args=FAST)
        fleet.wait_online(cloud.hub, [dev], timeout=60)
        fleet.set_scene(ws, dev, ["apple"])

        # 1. the collector: pulled from the registry, run as a container, uploads to the studio
        collector = mf.collector_module(image, cloud.url, label="apple", count=3, rate_hz=5, camera=None)
        manifest = mf.build_manifest([collector], secrets={"EI_API_KEY": cloud.studio.api_key})
        cloud.hub.set_modules(dev, mf.reveal_secrets(manifest))
        samples = _wait(lambda: (lambda s: s if len(s) >= 3 else None)(cloud.studio.samples(device=dev)), 180,
                        "3 samples from the collector container", logs=ws / "devices" / dev)
        assert {s.metadata.get("source") for s in samples} == {"collector"}
        agent_twin = cloud.hub.get_module_twin(dev, "$edgeAgent").reported
        assert agent_twin["runtime"]["moduleRuntime"] == "container"
        running = engine.containers.list(filters={"label": [f"{containers.MANAGED_LABEL}=true",
                                                            f"edgeloop.device={dev}"]})
        assert [c.labels["edgeloop.module"] for c in running] == ["collector"]
        assert running[0].image.tags and image in running[0].image.tags
        assert running[0].attrs["HostConfig"]["NetworkMode"] == "host"  # reaches the loopback stand-ins
        api_key = cloud.studio.api_key.get_secret_value()
        assert api_key not in json.dumps(engine.images.get(image).attrs)

        # 2. the runner replaces it: the model comes from the studio, detections from the port
        model_dir = tiny_models(models_cache(request, tmp_path_factory), names=("bad",))["bad"]
        card = json.loads((model_dir / "model.json").read_text())
        version = cloud.studio.register_model(model_dir / "model.onnx", card).version
        runner = mf.runner_module(image, version, cloud.url, camera=None, extra_env=RUNNER_ENV)
        cloud.hub.set_modules(dev, mf.reveal_secrets(mf.build_manifest([runner], secrets={
            "EI_API_KEY": cloud.studio.api_key})))

        def runner_up():
            m = cloud.hub.device_status(dev).modules.get("runner")
            return m if m and m.runtime_status == "running" and m.host_port and "collector" not in \
                cloud.hub.device_status(dev).modules else None

        module = _wait(runner_up, 300, "the runner container running", logs=ws / "devices" / dev)
        port = module.host_port

        def results():
            try:
                r = requests.get(f"http://127.0.0.1:{port}/api/results", timeout=3)
            except requests.RequestException:
                return None
            body = r.json() if r.status_code == 200 else {}
            return body if "bounding_boxes" in body and body.get("timing") else None

        body = _wait(results, 180, "detections on the runner container's port", logs=ws / "devices" / dev)
        assert isinstance(body["bounding_boxes"], list)
        info = requests.get(f"http://127.0.0.1:{port}/api/info", timeout=3).json()
        assert str(version) in json.dumps(info)
        names = [c.labels["edgeloop.module"] for c in engine.containers.list(
            all=True, filters={"label": [f"{containers.MANAGED_LABEL}=true", f"edgeloop.device={dev}"]})]
        assert names == ["runner"]  # the collector's container was removed
    finally:
        fleet.stop_devices(ws, [dev])
    left = engine.containers.list(all=True, filters={"label": [f"edgeloop.device={dev}"]})
    assert left == [], [c.name for c in left]


def test_create_options_ports_binds_env_and_only_own_containers(image, engine, tmp_path):
    """Bridge networking as on a real device: PortBindings on 127.0.0.1, Binds, Env, labels."""
    from helpers.device.runtime import ContainerRuntime, ModuleLaunch, RuntimeUnavailable, free_port

    runtime = ContainerRuntime(network="bridge")
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "hello.txt").write_text("from the host")
    os.chmod(host_dir, 0o755)
    device_dir = tmp_path / "device"
    device_dir.mkdir()
    (device_dir / "scene.json").write_text('{"objects": ["apple"]}')
    server = ("import json, os, http.server, signal, sys\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # PID 1 has no default handler\n"
              "open('/data/seen.json', 'w').write(json.dumps({'greeting': os.environ['GREETING'], "
              "'bind': open('/shared/hello.txt').read(), 'uid': os.getuid()}))\n"
              "os.chdir('/data')\n"
              "http.server.ThreadingHTTPServer(('0.0.0.0', 4912), http.server.SimpleHTTPRequestHandler)"
              ".serve_forever()\n")
    wanted = free_port()
    dev = f"opts-{uuid.uuid4().hex[:6]}"
    options = {"Entrypoint": ["python", "-c", server], "Env": ["GREETING=hello"],
               "HostConfig": {"PortBindings": {"4912/tcp": [{"HostPort": str(wanted)}]},
                              "Binds": [f"{host_dir}:/shared:ro"]}}
    launch = ModuleLaunch(name="probe", image=image, env={"MODE": "infer"}, workdir=tmp_path / "probe",
                          device_id=dev, scene_file=device_dir / "scene.json", create_options=options,
                          host_port=wanted, generation="g1")
    handle = runtime.start(launch)
    try:
        assert handle.host_port == wanted
        container = engine.containers.get(handle.container.id)
        assert container.attrs["HostConfig"]["PortBindings"]["4912/tcp"] == [{"HostIp": "127.0.0.1",
                                                                             "HostPort": str(wanted)}]
        body = _wait(lambda: _get(f"http://127.0.0.1:{wanted}/seen.json"), 60, "the probe's HTTP answer")
        seen = json.loads(body)
        assert seen == {"greeting": "hello", "bind": "from the host", "uid": 10001}
        assert handle.poll() is None
        # a container the agent did not create is never replaced or removed
        foreign = engine.containers.create(image, name=f"edgeloop-{dev}-other", entrypoint=["true"])
        try:
            with pytest.raises(RuntimeUnavailable, match="did not create"):
                runtime.start(ModuleLaunch(name="other", image=image, env={}, workdir=tmp_path / "other",
                                           device_id=dev, scene_file=device_dir / "scene.json"))
            assert runtime.kill_stale({"kind": "container", "container": foreign.id}) is False
            engine.containers.get(foreign.id)  # still there
        finally:
            foreign.remove(force=True)
        record = handle.record()
        assert record["kind"] == "container"
    finally:
        handle.terminate()
        code = handle.wait(20)
        if code is None:
            handle.kill()
            code = handle.wait(10)
    assert code == 0  # it stopped on SIGTERM
    module_log = (tmp_path / "probe" / "module.log").read_text()
    # the container's own output, followed into module.log as it ran (GetModuleLogs reads it)
    assert "start probe" in module_log and '"GET /seen.json HTTP/1.1" 200' in module_log
    assert f"container edgeloop-{dev}-probe exited 0" in module_log
    assert runtime.managed_containers(dev) == []


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.read().decode() if resp.status == 200 else None
    except OSError:
        return None


def test_unmount_below_clears_mounts_before_any_delete(tmp_path):
    """A killed debootstrap leaves /proc mounted in its tree: nothing may delete through it."""
    import subprocess

    from helpers.containers import unmount_below

    inner = tmp_path / "rootfs" / "proc"
    inner.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "none", str(inner)]).returncode != 0:
        pytest.skip("mounting needs root (as debootstrap does)")
    try:
        (inner / "canary").write_text("inside the mount")
        assert unmount_below(tmp_path) == [str(inner)]
        assert not (inner / "canary").exists()  # the mount is gone, its file with it
        assert str(inner) not in open("/proc/self/mounts").read()
    finally:
        subprocess.run(["umount", str(inner)], capture_output=True)
