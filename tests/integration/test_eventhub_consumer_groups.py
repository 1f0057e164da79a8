"""Consumer groups of the built-in Event Hubs-compatible endpoint: `python -m helpers.localcloud consumer-group ...`.

Created, listed and deleted as `az iot hub consumer-group create|list|delete` does, kept in the
workspace (served at once by the running stand-in, and in service.json); two groups read the
same events independently with the unmodified `azure-eventhub`, and a deleted group is refused.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

pytest.importorskip("azure.eventhub")
pytest.importorskip("azure.iot.device")

from azure.iot.device import IoTHubDeviceClient, Message  # noqa: E402

from helpers.endpoints import local_eventhub  # noqa: E402
from helpers.hub.telemetry import read_telemetry  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _cli(ws, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "helpers.localcloud", "consumer-group", *args, "--workspace", str(ws)],
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout or proc.stderr)


def test_two_groups_read_the_same_events_independently(cloud, unique_name):
    group = unique_name("analytics")
    rc, out = _cli(cloud.workspace, "create", group)
    assert rc == 0 and out["consumer_groups"][0] == "$Default" and group in out["consumer_groups"]
    assert _cli(cloud.workspace, "list")[1]["consumer_groups"] == out["consumer_groups"]
    assert group in local_eventhub(cloud.workspace).consumer_groups  # service.json follows
    rc, err = _cli(cloud.workspace, "create", group)
    assert rc == 1 and err["type"] == "Conflict" and "exists already" in err["error"]
    rc, err = _cli(cloud.workspace, "delete", "$Default")
    assert rc == 1 and "cannot be deleted" in err["error"]
    rc, err = _cli(cloud.workspace, "create", "-bad name-")
    assert rc == 1 and err["type"] == "ConfigError" and "not valid" in err["error"]

    dev = unique_name("cg")
    cloud.hub.create_edge_device(dev, edge=False)
    eh = local_eventhub(cloud.workspace)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    client = IoTHubDeviceClient.create_from_connection_string(cloud.hub.connection_string(dev).get_secret_value(),
                                                              server_verification_cert=eh.ca_file.read_text())
    client.connect()
    try:
        for n in range(3):
            client.send_message(Message(json.dumps({"n": n})))
    finally:
        client.shutdown()

    def read(consumer_group: str) -> list[int]:
        got = read_telemetry(eh.connection_string, eh.ca_file, consumer_group=consumer_group, device_id=dev,
                             starting_position=start, max_events=3, timeout_s=30)
        return [t.json["n"] for t in got]

    assert read(group) == [0, 1, 2]
    assert read("$Default") == [0, 1, 2]  # the other group's reader took nothing away
    assert read(group) == [0, 1, 2]  # nor does a group remember a reader without a checkpoint store

    rc, out = _cli(cloud.workspace, "delete", group)
    assert rc == 0 and group not in out["consumer_groups"] and group not in local_eventhub(cloud.workspace).consumer_groups
    # the endpoint refuses the group's receiver links (amqp:not-found); azure-eventhub's receive() retries them
    # without calling on_error, so a reader of a deleted group hears nothing
    got = read_telemetry(eh.connection_string, eh.ca_file, consumer_group=group, device_id=dev, starting_position=start,
                         max_events=3, timeout_s=3)
    assert got == [] and read("$Default") == [0, 1, 2]
    rc, err = _cli(cloud.workspace, "delete", group)
    assert rc == 1 and err["type"] == "NotFound"
