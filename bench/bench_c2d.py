"""Cloud-to-device messages through the local hub: `azure-iot-hub`'s AMQP client to `azure-iot-device` over MQTT.

A real local cloud and one device. Timed: opening a sender (TLS, SASL, CBS token) and closing it
(uamqp's close), sending `--messages` messages on one connection, and `--rounds` single
messages from `send` returning to the device's `on_message_received` (p50/p95; the MQTT
endpoint is woken when a message is queued). Then `--messages` messages queued for the device
while it is offline, drained when it connects.

    .venv/bin/python bench/bench_c2d.py [--messages 50] [--rounds 20]

Writes bench/results/c2d_messages.json.
"""
from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import time
from pathlib import Path

from azure.iot.device import IoTHubDeviceClient
from common import write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.endpoints import local_hub
from helpers.hub.c2d import C2DSender
from helpers.hub.iothub import IoTHub
from helpers.localcloud import ensure_running, stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="bench-c2d-")) / "ws"
    ensure_running(ws)
    try:
        hub = IoTHub.local(ws)
        hub.create_edge_device("pi-1", edge=False)
        ca = local_hub(ws).ca_file.read_text()
        got: queue.Queue = queue.Queue()

        def connect() -> IoTHubDeviceClient:
            client = IoTHubDeviceClient.create_from_connection_string(hub.connection_string("pi-1").get_secret_value(),
                                                                      server_verification_cert=ca)
            client.on_message_received = got.put
            client.connect()
            return client

        t0 = time.perf_counter()
        sender = C2DSender(hub)
        sender.send("pi-1", "warm-up")
        open_s = time.perf_counter() - t0
        device = connect()
        try:
            got.get(timeout=30)
            t0 = time.perf_counter()
            for n in range(args.messages):
                sender.send("pi-1", f"m{n}")
            send_s = time.perf_counter() - t0
            for _ in range(args.messages):
                got.get(timeout=60)
            latencies = []
            for r in range(args.rounds):
                t0 = time.perf_counter()
                sender.send("pi-1", f"r{r}")
                got.get(timeout=30)
                latencies.append((time.perf_counter() - t0) * 1e3)
        finally:
            device.shutdown()
        for n in range(args.messages):
            sender.send("pi-1", f"offline-{n}")
        t0 = time.perf_counter()
        sender.close()
        close_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        device = connect()
        try:
            for _ in range(args.messages):
                got.get(timeout=60)
            drain_s = time.perf_counter() - t0
        finally:
            device.shutdown()
        latencies.sort()
        path = write_result("c2d_messages", {
            "messages": args.messages, "rounds": args.rounds,
            "sender_open_and_first_send_s": round(open_s, 3), "sender_close_s": round(close_s, 3),
            "send_on_one_connection_ms_per_message": round(send_s / args.messages * 1e3, 1),
            "send_to_device_ms": {"p50": round(statistics.median(latencies), 1),
                                  "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1)},
            "offline_queue_drain_s": round(drain_s, 3),
            "note": "send: IoTHubAmqpClientSharedAccessKeyAuth.send_message_to_device (what send_c2d_message calls), "
                    "waiting for the hub's disposition; send_to_device: until the device's on_message_received; the "
                    "MQTT endpoint is woken when a message is queued (and looks every 200 ms); offline_queue_drain_s: connect (TLS, "
                    "CONNECT, SUBSCRIBE) and receive the queue",
        })
        print(path.read_text())
    finally:
        stop(ws)


if __name__ == "__main__":
    main()
