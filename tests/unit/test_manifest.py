"""Deployment manifest: building, splitting createOptions, secrets, validation, snapshots.

Refresh the committed snapshots after an intended change with
`UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/unit/test_manifest.py`, then review the JSON diff.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.config import MASK, Secret
from helpers.errors import ConfigError, InvalidManifest
from helpers.protocol import manifest as mf
from helpers.protocol.manifest import (
    build_manifest,
    collector_module,
    module_env,
    module_host_port,
    module_spec,
    parse_create_options,
    redact_manifest,
    reveal_secrets,
    runner_module,
    split_create_options,
    validate_manifest,
    with_secret_env,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"
IMAGE = "docker.io/edgeloop/edgeloop-device:1.0"
STUDIO = "http://127.0.0.1:8000"
KEY = Secret("ei_deadbeefdeadbeefdeadbeefdeadbeef", "EI_API_KEY")  # fake test key


def modules_of(m):
    return m["$edgeAgent"]["properties.desired"]["modules"]


def check_snapshot(name: str, manifest: dict) -> None:
    path = SNAPSHOTS / name
    text = json.dumps(redact_manifest(manifest), indent=2, sort_keys=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if os.environ.get("UPDATE_SNAPSHOTS") != "1":
            pytest.fail(f"snapshot {path} did not exist; written now: review and commit it")
    assert json.loads(text) == json.loads(path.read_text()), (
        f"manifest differs from {path}; if intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    )


# ----------------------------------------------------------------------------- snapshots


def test_collector_manifest_snapshot():
    m = build_manifest([collector_module(IMAGE, STUDIO, label="apple", count=40, rate_hz=2)], secrets={"EI_API_KEY": KEY})
    assert validate_manifest(m) == []
    check_snapshot("manifest_collector.json", m)


def test_runner_manifest_snapshot():
    m = build_manifest(
        [runner_module(IMAGE, 2, STUDIO, sampling_band=(0.3, 0.6), telemetry_interval_s=5, version="2.0")],
        secrets={"EI_API_KEY": KEY},
        registry_credentials={"name": "edgeloop", "address": "docker.io", "username": "edgeloop", "password": Secret("pw-123456")},
    )
    assert validate_manifest(m) == []
    check_snapshot("manifest_runner.json", m)


def test_collector_and_runner_manifest_snapshot():
    m = build_manifest(
        [collector_module(IMAGE, STUDIO, label="banana"), runner_module(IMAGE, 1, STUDIO)],
        secrets={"EI_API_KEY": KEY},
    )
    assert validate_manifest(m) == []
    check_snapshot("manifest_collector_runner.json", m)


# ----------------------------------------------------------------------------- shape


def test_manifest_shape_follows_azure():
    m = build_manifest([runner_module(IMAGE, 3, STUDIO)], secrets={"EI_API_KEY": KEY})
    agent = m["$edgeAgent"]["properties.desired"]
    assert agent["schemaVersion"] == "1.1"
    assert agent["runtime"]["type"] == "docker"
    assert agent["runtime"]["settings"]["minDockerVersion"]
    assert agent["systemModules"]["edgeAgent"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.5"
    assert agent["systemModules"]["edgeHub"]["settings"]["image"] == "mcr.microsoft.com/azureiotedge-hub:1.5"
    hub = m["$edgeHub"]["properties.desired"]
    assert hub["routes"] and hub["storeAndForwardConfiguration"]["timeToLiveSecs"] > 0
    runner = modules_of(m)["runner"]
    assert set(runner) == {"version", "type", "status", "restartPolicy", "settings", "env"}  # no build-time keys
    options = parse_create_options(runner["settings"])
    assert options["ExposedPorts"] == {"4912/tcp": {}}
    assert options["HostConfig"]["PortBindings"] == {"4912/tcp": [{"HostPort": "4912"}]}
    assert options["HostConfig"]["Devices"] == [
        {"PathOnHost": "/dev/video0", "PathInContainer": "/dev/video0", "CgroupPermissions": "rwm"}
    ]
    assert "Privileged" not in options["HostConfig"]
    assert runner["env"]["MODE"] == {"value": "infer"}
    assert runner["env"]["MODEL_VERSION"] == {"value": "3"}
    assert all(isinstance(v, str) for v in runner["settings"].values())


def test_module_env_merges_create_options_env_and_env_section():
    spec = module_spec("m", IMAGE, env={"A": "from-env", "B": 2}, create_options={"Env": ["A=from-create", "C=x=y"]})
    m = build_manifest([spec])
    assert module_env(modules_of(m)["m"]) == {"A": "from-env", "B": "2", "C": "x=y"}
    assert module_env(spec) == {"A": "from-env", "B": "2", "C": "x=y"}  # a spec reads the same


def test_module_host_port():
    assert module_host_port(module_spec("m", IMAGE, host_port=8080)) == 8080
    assert module_host_port(module_spec("m", IMAGE)) is None
    m = build_manifest([runner_module(IMAGE, 1, STUDIO, host_port=5000)], secrets={"EI_API_KEY": KEY})
    assert module_host_port(modules_of(m)["runner"]) == 5000


def test_module_spec_options():
    spec = module_spec(
        "m", IMAGE, devices=["/dev/video0:/dev/video1", {"PathOnHost": "/dev/ttyUSB0"}], binds=["/data:/data:ro"],
        restart_policy="on-failure", status="stopped", version="7", startup_order=3,
        desired_properties={"interval": 5},
    )
    options = parse_create_options(spec["settings"])
    assert options["HostConfig"]["Devices"][0] == {
        "PathOnHost": "/dev/video0", "PathInContainer": "/dev/video1", "CgroupPermissions": "rwm"
    }
    assert options["HostConfig"]["Devices"][1]["PathInContainer"] == "/dev/ttyUSB0"
    assert options["HostConfig"]["Binds"] == ["/data:/data:ro"]
    m = build_manifest([spec])
    mod = modules_of(m)["m"]
    assert (mod["restartPolicy"], mod["status"], mod["version"], mod["startupOrder"]) == ("on-failure", "stopped", "7", 3)
    assert m["m"] == {"properties.desired": {"interval": 5}}  # the module twin
    assert validate_manifest(m) == []
    assert "startupOrder" not in modules_of(build_manifest([spec], schema_version="1.0"))["m"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"name": "edgeHub"}, "not valid"),
        ({"name": "bad name"}, "not valid"),
        ({"image": ""}, "needs an image"),
        ({"restart_policy": "sometimes"}, "restart_policy"),
        ({"status": "paused"}, "status"),
        ({"startup_order": -1}, "startup_order"),
        ({"host_port": 70000}, "host_port"),
    ],
)
def test_module_spec_rejects_bad_arguments(kwargs, fragment):
    args = {"name": "m", "image": IMAGE, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        module_spec(**args)


def test_builders_validate_arguments():
    with pytest.raises(ValueError, match="count"):
        collector_module(IMAGE, STUDIO, count=0)
    with pytest.raises(ValueError, match="sampling_band"):
        runner_module(IMAGE, 1, STUDIO, sampling_band=(0.7, 0.2))
    with pytest.raises(ValueError, match="unique"):
        build_manifest([module_spec("m", IMAGE), module_spec("m", IMAGE)])
    with pytest.raises(ValueError, match="schema_version"):
        build_manifest([], schema_version="2.0")


# ----------------------------------------------------------------------------- createOptions chunks


def test_long_create_options_are_split_and_rejoined():
    binds = [f"/srv/edgeloop/volume-{i:03d}:/data/{i:03d}:ro" for i in range(60)]
    spec = module_spec("big", IMAGE, binds=binds, host_port=4912)
    settings = spec["settings"]
    keys = [k for k in settings if k.startswith("createOptions")]
    assert keys[:3] == ["createOptions", "createOptions01", "createOptions02"]
    assert all(len(settings[k]) <= 512 for k in keys)
    assert len(settings["createOptions"]) == 512
    assert parse_create_options(settings)["HostConfig"]["Binds"] == binds
    # re-joining is by suffix number, not by dict order
    shuffled = {"image": IMAGE, **{k: settings[k] for k in reversed(keys)}}
    assert parse_create_options(shuffled)["HostConfig"]["Binds"] == binds
    m = build_manifest([spec])
    assert validate_manifest(m) == []
    assert module_host_port(modules_of(m)["big"]) == 4912


def test_split_create_options_small_and_empty():
    assert split_create_options({}) == {"createOptions": "{}"}
    assert split_create_options('{"a":1}') == {"createOptions": '{"a":1}'}
    assert parse_create_options({"image": IMAGE}) == {}


def test_parse_create_options_rejects_bad_json():
    with pytest.raises(InvalidManifest, match="not valid JSON"):
        parse_create_options({"createOptions": '{"HostConfig": '})
    with pytest.raises(InvalidManifest, match="JSON object"):
        parse_create_options({"createOptions": "[1, 2]"})


# ----------------------------------------------------------------------------- secrets


def test_api_key_is_never_a_literal_and_must_be_supplied():
    with pytest.raises(ConfigError, match="EI_API_KEY"):
        build_manifest([collector_module(IMAGE, STUDIO)])
    with pytest.raises(ValueError, match="deploy time"):
        module_spec("m", IMAGE, env={"EI_API_KEY": "ei_plain"}, secret_env=["EI_API_KEY"])
    spec = collector_module(IMAGE, STUDIO)
    assert "EI_API_KEY" not in spec.get("env", {})
    assert spec["secretEnv"] == ["EI_API_KEY"]


def test_secrets_stay_masked_until_revealed():
    m = build_manifest(
        [collector_module(IMAGE, STUDIO)],
        secrets={"EI_API_KEY": "ei_plainstring_given_0123456789"},
        registry={"address": "myacr.azurecr.io", "username": "myacr", "password": "fake-registry-password"},
    )
    value = modules_of(m)["collector"]["env"]["EI_API_KEY"]["value"]
    assert isinstance(value, Secret)
    for shown in (repr(m), str(m), json.dumps(redact_manifest(m))):
        assert "ei_plainstring_given_0123456789" not in shown
        assert "fake-registry-password" not in shown
    with pytest.raises(TypeError):
        json.dumps(m)  # a manifest with secrets cannot be serialised by accident
    wire = reveal_secrets(m)
    text = json.dumps(wire)
    assert "ei_plainstring_given_0123456789" in text and "fake-registry-password" in text
    assert wire["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]["myacr"] == {
        "username": "myacr", "password": "fake-registry-password", "address": "myacr.azurecr.io"
    }
    assert module_env(modules_of(m)["collector"])["EI_API_KEY"] == "ei_plainstring_given_0123456789"
    assert validate_manifest(wire) == []


def test_redact_masks_plain_secret_values_from_the_wire():
    wire = reveal_secrets(build_manifest([runner_module(IMAGE, 1, STUDIO)], secrets={"EI_API_KEY": KEY}))
    modules_of(wire)["runner"]["settings"].update(
        split_create_options({"Env": ["EI_API_KEY=ei_abcdef0123456789", "OTHER=1"]})
    )
    shown = redact_manifest(wire)
    assert KEY.get_secret_value() not in json.dumps(shown)
    assert "ei_abcdef0123456789" not in json.dumps(shown)
    assert module_env(modules_of(shown)["runner"])["OTHER"] == "1"
    assert modules_of(shown)["runner"]["env"]["EI_API_KEY"]["value"] == MASK
    assert any("createOptions.Env" in w for w in validate_manifest(wire))


def test_with_secret_env_rotates_a_key_without_touching_the_original():
    m = build_manifest([collector_module(IMAGE, STUDIO), module_spec("other", IMAGE)], secrets={"EI_API_KEY": KEY})
    new = with_secret_env(m, {"EI_API_KEY": Secret("ei_new_key_fedcba9876543210")})
    assert module_env(modules_of(new)["collector"])["EI_API_KEY"] == "ei_new_key_fedcba9876543210"
    assert "EI_API_KEY" not in modules_of(new)["other"].get("env", {})
    assert module_env(modules_of(m)["collector"])["EI_API_KEY"] == KEY.get_secret_value()
    targeted = with_secret_env(m, {"TOKEN": "t0k3n-value"}, modules=["other"])
    assert module_env(modules_of(targeted)["other"])["TOKEN"] == "t0k3n-value"
    with pytest.raises(ConfigError, match="modules="):
        with_secret_env(m, {"NOBODY_KEY": "x"})
    with pytest.raises(ConfigError, match="no module"):
        with_secret_env(m, {"X": "x"}, modules=["ghost"])


def test_registry_credentials_need_all_fields():
    with pytest.raises(ConfigError, match="password"):
        build_manifest([], registry_credentials={"address": "myacr.azurecr.io", "username": "u", "password": ""})
    m = build_manifest([], registry_credentials={"acr": {"address": "a.azurecr.io", "username": "u", "password": Secret("p")}})
    assert "acr" in m["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]


# ----------------------------------------------------------------------------- validation


def _wire(*modules, **kw):
    return reveal_secrets(build_manifest(list(modules), **kw))


def test_validate_accepts_wrapped_modules_content():
    assert validate_manifest({"modulesContent": _wire(module_spec("m", IMAGE))}) == []


def test_validate_lists_every_problem():
    m = _wire(module_spec("a", IMAGE, host_port=4912), module_spec("b", IMAGE, host_port=4912), module_spec("c", IMAGE))
    mods = modules_of(m)
    del mods["a"]["settings"]["image"]
    mods["a"]["restartPolicy"] = "sometimes"
    mods["c"]["status"] = "paused"
    mods["c"]["settings"]["createOptions"] = "{not json"
    mods["c"]["startupOrder"] = 1
    m["$edgeAgent"]["properties.desired"]["schemaVersion"] = "1.0"
    m["$edgeAgent"]["properties.desired"]["runtime"]["type"] = "moby"
    with pytest.raises(InvalidManifest) as err:
        validate_manifest(m)
    problems = "\n".join(err.value.problems)
    for fragment in (
        "'a': settings.image is missing",
        "restartPolicy 'sometimes'",
        "status 'paused'",
        "not valid JSON",
        "startupOrder needs schemaVersion 1.1",
        "runtime.type 'moby'",
        "host port 4912/tcp is bound by both module 'a' and 'b'",
    ):
        assert fragment in problems, fragment
    assert len(err.value.problems) >= 7


def test_validate_missing_system_entries():
    with pytest.raises(InvalidManifest) as err:
        validate_manifest({"runner": {"properties.desired": {}}})
    problems = "\n".join(err.value.problems)
    assert "$edgeAgent is missing" in problems and "$edgeHub is missing" in problems


def test_validate_port_clash_with_edge_hub():
    with pytest.raises(InvalidManifest, match="443/tcp"):
        validate_manifest(_wire(module_spec("web", IMAGE, host_port=443)))


def test_privileged_is_a_warning_not_an_error():
    warnings = validate_manifest(_wire(module_spec("cam", IMAGE, privileged=True)))
    assert len(warnings) == 1 and "Privileged" in warnings[0] and "Devices" in warnings[0]


def test_validate_routes_and_twins():
    m = _wire(
        module_spec("m", IMAGE),
        routes={
            "up": "FROM /messages/modules/m/outputs/* INTO $upstream",
            "ghost": {"route": "FROM /messages/modules/ghost/* INTO $upstream", "priority": 1, "timeToLiveSecs": 60},
        },
    )
    m["nobody"] = {"properties.desired": {"x": 1}}
    warnings = validate_manifest(m)
    assert any("'ghost'" in w for w in warnings) and any("'nobody'" in w for w in warnings)
    m["$edgeHub"]["properties.desired"]["routes"]["bad"] = "SEND everything"
    with pytest.raises(InvalidManifest, match="FROM"):
        validate_manifest(m)


def test_validate_over_long_chunk():
    m = _wire(module_spec("m", IMAGE))
    modules_of(m)["m"]["settings"]["createOptions"] = json.dumps({"Labels": {"x": "y" * 600}})
    with pytest.raises(InvalidManifest, match="max 512"):
        validate_manifest(m)


def test_constants_match_azure_enums():
    assert set(mf.RESTART_POLICIES) == {"never", "on-failure", "on-unhealthy", "always"}
    assert set(mf.STATUSES) == {"running", "stopped"}


def test_camera_source_env_is_optional():
    assert "CAMERA_SOURCE" not in runner_module(IMAGE, 1, STUDIO)["env"]
    spec = collector_module(IMAGE, STUDIO, camera=None, camera_source="synthetic")
    assert spec["env"]["CAMERA_SOURCE"] == {"value": "synthetic"} and "CAMERA_DEVICE" not in spec["env"]
    assert "Devices" not in parse_create_options(spec["settings"]).get("HostConfig", {})


def test_synthetic_camera_maps_no_device():
    # A container engine refuses a mapped device that does not exist (a simulated device has no
    # /dev/video0): the synthetic camera must not ask for one, a real camera source still does.
    for spec in (collector_module(IMAGE, STUDIO, camera_source="synthetic"),
                 runner_module(IMAGE, 1, STUDIO, camera_source="synthetic")):
        assert "CAMERA_DEVICE" not in spec["env"]
        assert "Devices" not in parse_create_options(spec["settings"]).get("HostConfig", {})
    webcam = collector_module(IMAGE, STUDIO, camera_source="webcam")
    assert parse_create_options(webcam["settings"])["HostConfig"]["Devices"][0]["PathOnHost"] == "/dev/video0"


# ----------------------------------------------------------------------------- the published schemas


def test_published_schemas_are_vendored_with_their_licence():
    from helpers.protocol.manifest.validate import SCHEMA_DIR, SECTIONS, schema_validator

    notice = (SCHEMA_DIR / "NOTICE").read_text()
    assert "Apache License" in (SCHEMA_DIR / "LICENSE").read_text() and "SchemaStore" in notice
    for stem, versions in SECTIONS.values():
        for version in versions:
            assert f"azure-iot-{stem}-deployment-{version}.json" in notice
            assert schema_validator(stem, version).schema["title"].endswith(f"version {version}")


def test_schema_errors_name_the_module_the_field_and_the_fix():
    m = _wire(module_spec("m", IMAGE, env={"A": "1"}), routes={"r": {"route": "FROM /messages/* INTO $upstream", "priority": 12}})
    mod = modules_of(m)["m"]
    mod["extra"] = 1
    mod["env"]["A"]["value"] = None
    modules_of(m)["bad.name"] = dict(mod)
    with pytest.raises(InvalidManifest) as err:
        validate_manifest(m)
    problems = "\n".join(err.value.problems)
    for fragment in (
        "module name 'bad.name' is not valid",
        "module 'm' has unknown key(s) ['extra']",
        "module 'm': env.A.value must be a number, string or boolean, got None",
        "$edgeHub route 'r': priority must be <= 9, got 12",
    ):
        assert fragment in problems, fragment
    with pytest.raises(ValueError, match="not valid"):
        module_spec("bad.name", IMAGE)  # the builder refuses what the schema refuses


def test_route_objects_need_schema_1_1():
    m = _wire(module_spec("m", IMAGE), schema_version="1.0",
              routes={"r": {"route": "FROM /messages/* INTO $upstream", "priority": 1}})
    with pytest.raises(InvalidManifest, match=r"route 'r' must be a string.*need schemaVersion 1.1"):
        validate_manifest(m)


def test_unknown_schema_version_is_named():
    m = _wire(module_spec("m", IMAGE))
    m["$edgeHub"]["properties.desired"]["schemaVersion"] = "3.0"
    with pytest.raises(InvalidManifest, match=r"\$edgeHub: schemaVersion '3.0' is not one of"):
        validate_manifest(m)
