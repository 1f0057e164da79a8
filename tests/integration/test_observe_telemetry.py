"""The runners' telemetry windows read back through the hub client (`hub.read_telemetry`) and `helpers.observe`.

A real simulated device (edge agent + runner process, synthetic camera with apples and a banana)
runs a tiny trained apple detector and sends one telemetry window per `TELEMETRY_INTERVAL_S`
over MQTT with `azure-iot-device`; the notebooks' observe functions read them from the stand-in's
Event Hubs-compatible endpoint with `azure-eventhub`, filtered by device, module, model version
and time, as they read Azure's (`IOTHUB_EVENTHUB_CONNECTION_STRING`). The live variant reads a
real hub's endpoint (`-m azure`, skipped without IOTHUB_CONNECTION_STRING and
IOTHUB_EVENTHUB_CONNECTION_STRING).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import pytest
from test_gate_models import models_cache, tiny_models

pytest.importorskip("azure.eventhub")

from helpers import observe  # noqa: E402
from helpers.deploy import rollout, runner_manifest  # noqa: E402
from helpers.device import fleet  # noqa: E402
from helpers.endpoints import local_eventhub, local_hub  # noqa: E402
from helpers.errors import ConfigError, RolloutError  # noqa: E402
from helpers.hub.iothub import IoTHub, azure_hub  # noqa: E402

pytestmark = pytest.mark.timeout(300)

IMAGE = "local/edgeloop-device:process"
FAST = ["--backoff-max", "4", "--stop-timeout", "5", "--hub-backoff-max", "1", "--hub-timeout", "2"]
RUNNER_ENV = {"INFER_RATE_HZ": "5", "CAMERA_SIZE": "96x96"}


@pytest.fixture(scope="module")
def runner_device(cloud, request, tmp_path_factory):
    """A device running the trained apple model with 1-s telemetry windows; yields (device id, model version)."""
    model_dir = tiny_models(models_cache(request, tmp_path_factory), names=("good",))["good"]
    version = cloud.studio.register_model(model_dir / "model.onnx", json.loads((model_dir / "model.json").read_text())).version
    dev = f"obs-{uuid.uuid4().hex[:6]}"
    fleet.start_devices(cloud.hub, [dev], cloud.workspace, tags={"observetest": dev}, agent_args=FAST)
    try:
        fleet.wait_online(cloud.hub, [dev], timeout=30)
        fleet.set_scene(cloud.workspace, dev, ["apple", "banana"])
        manifest = runner_manifest(version, IMAGE, cloud.studio, camera_source="synthetic", host_port=None,
                                   telemetry_interval_s=1, extra_env=RUNNER_ENV)
        report = rollout(cloud.hub, [dev], manifest, timeout=90, poll_s=0.5, stable_s=1.0)
        assert report.ok, report.summary()
        yield dev, version
    finally:
        fleet.stop_devices(cloud.workspace, [dev])


def test_windows_of_the_deployed_model_arrive_through_the_hub_client(cloud, runner_device):
    dev, version = runner_device
    since = observe.utc_now()
    windows = observe.telemetry_windows(cloud.hub, [dev], seconds=2, model_version=version, timeout_s=60)
    got = windows[dev]
    assert got and sum(w.json["window_s"] for w in got) >= 2
    for w in got:
        assert (w.device_id, w.module_id, w.properties["type"]) == (dev, "runner", "telemetry")
        assert w.json["model_version"] == version and w.properties["model_version"] == str(version)
        assert observe.window_span(w)[0] >= since and w.enqueued_time.tzinfo is not None
        assert w.json["window_frames"] > 0 and w.json["synthetic_check"]["objects"].get("banana", 0) > 0
    # the apple model finds the apples; it knows no banana class
    rates = observe.per_frame(windows, "apple")
    assert rates[dev] > 0 and observe.per_frame(windows, "banana")[dev] == 0.0
    assert observe.detections(got)["apple"] > 0
    assert observe.detected_on_fleet(cloud.hub, [dev], "apple", seconds=2, min_per_frame=0.01, model_version=version) == {dev: True}


def test_other_model_versions_and_devices_are_filtered_out(cloud, runner_device, unique_name):
    dev, version = runner_device
    other = unique_name("quiet")
    windows = observe.telemetry_windows(cloud.hub, [dev, other], seconds=1, model_version=version + 1000, timeout_s=4)
    assert windows == {dev: [], other: []}
    windows = observe.telemetry_windows(cloud.hub, [dev, other], seconds=1, model_version=version, timeout_s=6)
    assert windows[dev] and windows[other] == []
    with pytest.raises(ConfigError, match="seconds > 0"):
        observe.telemetry_windows(cloud.hub, [dev], seconds=0)


def test_observe_confusion_counts_ground_truth_objects_from_telemetry(cloud, runner_device):
    dev, version = runner_device
    rate = observe.observe_confusion(cloud.hub, [dev], "banana", "apple", seconds=2, settle_s=0.5, model_version=version)
    assert isinstance(rate, observe.TelemetryConfusion)
    assert rate.windows >= 1 and rate.devices == 1 and rate.frames > 0
    assert rate.frames_with_true > 0 and 0 <= rate.confused <= rate.frames_with_true
    assert rate.rate == rate.confused / rate.frames_with_true
    assert "bananas seen" in rate.summary() and "telemetry windows" in rate.summary()
    # a device that sends nothing: the error names it and what to do
    with pytest.raises(RolloutError, match="sent no window"):
        observe.observe_confusion(cloud.hub, [dev], "banana", "apple", seconds=1, settle_s=0, model_version=version + 1000)


def test_hub_client_reads_telemetry_as_for_azure_with_an_explicit_endpoint(cloud, runner_device, monkeypatch):
    """`IoTHub(cs, eventhub=...)` is how Azure's hub is built (azure_hub reads IOTHUB_EVENTHUB_CONNECTION_STRING)."""
    dev, version = runner_device
    hub_ep, eh = local_hub(cloud.workspace), local_eventhub(cloud.workspace)
    plain = IoTHub(hub_ep.connection_string, ca_file=hub_ep.ca_file, workspace=cloud.workspace)
    with pytest.raises(ConfigError, match="IOTHUB_EVENTHUB_CONNECTION_STRING"):
        plain.read_telemetry(max_events=1)
    hub = IoTHub(hub_ep.connection_string, ca_file=hub_ep.ca_file, workspace=cloud.workspace, eventhub=eh.connection_string)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    got = hub.read_telemetry(device_id=dev, starting_position=start, max_events=2, timeout_s=30)
    assert len(got) == 2 and all(t.module_id == "runner" and t.json["model_version"] == version for t in got)
    # get_hub("azure") takes the endpoint from IOTHUB_EVENTHUB_CONNECTION_STRING, as a user of Azure sets it
    monkeypatch.setenv("IOTHUB_EVENTHUB_CONNECTION_STRING", eh.connection_string.get_secret_value())
    azure = azure_hub(cloud.workspace, connection_string=hub_ep.connection_string, ca_file=hub_ep.ca_file)
    assert observe.telemetry_windows(azure, [dev], seconds=1, model_version=version, timeout_s=30)[dev]


