"""A module's device-to-cloud queue while its hub is away: the newest messages are kept, the older
ones dropped and counted (`ModuleHub.dropped`), never silently.

The client is the device SDK's own `IoTHubModuleClient`, pointed at a loopback address where no hub
listens, so every connect fails and the messages stay queued.
"""
from __future__ import annotations

import logging

import pytest

pytest.importorskip("azure.iot.device")

from azure.iot.device import IoTHubModuleClient  # noqa: E402

from helpers.device.module_client import ModuleHub  # noqa: E402


def test_full_queue_drops_the_oldest_and_counts_them(caplog):
    cs = ("HostName=127.0.0.1;DeviceId=pi-q;ModuleId=runner;"
          "SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGhlLXF1ZXVlLXRlc3Qtb25seQ==")
    client = IoTHubModuleClient.create_from_connection_string(cs, connection_retry=False)
    hub = ModuleHub(client, max_queue=10, retry_s=30.0)
    try:
        with caplog.at_level(logging.WARNING, logger="helpers.device.module_client"):
            for i in range(25):
                hub.send({"i": i})
        assert hub.dropped == 15
        assert hub.sent == 0
        kept = [m[0] for m in hub._messages]
        assert [int(b.decode().split(":")[1].strip(" }")) for b in kept] == list(range(15, 25))
        assert any("1 device-to-cloud messages dropped" in r.getMessage() for r in caplog.records)
    finally:
        hub.close(flush_timeout_s=0.1)
