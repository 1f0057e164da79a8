"""Role-scoped studio keys: what a deployment hands a device may ingest and fetch its model, nothing else.

Every route of the local cloud's app is enumerated (so a new endpoint cannot slip through) and
called on the running service with the keys the deployments put into devices' manifests.
"""
from __future__ import annotations

import re

import pytest
import requests
from test_runner_model import CARD, tiny_detector

from helpers.deploy import runner_manifest
from helpers.localcloud.app import create_app
from helpers.localcloud.studio.keys import device_key, key_role
from helpers.protocol import manifest as mf

pytestmark = pytest.mark.timeout(180)

#: (method, route path) a device key may call; everything else must refuse it.
DEVICE_ROUTES = {
    ("POST", "/api/{category}/files"),  # ingestion (collector, runner sampling)
    ("GET", "/api/models/{version}"),  # the runner's model: its card and sha256 ...
    ("GET", "/api/models/{version}/onnx"),  # ... and the file
    ("GET", "/api/models/{version}/file"),  # ... in its format (.onnx, .eim, .tflite): what the runner downloads
    ("GET", "/v1/api/projects/api-key-info"),  # Edge Impulse's "what may this key do"
}
# The Studio API's model and deployment (.eim) downloads name no version (the latest trained model):
# a device key, bound to one version, is refused there (403) like everywhere but its own version's.
MODEL_ROUTES = {r for r in DEVICE_ROUTES if "model" in r[1] or "deployment" in r[1]}


def _flatten(routes) -> set[tuple[str, str]]:
    out = set()
    for r in routes:
        if hasattr(r, "effective_route_contexts"):  # an included router (FastAPI resolves them lazily)
            for c in r.effective_route_contexts():
                out |= {(m, c.path) for m in getattr(c.original_route, "methods", None) or ()}
        else:
            out |= {(m, r.path) for m in getattr(r, "methods", None) or ()}
    return {(m, p) for m, p in out if m != "HEAD"}


def app_routes(tmp_path) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route the local cloud's app serves."""
    app = create_app(tmp_path / "routes-ws", port=1).app
    try:
        out = _flatten(app.routes)
        documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    finally:
        app.state.ctx.store.close()
    # the walk found every documented operation, and the documented ones are most of them
    assert documented <= out and len(out) > 30 and ("DELETE", "/api/samples/{sample_id}") in out, sorted(documented - out)
    return sorted(out)


def manifest_key(manifest: dict, module: str) -> str:
    env = mf.module_env(mf.reveal_secrets(manifest)["$edgeAgent"]["properties.desired"]["modules"][module])
    return env["EI_API_KEY"]


@pytest.fixture(scope="module")
def world(cloud, tmp_path_factory):
    """A registered model version, a sample, the project id and the keys devices get."""
    tmp = tmp_path_factory.mktemp("keys")
    studio = cloud.studio
    onnx = tiny_detector(tmp / "model" / "model.onnx")
    version = studio.register_model(onnx, dict(CARD)).version
    other = studio.register_model(onnx, {**CARD, "name": "other"}).version
    import cv2
    import numpy as np

    jpeg = cv2.imencode(".jpg", np.random.default_rng(12).integers(0, 255, (40, 50, 3), dtype=np.uint8))[1].tobytes()
    sample = studio.upload([("keys-sample.jpg", jpeg)], label="apple")[0].sample_id
    mgmt = {"x-api-key": studio.api_key.get_secret_value()}
    pid = requests.get(f"{cloud.url}/v1/api/projects/api-key-info", headers=mgmt, timeout=10).json()["projectId"]
    runner_key = manifest_key(runner_manifest(version, "edgeloop-device:1", studio, camera=None, host_port=None), "runner")
    collector = mf.collector_module("edgeloop-device:1", cloud.url, label="apple", camera_source="synthetic")
    collector_key = manifest_key(mf.build_manifest([collector], secrets={"EI_API_KEY": studio.device_key()}), "collector")
    return {"version": version, "other": other, "sample": sample, "pid": pid, "runner_key": runner_key,
            "collector_key": collector_key, "mgmt": mgmt, "jpeg": jpeg, "tmp": tmp}


def concrete(path: str, world: dict) -> str:
    values = {"category": "training", "version": str(world["version"]), "sample_id": str(world["sample"]),
              "pid": str(world["pid"]), "download_id": "onnx"}
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values.get(m.group(1), "1"), path)


def call(cloud, method: str, path: str, key: str, **kw) -> requests.Response:
    return requests.request(method, cloud.url + path, headers={"x-api-key": key}, timeout=30, **kw)


def test_deployments_hand_devices_device_keys_not_the_management_key(cloud, world):
    mgmt = cloud.studio.api_key.get_secret_value()
    assert world["runner_key"] != mgmt and world["collector_key"] != mgmt
    assert key_role(world["runner_key"], cloud.studio.api_key).model_version == world["version"]
    assert key_role(world["collector_key"], cloud.studio.api_key).model_version is None
    assert repr(cloud.studio.device_key(3)).count("ei_dev") == 0  # masked like every secret


