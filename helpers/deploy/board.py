"""The rollout board: per device, what was asked (desired) against what runs (reported).

`board_rows(hub, device_ids, ...)` is the pure-data view: one row per device and expected
module with connection, desired/reported deployment version, last desired status, module
status, version, model (expected -> reported), restarts, host port, seconds since apply and a
verdict. `RolloutBoard` renders those rows in plain words (`plain_row`: "sent v3, applied", "accepted")
in an `ipywidgets.HTML` table; `refresh()` is the one
helper that redraws it (call it yourself, or pass `board.on_poll` to `wait_for_rollout`).
Headless, `refresh()` simply returns the rows.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from helpers.deploy.rollout import DeviceCheck, _normalise_expect, check_device, check_health, model_of
from helpers.widgets import agent_words, html_table

COLUMNS = ("device", "connected", "deployment", "desired", "reported", "last_status", "module", "status",
           "version", "model", "restarts", "port", "since_apply_s", "verdict")

# What the board shows a person: each data column under a header in plain words (the rows
# `board_rows` returns keep the short keys above, for code and tests).
HEADERS = {"device": "device", "connected": "online", "deployment": "deployment", "desired": "update",
           "reported": "", "last_status": "device's answer", "module": "module", "status": "module status",
           "version": "module version", "model": "model", "restarts": "restarts", "port": "port",
           "since_apply_s": "seconds since sent", "verdict": "result"}


def plain_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One `board_rows` row in words: `sent v3, applied` / `sent v3, device on v2`, `accepted`, `yes`."""
    out = {}
    for key, header in HEADERS.items():
        if not header:
            continue
        value = row.get(key)
        if key == "connected":
            value = "yes" if value else "no"
        elif key == "desired":
            sent, got = row.get("desired"), row.get("reported")
            value = "" if sent in (None, "") else (
                f"sent v{sent}, applied" if str(got) == str(sent) else
                f"sent v{sent}, " + (f"device on v{got}" if got not in (None, "") else "not applied yet"))
        elif key == "last_status":
            code, _, desc = str(value or "").partition(" ")
            value = agent_words(code or None, desc or None)
        elif key == "since_apply_s":
            value = "" if value is None else value
        out[header] = value
    return out


_VERDICT_STYLE = {"converged": "color:#080;font-weight:bold", "failed": "color:#c00;font-weight:bold",
                  "pending": "color:#a60"}


def board_rows(hub: Any, device_ids: Sequence[str], expect: Mapping[str, Any] | None = None,
               applied_at: Mapping[str, float] | None = None, health: bool = False,
               checks: Mapping[str, DeviceCheck] | None = None) -> list[dict[str, Any]]:
    """One row per device x module (the expected modules, else every reported one).

    Args:
        hub: the `Hub`.
        device_ids: devices to show.
        expect: module expectations (see `helpers.deploy.rollout`); they give the desired
            version and model columns and the verdict.
        applied_at: device -> epoch seconds of the apply (from `apply()`), for `since_apply_s`.
        health: include `/api/health` in the verdict.
        checks: recent `DeviceCheck`s (from `wait_for_rollout`'s `on_poll`) to show instead of
            polling the devices again.
    """
    norm = _normalise_expect(expect)
    rows: list[dict[str, Any]] = []
    now = time.time()
    for d in device_ids:
        if checks is not None and d in checks and checks[d].status is not None:
            check = checks[d]
            status = check.status
        else:
            status = hub.device_status(d)
            check = check_device(status, norm, health, check_health)
        names = list(norm) or list(status.modules) or ["-"]
        since = round(now - applied_at[d], 1) if applied_at and d in applied_at else None
        code = status.last_desired_status
        for name in names:
            ms = status.modules.get(name)
            spec = norm.get(name) if name in norm else {}
            want_version = (spec or {}).get("version")
            want_model = (spec or {}).get("model")
            got_model = model_of(ms) if ms is not None else None
            rows.append({
                "device": d,
                "connected": bool(status.connected),
                "deployment": status.deployment or "",
                "desired": status.desired_version or "",
                "reported": status.reported_version or "",
                "last_status": "" if code is None else f"{code} {status.last_desired_description}".strip(),
                "module": name,
                "status": ("absent" if ms is None else ms.runtime_status) + (" (should be gone)" if spec is None and ms is not None else ""),
                "version": (ms.version if ms is not None else "-") + (f" (want {want_version})" if want_version and ms is not None and str(ms.version) != str(want_version) else ""),
                "model": f"{got_model if got_model is not None else '-'}" + (f" / want {want_model}" if want_model is not None else ""),
                "restarts": ms.restart_count if ms is not None else "",
                "port": (ms.host_port or "") if ms is not None else "",
                "since_apply_s": since,
                "verdict": check.state if check.state != "pending" else f"pending: {check.reason}",
            })
    return rows


class RolloutBoard:
    """A live table of a rollout (ipywidgets HTML), refreshed by `refresh()`.

    Args:
        hub: the `Hub`.
        device_ids: devices to show.
        expect: module expectations (desired version/model columns and verdicts).
        applied_at: device -> epoch seconds of the apply (`apply()` returns it).
        health: include `/api/health` in the verdict.

    Example:
        >>> board = RolloutBoard(hub, devices, expect, applied_at=apply(hub, devices, manifest))
        >>> board                      # shows the table
        >>> wait_for_rollout(hub, devices, expect, on_poll=board.on_poll)
    """

    def __init__(self, hub: Any, device_ids: Sequence[str], expect: Mapping[str, Any] | None = None,
                 applied_at: Mapping[str, float] | None = None, health: bool = False):
        import ipywidgets as w

        self.hub = hub
        self.device_ids = list(device_ids)
        self.expect = dict(expect or {})
        self.applied_at = dict(applied_at or {})
        self.health = health
        self.rows: list[dict[str, Any]] = []
        self.widget = w.HTML()

    def set_applied(self, applied_at: Mapping[str, float]) -> None:
        """Record apply times (from `apply()`) for the `since_apply_s` column."""
        self.applied_at.update(applied_at)

    def render(self, rows: list[dict[str, Any]]) -> str:
        """HTML of `rows` (verdicts coloured)."""
        styles = [{"result": _VERDICT_STYLE.get(str(r["verdict"]).split(":")[0], "")} for r in rows]
        return html_table([plain_row(r) for r in rows], styles=styles,
                          caption="rollout: what each device was sent, and what it reported running")

    def refresh(self, checks: Mapping[str, DeviceCheck] | None = None) -> list[dict[str, Any]]:
        """Poll the devices (or use `checks`), redraw the table, and return the rows."""
        self.rows = board_rows(self.hub, self.device_ids, self.expect, self.applied_at, self.health, checks)
        self.widget.value = self.render(self.rows)
        return self.rows

    def on_poll(self, checks: Mapping[str, DeviceCheck]) -> None:
        """For `wait_for_rollout(on_poll=board.on_poll)`: redraw from the checks just made.

        `rollout()` applies right before it starts polling, so without `set_applied` the first
        poll of a device stands for its apply time (within one poll interval).
        """
        now = time.time()
        for d in checks:
            self.applied_at.setdefault(d, now)
        self.refresh(checks)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        if not self.rows:
            self.refresh()
        display(self.widget)
