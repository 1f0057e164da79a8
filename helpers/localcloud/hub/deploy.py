"""IoT Edge deployments as IoT Hub runs them: evaluated on a cycle, written into module twins.

IoT Hub does not push a deployment the moment it is created: it evaluates its configurations
shortly after a change and then on a schedule (every 5 minutes on Azure), and for each IoT Edge
device writes the winning deployment's `modulesContent` into the device's module twins'
desired properties (`$edgeAgent`, `$edgeHub`, and modules that carry `properties.desired`).
The stand-in does the same on a configurable cycle (`DeploymentTiming`; seconds by default,
`DeploymentTiming.azure()` rehearses the real pace).

The rules (Azure's):
  1. Among the deployments whose `targetCondition` matches an IoT Edge device, the highest
     `priority` wins; a tie goes to the most recently created.
  2. The winner is written into the module twins when it differs from what was last written
     (another deployment, or content set on the device with `applyConfigurationContent`:
     an at-scale deployment overwrites it at the next evaluation). The `$edgeAgent` module
     twin's `configurations` shows `{"<name>": {"status": "Applied"}}` for the winner and
     `"Targeted"` for other matching deployments.
  3. When no deployment targets a device any more (deleted, or its tags changed), nothing is
     written: the modules keep running what they last received. A deleted deployment's marks
     go at once (`forget_configuration`), so one re-created under the same name waits for the
     next evaluation like a new one.

Metrics are IoT Hub's system metric queries, evaluated when a configuration is read:
`targetedCount` (IoT Edge devices matching the condition), `appliedCount` ($edgeAgent twins
with the deployment Applied), `reportedSuccessfulCount` / `reportedFailedCount` (applied, the
reported `lastDesiredVersion` equals the desired `$version`, and `lastDesiredStatus.code` is /
is not 200); and each custom `metrics.queries` entry counted the same way.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from helpers.localcloud.common.db import Store, dumps, loads
from helpers.localcloud.hub import store as hub_store
from helpers.localcloud.hub.condition import device_document, parse_condition
from helpers.localcloud.hub.query import count

log = logging.getLogger("helpers.localcloud.hub")

MAX_CONFIGURATIONS = 100  # IoT Hub's limit of configurations (deployments) per hub

SYSTEM_METRICS = {
    "targetedCount": "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true AND ({condition})",
    "appliedCount": "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND configurations.[[{name}]].status = 'Applied'",
    "reportedSuccessfulCount": "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND configurations.[[{name}]].status = 'Applied' AND properties.desired.$version = properties.reported.lastDesiredVersion AND properties.reported.lastDesiredStatus.code = 200",
    "reportedFailedCount": "SELECT deviceId FROM devices.modules WHERE moduleId = '$edgeAgent' AND configurations.[[{name}]].status = 'Applied' AND properties.desired.$version = properties.reported.lastDesiredVersion AND properties.reported.lastDesiredStatus.code != 200",
}


@dataclass(frozen=True)
class DeploymentTiming:
    """When the stand-in evaluates deployments.

    Attributes:
        initial_delay_s: after a deployment is created or changed, its first evaluation waits this long.
        interval_s: then every device is re-evaluated this often (tag changes take effect here).
    """

    initial_delay_s: float = 0.0
    interval_s: float = 1.0

    @classmethod
    def azure(cls) -> DeploymentTiming:
        """Azure's pace: shortly after a change (about 30 s here), then every 5 minutes."""
        return cls(initial_delay_s=30.0, interval_s=300.0)

    @classmethod
    def parse(cls, text: str | None) -> DeploymentTiming:
        """`"azure"`, `"fast"`/empty (default), or `"DELAY,INTERVAL"` in seconds.

        Raises:
            ValueError: anything else (the message shows the accepted forms).
        """
        if not text or text.strip().lower() in ("fast", "default"):
            return cls()
        if text.strip().lower() == "azure":
            return cls.azure()
        try:
            delay, interval = (float(x) for x in text.split(","))
        except ValueError:
            raise ValueError(f"deployment timing {text!r}: use 'azure', 'fast' or 'DELAY,INTERVAL' in seconds (e.g. '0,1')") from None
        if delay < 0 or interval <= 0:
            raise ValueError(f"deployment timing {text!r}: delay must be >= 0 and interval > 0")
        return cls(delay, interval)