def test_device_keys_are_refused_on_every_management_endpoint(cloud, world, tmp_path):
    routes = app_routes(tmp_path)
    assert MODEL_ROUTES < DEVICE_ROUTES <= set(routes), "the allowlist names routes the app no longer has"
    leaks = []
    for key_name in ("runner_key", "collector_key"):
        key = world[key_name]
        for method, path in routes:
            allowed = (method, path) in DEVICE_ROUTES and (key_name == "runner_key" or (method, path) not in MODEL_ROUTES)
            kw = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            if (method, path) == ("POST", "/api/{category}/files"):
                kw = {"files": {"data": (f"{key_name}.jpg", world["jpeg"], "image/jpeg")}}
            r = call(cloud, method, concrete(path, world), key, **kw)
            refused = r.status_code in (401, 403)
            if refused == allowed:
                leaks.append(f"{key_name} {method} {path}: {r.status_code} {r.text[:120]}")
    assert leaks == [], "\n".join(leaks)
    # nothing a refused call would have changed did change
    s = cloud.studio.get_sample(world["sample"])
    assert s.label == "apple" and s.category == "training"
    assert cloud.studio.get_model(world["version"]).stage == "candidate"


def test_runner_key_fetches_only_its_model_version(cloud, world):
    key = world["runner_key"]
    v, other = world["version"], world["other"]
    assert call(cloud, "GET", f"/api/models/{v}/onnx", key).status_code == 200
    assert call(cloud, "GET", f"/api/models/{v}/file", key).status_code == 200
    for path in (f"/api/models/{other}", f"/api/models/{other}/onnx", f"/api/models/{other}/file"):
        r = call(cloud, "GET", path, key)
        assert r.status_code == 403 and f"model version {v} only" in r.json()["error"], r.text
    r = call(cloud, "GET", f"/api/models/{v}", world["collector_key"])
    assert r.status_code == 403 and "management API key" in r.json()["error"]
    # a key derived for another studio, or tampered with, is not a key here
    forged = device_key("ei_someone_elses_management_key", v).get_secret_value()
    assert call(cloud, "GET", f"/api/models/{v}", forged).status_code == 401
    tampered = key.replace(f"v{v}_", f"v{other}_")
    assert call(cloud, "GET", f"/api/models/{other}", tampered).status_code == 401
    # the management key still does everything
    assert call(cloud, "GET", "/api/samples", world["mgmt"]["x-api-key"]).status_code == 200


def test_device_key_uploads_like_the_collector_does(cloud, world, make_jpeg):
    from helpers.studio.ingestion import IngestionClient

    client = IngestionClient(cloud.url, cloud.studio.device_key())
    res = client.upload("training", [("collector-frame.jpg", make_jpeg(4242))], label="apple")
    assert res[0].error is None and cloud.studio.get_sample(res[0].sample_id).label == "apple"


def test_the_studio_hands_out_device_keys_to_the_management_key_only(cloud, world, make_jpeg):
    mgmt, v, other = world["mgmt"]["x-api-key"], world["version"], world["other"]
    r = call(cloud, "POST", "/api/devicekeys", mgmt, json={"modelVersion": v})
    assert r.status_code == 200, r.text
    runner = r.json()["apiKey"]
    assert runner == device_key(cloud.studio.api_key, v).get_secret_value() != mgmt
    assert call(cloud, "GET", f"/api/models/{v}/file", runner).status_code == 200  # that version's download
    assert call(cloud, "GET", f"/api/models/{other}/file", runner).status_code == 403
    r = call(cloud, "POST", "/api/devicekeys", mgmt, json={"modelVersion": None})
    collector = r.json()["apiKey"]
    assert r.status_code == 200 and collector == device_key(cloud.studio.api_key).get_secret_value()
    r = call(cloud, "POST", "/api/training/files", collector,
             files={"data": ("devicekeys-frame.jpg", make_jpeg(4343), "image/jpeg")})
    assert r.status_code == 200 and r.json()["success"] is True, r.text  # it works for ingestion
    assert call(cloud, "GET", f"/api/models/{v}/file", collector).status_code == 403
    # a device key may not mint keys, not even its own
    for key in (runner, collector):
        r = call(cloud, "POST", "/api/devicekeys", key, json={"modelVersion": v})
        assert r.status_code == 403 and "management API key" in r.json()["error"], r.text
    # a malformed request is a 400 that names the field
    for body, field in (({"modelVersion": "one"}, "modelVersion"), ({"modelVersion": 0}, "modelVersion"),
                        ({"modelVersion": True}, "modelVersion"), ({"version": 1}, "version"), ([1], "body")):
        r = call(cloud, "POST", "/api/devicekeys", mgmt, json=body)
        assert r.status_code == 400 and r.json()["field"] == field and r.json()["error"], (body, r.text)
    r = call(cloud, "POST", "/api/devicekeys", mgmt, data=b"{oops")
    assert r.status_code == 400 and r.json()["field"] == "body" and "JSON" in r.json()["error"], r.text