@pytest.mark.azure
@pytest.mark.live
@pytest.mark.timeout(300)
def test_live_azure_hub_client_reads_telemetry(tmp_path):
    if not os.environ.get("IOTHUB_CONNECTION_STRING") or not os.environ.get("IOTHUB_EVENTHUB_CONNECTION_STRING"):
        pytest.skip("IOTHUB_CONNECTION_STRING and IOTHUB_EVENTHUB_CONNECTION_STRING (the hub's Built-in endpoints > "
                    "Event Hub-compatible endpoint, iothubowner) are not both set")
    from azure.iot.device import IoTHubDeviceClient, Message

    from helpers.hub import get_hub

    hub = get_hub("azure", workspace=tmp_path)
    dev = f"edgeloop-obs-{uuid.uuid4().hex[:8]}"
    hub.create_edge_device(dev)
    try:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
        client = IoTHubDeviceClient.create_from_connection_string(hub.connection_string(dev).get_secret_value())
        client.connect()
        try:
            client.send_message(Message('{"window_s": 1.0, "window_frames": 3}'))
        finally:
            client.shutdown()
        got = hub.read_telemetry(device_id=dev, starting_position=start, max_events=1, timeout_s=120)
        assert got and got[0].json == {"window_s": 1.0, "window_frames": 3}
    finally:
        hub.delete_device(dev)
