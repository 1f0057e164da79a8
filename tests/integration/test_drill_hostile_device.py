"""Fault drill 8: a hostile device, while the fleet's calls keep answering 200 for everyone else.

One registered device turns hostile on the hub's MQTT endpoint (raw TLS sockets, the bytes it
chooses): reported-property patches nested deeper than IoT Hub allows, holding NaN or infinities,
over the twin's size (in one patch or in many), and a flood of QoS 1 twin GETs it never
acknowledges. Meanwhile the fleet's operator calls the hub with the official service SDK
(`azure-iot-hub`'s `IoTHubRegistryManager`): `get_twin` of a well-behaved device and of the hostile
one, and `query_iot_hub("SELECT * FROM devices")`, from another thread, over and over. Every one of
those calls must answer 200, during the drill and after it; the hostile writes are refused (a 4xx
twin status, or the connection closed) and nothing of them is stored. A dedicated local cloud: the
hostile device must not reach the shared one. Each case prints its counts.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

pytest.importorskip("azure.iot.hub")

from azure.iot.hub.models import QuerySpecification  # noqa: E402
from mqtt_raw import (  # noqa: E402
    PINGREQ,
    connected,
    create_device,
    own_cloud,
    read_until_closed,
    subscribe_packet,
    twin_topic_status,
)
from msrest.exceptions import ClientRequestError, HttpOperationError  # noqa: E402

from helpers.localcloud.mqtt import codec as mc  # noqa: E402

pytestmark = pytest.mark.timeout(300)

GOOD, HOSTILE = "fleet-good", "fleet-hostile"
TWIN_LIMIT = 32 * 1024  # IoT Hub: each twin section (tags, desired, reported) at most 32 KB


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with own_cloud(tmp_path_factory.mktemp("hostile-ws")) as cloud:
        cloud.keys = {d: create_device(cloud, d) for d in (GOOD, HOSTILE)}  # type: ignore[attr-defined]
        yield cloud


class Fleet(threading.Thread):
    """The operator's calls, round after round, from their own SDK client: each call's status."""

    def __init__(self, hub: Any):
        super().__init__(name="fleet-calls", daemon=True)
        self.hub = hub
        self.statuses: list[tuple[str, Any]] = []
        self.rounds = 0
        self.halt = threading.Event()

    def run(self) -> None:
        rm = self.hub.registry()
        calls = {f"GET /twins/{GOOD}": lambda: rm.get_twin(GOOD),
                 f"GET /twins/{HOSTILE}": lambda: rm.get_twin(HOSTILE),
                 "SELECT * FROM devices": lambda: rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"))}
        while not self.halt.is_set():
            for name, call in calls.items():
                try:
                    call()
                    status: Any = 200
                except HttpOperationError as exc:
                    status = f"{exc.response.status_code} {exc.response.text[:300]}"
                except ClientRequestError as exc:  # no answer at all
                    status = f"no answer: {exc}"
                self.statuses.append((name, status))
            self.rounds += 1
            time.sleep(0.02)

    def stop_after_one_more_round(self, timeout_s: float = 60) -> None:
        target, deadline = self.rounds + 2, time.monotonic() + timeout_s
        while self.rounds < target and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.02)
        self.halt.set()
        self.join(timeout_s)


@contextmanager
def fleet_watching(hub: Any, case: str) -> Iterator[Fleet]:
    """Run the fleet's calls around the block; every one of them must have answered 200."""
    fleet = Fleet(hub)
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop_after_one_more_round()
    counts = Counter(name for name, _ in fleet.statuses)
    bad = [(name, status) for name, status in fleet.statuses if status != 200]
    print(f"\n[drill 8: {case}] fleet calls: {dict(counts)}, not 200: {len(bad)}")
    assert fleet.rounds >= 2, f"the fleet's calls did not complete a round during {case}"
    assert not bad, f"{case}: {len(bad)} of {len(fleet.statuses)} fleet calls did not answer 200, e.g. {bad[:3]}"


def hostile_socket(hub: Any, clean: bool = True) -> Any:
    sock = connected(hub, HOSTILE, hub.keys[HOSTILE], clean=clean)
    sock.sendall(subscribe_packet(1, [("$iothub/twin/res/#", 0)]) + PINGREQ)
    packets, end = read_until_closed(sock, 10, stop_at_pingresp=True)
    assert end == "pingresp" and packets[0] == (mc.SUBACK << 4, b"\x00\x01\x00")
    return sock


def twin_call(sock: Any, topic: str, payload: bytes, rid: str) -> tuple[int | None, bytes | None, str]:
    """Send a twin request; `(status, body, how)`: the twin answer, or `None` when the broker closed the connection."""
    try:
        sock.sendall(mc.publish(topic, payload) + PINGREQ)
    except OSError:
        return None, None, "closed"
    packets, end = read_until_closed(sock, 15, stop_at_pingresp=True)
    for first, body in packets:
        if first >> 4 == mc.PUBLISH:
            p = mc.decode(first, body)
            if f"$rid={rid}" in p.topic:
                return twin_topic_status(p.topic), p.payload, end
    return None, None, end


def reported(hub: Any) -> dict[str, Any]:
    return hub.registry().get_twin(HOSTILE).properties.reported


def patch_reported(sock: Any, payload: bytes, rid: str) -> tuple[int | None, str]:
    status, _, how = twin_call(sock, f"$iothub/twin/PATCH/properties/reported/?$rid={rid}", payload, rid)
    return status, how


