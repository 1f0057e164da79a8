"""The IoT Hub query language subset (`condition.parse_query`/`run_query`) and the rollout's
"waiting for the hub" vs "waiting for the device" verdicts."""
from __future__ import annotations

import pytest

from helpers.deploy.rollout import check_device
from helpers.hub.base import DeviceStatus, ModuleStatus
from helpers.localcloud.hub.condition import QueryError, parse_condition, parse_query, run_query
from helpers.localcloud.hub.deploy import DeploymentTiming

AGENT = {"deviceId": "pi-1", "moduleId": "$edgeAgent", "configurations": {"fruit-v2": {"status": "Applied"}},
         "properties": {"desired": {"$version": 4}, "reported": {"lastDesiredVersion": 4, "lastDesiredStatus": {"code": 200}}}}
OTHER = {"deviceId": "pi-2", "moduleId": "$edgeAgent", "configurations": {"fruit-v2": {"status": "Targeted"}},
         "properties": {"desired": {"$version": 2}, "reported": {"lastDesiredVersion": 1}}}


def test_system_metric_queries_as_azure_writes_them():
    q = parse_query("SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND configurations.[[fruit-v2]].status = 'Applied'"
                    " AND properties.desired.$version = properties.reported.lastDesiredVersion AND properties.reported.lastDesiredStatus.code = 200")
    assert q.source == "devices.modules" and q.item_type == "raw"
    assert run_query(q, [AGENT, OTHER]) == [{"deviceId": "pi-1"}]


def test_select_star_count_group_by_and_functions():
    docs = [{"deviceId": "a", "tags": {"shelf": "top"}}, {"deviceId": "b", "tags": {"shelf": "top"}}, {"deviceId": "c", "tags": {}}]
    assert parse_query("SELECT * FROM devices").item_type == "twin"
    assert run_query(parse_query("select * from devices where tags.shelf = 'top'"), docs) == docs[:2]
    assert run_query(parse_query("SELECT COUNT() AS n FROM devices WHERE IS_DEFINED(tags.shelf)"), docs) == [{"n": 2}]
    grouped = run_query(parse_query("SELECT tags.shelf AS shelf, COUNT() AS n FROM devices GROUP BY tags.shelf"), docs)
    assert sorted(grouped, key=repr) == sorted([{"shelf": "top", "n": 2}, {"shelf": None, "n": 1}], key=repr)
    assert run_query(parse_query("SELECT deviceId FROM devices WHERE STARTSWITH(deviceId, 'b') OR ENDSWITH(deviceId, 'c')"), docs) == \
        [{"deviceId": "b"}, {"deviceId": "c"}]
    assert parse_condition("deviceId IN ['a', 'b']")(docs[0])


@pytest.mark.parametrize("bad", ["", "SELECT", "SELECT * FROM jobs", "SELECT * FROM devices WHERE", "SELECT deviceId, COUNT() FROM devices",
                                 "SELECT tags.a, COUNT() FROM devices GROUP BY tags.b", "SELECT * FROM devices GROUP tags.x"])
def test_bad_queries_say_where(bad):
    with pytest.raises(QueryError, match="query"):
        parse_query(bad)


def test_deployment_timing_settings():
    assert DeploymentTiming.parse(None) == DeploymentTiming(0.0, 1.0)
    assert DeploymentTiming.parse("azure") == DeploymentTiming(30.0, 300.0)
    assert DeploymentTiming.parse("2,10") == DeploymentTiming(2.0, 10.0)
    for bad in ("soon", "1", "-1,5", "0,0"):
        with pytest.raises(ValueError, match="DELAY,INTERVAL|delay"):
            DeploymentTiming.parse(bad)


def status(configurations: dict[str, str], desired: str = "4", reported: str = "4") -> DeviceStatus:
    return DeviceStatus("pi-1", True, None, 200, "", "fruit-v2", desired, reported,
                        {"runner": ModuleStatus("runner", "running", version="2.0")}, configurations)


def test_rollout_waits_for_the_hub_then_for_the_device():
    expect = {"runner": {"version": "2.0"}}
    hub_wait = check_device(status({"fruit-v1": "Applied", "fruit-v2": "Targeted"}), expect, deployment="fruit-v2")
    assert hub_wait.state == "pending" and hub_wait.reason.startswith("waiting for the hub to apply deployment 'fruit-v2' (now 'fruit-v1')")
    device_wait = check_device(status({"fruit-v2": "Applied"}, desired="5"), expect, deployment="fruit-v2")
    assert device_wait.state == "pending" and device_wait.reason.startswith("waiting for the device")
    assert check_device(status({"fruit-v2": "Applied"}), expect, deployment="fruit-v2").state == "converged"
    assert check_device(status({}), expect).state == "converged"  # a device-level deployment: no hub wait
