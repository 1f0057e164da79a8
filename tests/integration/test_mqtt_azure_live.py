"""A simulated device in a real Azure IoT Hub: the same agent and modules, the same SDKs.

    IOTHUB_CONNECTION_STRING='HostName=<hub>.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=...' \\
        .venv/bin/pytest tests/integration/test_mqtt_azure_live.py -m azure

The device is registered in that hub, its edge agent connects there as `$edgeAgent` (MQTT on
port 8883, Azure's certificate checked against the system CAs), creates its modules' identities
there, and runs the collector and then the runner (with a tiny model from the local studio)
whose reports arrive through Azure. Skipped without IOTHUB_CONNECTION_STRING. The device is
deleted at the end.
"""
from __future__ import annotations

import functools
import os
import uuid

import pytest
import waiting

wait_for = functools.partial(waiting.wait_for, interval=2.0)

pytestmark = [pytest.mark.azure, pytest.mark.live, pytest.mark.timeout(900)]

AZURE_CS = os.environ.get("IOTHUB_CONNECTION_STRING", "")
IMAGE = "local/edgeloop-device:process"


@pytest.fixture()
def azure_hub(tmp_path):
    if not AZURE_CS:
        pytest.skip("IOTHUB_CONNECTION_STRING is not set: this test runs a simulated device in a real Azure IoT Hub")
    from helpers.hub import get_hub

    return get_hub("azure", workspace=tmp_path, connection_string=AZURE_CS)


def test_simulated_device_in_azure_runs_collector_then_runner(azure_hub, cloud, tmp_path):
    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.models import CloudToDeviceMethod
    from test_runner_model import CARD, tiny_detector  # tests/integration is on sys.path (pytest rootdir import)

    from helpers.device import fleet
    from helpers.protocol.manifest import build_manifest, collector_module, reveal_secrets, runner_module

    hub = azure_hub
    dev = f"edgeloop-live-{uuid.uuid4().hex[:8]}"
    ws = tmp_path / "ws"
    version = cloud.studio.register_model(tiny_detector(tmp_path / "model" / "model.onnx"), dict(CARD)).version
    fleet.start_devices(hub, [dev], ws, agent_args=["--stop-timeout", "5"])
    try:
        fleet.wait_online(hub, [dev], timeout=120)
        hub.set_modules(dev, reveal_secrets(build_manifest(
            [collector_module(IMAGE, cloud.url, name="collector", camera=None, count=5, rate_hz=2, label="apple")],
            secrets={"EI_API_KEY": cloud.studio.api_key})))
        st = wait_for(lambda: (lambda s: s if s.modules.get("collector") and
                               s.modules["collector"].telemetry.get("captured", 0) >= 1 else None)(hub.device_status(dev)),
                      300, "the collector's own report through Azure")
        assert st.last_desired_status == 200 and st.reported_version == st.desired_version

        registry = IoTHubRegistryManager.from_connection_string(AZURE_CS)
        pong = registry.invoke_device_module_method(dev, "$edgeAgent", CloudToDeviceMethod(
            method_name="ping", payload=None, response_timeout_in_seconds=30))
        assert pong.status == 200

        hub.set_modules(dev, reveal_secrets(build_manifest(
            [runner_module(IMAGE, version, cloud.url, name="runner", camera=None)],
            secrets={"EI_API_KEY": cloud.studio.api_key})))
        st = wait_for(lambda: (lambda s: s if s.modules.get("runner") and "collector" not in s.modules and
                               s.modules["runner"].telemetry.get("model_version") == version else None)(hub.device_status(dev)),
                      300, "the runner's model version reported through Azure")
        assert st.modules["runner"].runtime_status == "running"
    finally:
        fleet.stop_devices(ws, [dev])
        hub.delete_device(dev)
