"""Telemetry through the local hub's built-in Event Hubs-compatible endpoint, read with `azure-eventhub`.

A real local cloud; one device sends `--messages` telemetry messages with `azure-iot-device`
(MQTT over TLS), then `EventHubConsumerClient` (through `helpers.hub.telemetry.read_telemetry`)
reads them all from the start of the partitions: events per second, and the time to connect
(CBS, `$management`). Then `--rounds` single messages are timed from `send_message` returning
to the consumer's `on_event` (a receiver already attached at `@latest`): p50/p95.

    .venv/bin/python bench/bench_eventhub.py [--messages 500] [--rounds 20]

Writes bench/results/eventhub_telemetry.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

from azure.eventhub import EventHubConsumerClient
from azure.iot.device import IoTHubDeviceClient, Message
from common import write_result  # noqa: I001  (bench/ is the script's folder)

from helpers.endpoints import local_eventhub
from helpers.hub.iothub import IoTHub
from helpers.hub.telemetry import read_telemetry
from helpers.localcloud import ensure_running, stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="bench-eh-")) / "ws"
    ensure_running(ws)
    try:
        hub = IoTHub.local(ws)
        hub.create_edge_device("pi-1")
        eh = local_eventhub(ws)
        device = IoTHubDeviceClient.create_from_connection_string(hub.connection_string("pi-1").get_secret_value(),
                                                                  server_verification_cert=eh.ca_file.read_text())
        device.connect()
        try:
            t0 = time.perf_counter()
            for n in range(args.messages):
                device.send_message(Message(json.dumps({"n": n}), content_type="application/json", content_encoding="utf-8"))
            send_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            with EventHubConsumerClient.from_connection_string(eh.connection_string.get_secret_value(), "$Default",
                                                               connection_verify=str(eh.ca_file)) as c:
                c.get_partition_ids()
            connect_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = read_telemetry(eh.connection_string, eh.ca_file, device_id="pi-1", max_events=args.messages, timeout_s=300)
            read_s = time.perf_counter() - t0
            assert len(got) == args.messages, f"read {len(got)} of {args.messages}"

            partition = got[0].partition_id

            def latency(**receive_kw: object) -> list[float]:
                """Send `--rounds` messages one by one; ms from send_message returning to on_event."""
                out: list[float] = []
                arrived = threading.Event()
                stamp: dict[str, float | str] = {}

                def on_event(_ctx, event) -> None:
                    if event is not None and event.message_id == stamp.get("id"):
                        out.append((time.perf_counter() - float(stamp["t"])) * 1e3)
                        arrived.set()

                client = EventHubConsumerClient.from_connection_string(eh.connection_string.get_secret_value(), "$Default",
                                                                       connection_verify=str(eh.ca_file))
                worker = threading.Thread(target=client.receive, kwargs={"on_event": on_event,
                                                                         "starting_position": "@latest", **receive_kw})
                worker.start()
                time.sleep(2.0)  # the receivers attach
                for r in range(args.rounds):
                    arrived.clear()
                    mid = f"lat-{r}-{time.monotonic_ns()}"
                    device.send_message(Message("{}", message_id=mid))
                    stamp.update(id=mid, t=time.perf_counter())
                    arrived.wait(10)
                client.close()
                worker.join(30)
                return sorted(out)

            all_partitions = latency()
            one_partition = latency(partition_id=partition)
        finally:
            device.shutdown()
        def pct(v: list[float]) -> dict[str, float | int]:
            return {"p50": round(statistics.median(v), 1), "p95": round(v[int(0.95 * (len(v) - 1))], 1),
                    "received": len(v), "rounds": args.rounds} if v else {"received": 0, "rounds": args.rounds}

        path = write_result("eventhub_telemetry", {
            "messages": args.messages, "device_send_s": round(send_s, 3),
            "consumer_connect_s": round(connect_s, 3),
            "read_all_s": round(read_s, 3), "read_events_per_s": round(args.messages / read_s, 1),
            "send_to_receive_ms_all_partitions": pct(all_partitions),
            "send_to_receive_ms_one_partition": pct(one_partition),
            "note": "read_all_s: read_telemetry (one receive() per partition) of the backlog, connecting included. "
                    "send_to_receive: EventHubConsumerClient.receive() on all 4 partitions, then on the device's one; "
                    "the synchronous pyamqp consumer waits its socket timeout on each idle partition between events "
                    "(Azure/azure-sdk-for-python#27314), which dominates the all-partition figure; the endpoint polls "
                    "the store every 50 ms",
        })
        print(path.read_text())
    finally:
        stop(ws)


if __name__ == "__main__":
    main()
