"""edgeAgent's built-in direct methods: `ping`, `RestartModule`, `GetModuleLogs`."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from helpers.config import mask
from helpers.device.agent.logs import read_module_log
from helpers.device.agent.state import ModuleState
from helpers.device.hub_link import sdk_errors
from helpers.device.runtime import LOG_NAME

log = logging.getLogger("helpers.device.agent")


def handle_method(name: str, payload: Any, modules: dict[str, ModuleState], restart: Callable[[ModuleState], None],
                  modules_dir: Path) -> tuple[int, Any]:
    """Answer one direct method call: (status, payload).

    Args:
        name / payload: the call.
        modules: the device's modules by name.
        restart: stops a module and starts it again (RestartModule).
        modules_dir: the folder of the modules' folders (each has its log).
    """
    if name == "ping":
        return 200, None
    if name == "RestartModule":
        module_id = (payload or {}).get("id") if isinstance(payload, dict) else None
        m = modules.get(str(module_id)) if module_id else None
        if m is None:
            return 400, {"message": f"RestartModule: no module {module_id!r} in this deployment "
                                    f"(modules: {sorted(modules)}); send {{\"schemaVersion\": \"1.0\", \"id\": NAME}}"}
        restart(m)
        return 200, None
    if name == "GetModuleLogs":
        return 200, module_logs(payload if isinstance(payload, dict) else {}, modules, modules_dir)
    return 501, {"message": f"edgeAgent has no direct method {name!r} (ping, RestartModule, GetModuleLogs)"}


def module_logs(request: dict[str, Any], names: Iterable[str], modules_dir: Path) -> list[dict[str, Any]]:
    """GetModuleLogs: `{"items": [{"id": REGEX, "filter": {"tail", "since", "until", "regex"}}]}`."""
    items = request.get("items") or [{"id": ".*"}]
    if not isinstance(items, list):
        raise ValueError("items must be a list of {\"id\": module-id regex, \"filter\": {...}}")
    out: list[dict[str, Any]] = []
    for item in items:
        pattern = re.compile(str(item.get("id", ".*")))
        filt = item.get("filter") or {}
        for name in sorted(names):
            if pattern.fullmatch(name):
                out.append({"id": name, "payload": read_module_log(modules_dir / name / LOG_NAME, filt)})
    return out


def answer_methods(link: Any, handle: Callable[[str, Any], tuple[int, Any]]) -> None:
    """Answer every direct method call the link queued; a bad request gets 400, naming what is wrong."""
    while not link.methods.empty():
        call = link.methods.get_nowait()
        try:
            status, payload = handle(call.name, call.payload)
        except (ValueError, TypeError, KeyError) as exc:
            status, payload = 400, {"message": f"bad request for {call.name}: {exc}"}
        log.info("direct method %s answered %d", call.name, status)
        try:
            call.answer(status, payload)
        except sdk_errors() as exc:
            log.warning("could not answer direct method %s (%s)", call.name, mask(str(exc)))


__all__ = ["answer_methods", "handle_method", "module_logs"]