# ------------------------------------------------------------------ metrics
def metrics_json(conn: Any, dep: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(systemMetrics, metrics) of a deployment row in IoT Hub's shape: `{"results", "queries"}`."""
    name, condition = dep["name"], dep["target_condition"]
    cond = "true = true" if condition.strip() == "*" else condition
    sys_queries = {k: v.format(name=name, condition=cond) for k, v in SYSTEM_METRICS.items()}
    if condition.strip() == "*":
        sys_queries["targetedCount"] = "SELECT deviceId FROM devices WHERE capabilities.iotEdge = true"
    system = {"queries": sys_queries, "results": {k: count(conn, q) for k, q in sys_queries.items()}}
    custom_q = loads(dep["metrics"], {}) if "metrics" in dep.keys() else {}
    custom = {"queries": custom_q, "results": {k: count(conn, q) for k, q in custom_q.items()}}
    return system, custom


# ------------------------------------------------------------------ evaluation
def _deployments(conn: Any, now: float) -> list[dict[str, Any]]:
    out = []
    for r in conn.execute("SELECT * FROM deployments ORDER BY seq"):
        due = r["evaluate_after"] is None or r["evaluate_after"] <= now
        out.append({"name": r["name"], "seq": r["seq"], "priority": r["priority"], "due": due,
                    "predicate": parse_condition(r["target_condition"]), "modulesContent": loads(r["modules_content"])})
    return out


def write_content(conn: Any, device_id: str, content: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Write a `modulesContent` into the device's module twins (desired replaced per module).

    Returns the (module id, push patch) pairs to pass to `hub_store.notify_desired` after the commit.
    """
    hub_store.ensure_edge_modules(conn, device_id)
    pushes = []
    for module_id, part in content.items():
        desired = part.get("properties.desired") if isinstance(part, dict) else None
        if not isinstance(desired, dict):
            continue
        if conn.execute("SELECT 1 FROM modules WHERE device_id=? AND module_id=?", (device_id, module_id)).fetchone() is None:
            hub_store.create_module(conn, device_id, module_id, managed_by="IotEdge")
        _, push = hub_store.set_module_desired(conn, device_id, module_id, desired, replace=True)
        if push:
            pushes.append((module_id, push))
    return pushes


def forget_configuration(conn: Any, name: str) -> int:
    """Remove a deleted configuration's `Applied`/`Targeted` marks from every twin at once.

    The module twins keep their desired content (the modules keep running); only the marks go,
    so a deployment re-created under the same name (a rollback) is "not applied yet" until the
    next evaluation writes its content. Returns how many twins changed.
    """
    changed = 0
    for table, key in (("modules", "device_id, module_id"), ("devices", "device_id")):
        for row in conn.execute(f"SELECT {key}, configurations FROM {table} WHERE configurations LIKE ?", (f'%"{name}"%',)).fetchall():
            marks = loads(row["configurations"], {})
            if name not in marks:
                continue
            marks.pop(name)
            if table == "modules":
                hub_store.set_module_configurations(conn, row["device_id"], row["module_id"], marks)
            else:
                conn.execute("UPDATE devices SET configurations=? WHERE device_id=?", (dumps(marks), row["device_id"]))
            changed += 1
    return changed


def evaluate(store: Store, now: float | None = None) -> dict[str, str]:
    """One evaluation of every due deployment against every IoT Edge device.

    Returns:
        device id -> the deployment newly written into its module twins (for logs and tests).
    """
    now = time.time() if now is None else now
    applied: dict[str, str] = {}
    pushes: list[tuple[str, str, dict[str, Any]]] = []
    with store.tx() as conn:
        deployments = [d for d in _deployments(conn, now) if d["due"]]
        for row in conn.execute("SELECT * FROM devices WHERE edge=1").fetchall():
            doc = device_document(row["device_id"], loads(row["tags"], {}), loads(row["desired"], {}),
                                  loads(row["reported"], {}), True, row["status"])
            matching = [d for d in deployments if d["predicate"](doc)]
            winner = max(matching, key=lambda d: (d["priority"], d["seq"])) if matching else None
            marks = {d["name"]: {"status": "Targeted"} for d in matching}
            if winner is not None:
                marks[winner["name"]] = {"status": "Applied"}
                if row["applied_source"] != winner["name"] or row["applied_seq"] != winner["seq"]:
                    for module_id, push in write_content(conn, row["device_id"], winner["modulesContent"]):
                        pushes.append((row["device_id"], module_id, push))
                    conn.execute("UPDATE devices SET applied_source=?, applied_seq=? WHERE device_id=?",
                                 (winner["name"], winner["seq"], row["device_id"]))
                    applied[row["device_id"]] = winner["name"]
            hub_store.ensure_edge_modules(conn, row["device_id"])
            agent = hub_store.module_row(conn, row["device_id"], "$edgeAgent")
            if loads(agent["configurations"], {}) != marks:
                hub_store.set_module_configurations(conn, row["device_id"], "$edgeAgent", marks)
            if dumps(loads(row["configurations"], {})) != dumps(marks):
                conn.execute("UPDATE devices SET configurations=? WHERE device_id=?", (dumps(marks), row["device_id"]))
    for device_id, module_id, push in pushes:
        hub_store.notify_desired(device_id, module_id, push)
    for device_id, name in applied.items():
        log.info("deployment %s applied to %s", name, device_id)
    return applied


class Evaluator:
    """The background thread that evaluates deployments on `timing` (one per service process)."""

    def __init__(self, store: Store, timing: DeploymentTiming):
        self.store = store
        self.timing = timing
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-deployments", daemon=True)
        self.last_run: float | None = None

    def start(self) -> Evaluator:
        self._thread.start()
        return self

    def poke(self) -> None:
        """A deployment changed: look at the schedule again now."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _next_due(self) -> float | None:
        with self.store.read() as conn:
            row = conn.execute("SELECT MIN(evaluate_after) AS t FROM deployments WHERE evaluate_after IS NOT NULL AND evaluate_after > ?",
                               (self.last_run or 0,)).fetchone()
        return row["t"] if row and row["t"] is not None else None

    def _run(self) -> None:
        next_cycle = time.time()
        while not self._stop.is_set():
            now = time.time()
            due = self._next_due()
            if now >= next_cycle or (due is not None and due <= now):
                try:
                    evaluate(self.store, now)
                except Exception:  # noqa: BLE001 - a bad row must not stop the hub's schedule; logged with traceback
                    log.exception("deployment evaluation failed")
                self.last_run = now
                if now >= next_cycle:
                    next_cycle = now + self.timing.interval_s
                continue
            wait_until = min(next_cycle, due) if due is not None else next_cycle
            self._wake.wait(timeout=max(0.01, min(1.0, wait_until - now)))
            self._wake.clear()


__all__ = ["DeploymentTiming", "Evaluator", "evaluate", "forget_configuration", "metrics_json", "write_content",
           "MAX_CONFIGURATIONS", "SYSTEM_METRICS"]