def nested(depth: int, leaf: str = "1") -> bytes:
    return ('{"hostile":' + '{"a":' * (depth - 1) + leaf + "}" * depth).encode()


@pytest.mark.parametrize("depth", [300, 975, 990, 5000])
def test_deep_reported_patch_is_refused_and_the_fleet_keeps_answering(hub, depth):
    payload = nested(depth)
    assert len(payload) < TWIN_LIMIT  # the size is fine: only the depth is hostile
    with fleet_watching(hub, f"reported patch {depth} deep"):
        sock = hostile_socket(hub)
        try:
            status, how = patch_reported(sock, payload, f"d{depth}")
        finally:
            sock.close()
    print(f"[drill 8: {depth} deep] the device got: {status if status is not None else how}")
    assert (status is not None and 400 <= status < 500) or how == "closed", \
        f"a {depth}-deep reported patch must be refused (a 4xx twin status, or the connection closed), got {status} / {how}"
    assert "hostile" not in reported(hub), "a refused patch must not be stored"


@pytest.mark.parametrize("leaf", ["NaN", "Infinity", "-Infinity", "1e999", "[1, NaN]"])
def test_non_finite_reported_value_is_refused_and_the_fleet_keeps_answering(hub, leaf):
    with fleet_watching(hub, f"reported {leaf}"):
        sock = hostile_socket(hub)
        try:
            status, how = patch_reported(sock, ('{"hostile": ' + leaf + "}").encode(), "nan")
        finally:
            sock.close()
    print(f"[drill 8: {leaf}] the device got: {status if status is not None else how}")
    assert (status is not None and 400 <= status < 500) or how == "closed", \
        f"a reported value {leaf} (not a finite JSON number) must be refused, got {status} / {how}"
    assert "hostile" not in reported(hub)


def test_reported_section_stays_within_the_twin_limit(hub):
    """One patch over 32 KB, and then many patches that add up to more: the stored section stays within it."""
    with fleet_watching(hub, "oversized reported patches"):
        sock = hostile_socket(hub)
        try:
            big = json.dumps({"hostile": "x" * (TWIN_LIMIT + 10)}).encode()
            status, how = patch_reported(sock, big, "big")
            assert (status is not None and 400 <= status < 500) or how == "closed", (status, how)
            answers = []
            for i in range(12):  # 12 patches of 8 KB, each alone within the limit
                if how == "closed":
                    sock.close()
                    sock = hostile_socket(hub)
                status, how = patch_reported(sock, json.dumps({f"hostile{i}": "y" * 8000}).encode(), f"p{i}")
                answers.append(status if status is not None else how)
        finally:
            sock.close()
    size = len(json.dumps({k: v for k, v in reported(hub).items() if not k.startswith("$")}))
    print(f"[drill 8: oversized] answers to 12 x 8 KB patches: {answers}; stored reported section: {size} bytes")
    assert size <= TWIN_LIMIT, f"the reported section grew to {size} bytes, over IoT Hub's {TWIN_LIMIT}"
    assert any(a != 204 for a in answers), "the patches past the limit must be refused"
    for i in range(12):  # leave the twin small for the other cases
        sock = hostile_socket(hub)
        try:
            patch_reported(sock, json.dumps({f"hostile{i}": None}).encode(), f"c{i}")
        finally:
            sock.close()


def test_unacknowledged_qos1_flood_is_bounded_and_the_fleet_keeps_answering(hub):
    """1500 twin GETs whose QoS 1 answers are never acknowledged, on a persistent session."""
    sent = 1500
    sock = hostile_socket(hub)
    try:  # a 24 KB reported section: each answer is that big
        status, how = patch_reported(sock, json.dumps({"bulk": "z" * 24_000}).encode(), "bulk")
        assert status == 204, (status, how)
    finally:
        sock.close()
    with fleet_watching(hub, "unacknowledged QoS 1 twin GETs"):
        sock = connected(hub, HOSTILE, hub.keys[HOSTILE], clean=False)
        got, end, written = 0, "timeout", 0
        try:
            sock.sendall(subscribe_packet(1, [("$iothub/twin/res/#", 1)]))
            sock.settimeout(10)
            try:
                for i in range(sent):
                    sock.sendall(mc.publish(f"$iothub/twin/GET/?$rid=f{i}", b""))
                    written += 1
            except OSError:  # closed by the broker, or it stopped reading (back-pressure)
                pass
            time.sleep(1.0)  # never read, never PUBACK
            packets, end = read_until_closed(sock, 30)
            got = sum(1 for first, _ in packets if first >> 4 == mc.PUBLISH)
        finally:
            sock.close()
        # the same persistent session again: what it redelivers is bounded too
        sock = connected(hub, HOSTILE, hub.keys[HOSTILE], clean=False)
        try:
            sock.sendall(PINGREQ)
            packets, _ = read_until_closed(sock, 30, stop_at_pingresp=True)
        finally:
            sock.close()
        redelivered = sum(1 for first, _ in packets if first >> 4 == mc.PUBLISH and first & 0x08)
    print(f"[drill 8: QoS 1 flood] GETs written {written} of {sent}; answers received {got}; the flood connection "
          f"ended: {end}; redelivered on reconnect: {redelivered}")
    assert end == "closed", "a session over its in-flight limit must be closed by the hub, not kept open"
    assert got < sent, "the hub must stop answering a client that acknowledges nothing"
    assert redelivered < sent, f"all {redelivered} unacknowledged answers were kept and resent: the session's queue is unbounded"
    sock = connected(hub, HOSTILE, hub.keys[HOSTILE], clean=True)  # a clean session drops what was left
    sock.close()
