"""Automatic rollback: keep the last-known-good manifest, re-apply it when a rollout goes wrong.

`LastKnownGood` persists, per device (key = device id) or at-scale deployment (key =
`deployment:<name>`), the last manifest that converged, in
`WORKSPACE/deploy/last_known_good.json`. Secret values are never written there: each `Secret`
in a module's env is stored as `********` with its variable name, and put back from the new
manifest (or `secrets=`) when the old manifest is re-applied.

`rollout(...)` applies a manifest, waits (module states and `/api/health`), records the devices
that converged as good, and re-applies the last good manifest on each device that failed, went
into backoff, or stayed unhealthy until the rollout window closed. It reports which devices
rolled back and why. `rollout_deployment(...)` does the same for an at-scale deployment.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.config import Secret
from helpers.deploy.rollout import (
    RolloutResult,
    apply,
    check_health,
    deploy_at_scale,
    expect_from_manifest,
    manifest_modules,
    utc_now,
    wait_for_rollout,
)
from helpers.errors import RolloutError
from helpers.protocol import manifest as mf

STORE_NAME = "last_known_good.json"


def _workspace(workspace: str | Path | None) -> Path:
    if workspace is not None:
        return Path(workspace)
    from helpers.config import load_settings

    return load_settings().workspace


def manifest_secrets(manifest: Mapping[str, Any]) -> dict[str, Secret]:
    """The `Secret` values in a manifest's module env sections, by variable name."""
    out: dict[str, Secret] = {}
    for module in manifest_modules(manifest).values():
        for key, entry in (module.get("env") or {}).items():
            value = entry.get("value") if isinstance(entry, Mapping) else None
            if isinstance(value, Secret):
                out[key] = value
    return out


def _strip_secrets(manifest: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """A JSON-able copy with every env `Secret` masked, and module -> secret variable names."""
    names: dict[str, list[str]] = {}
    for mod_name, module in manifest_modules(manifest).items():
        for key, entry in (module.get("env") or {}).items():
            if isinstance(entry, Mapping) and isinstance(entry.get("value"), Secret):
                names.setdefault(mod_name, []).append(key)
    return mf.redact_manifest(manifest), names


@dataclass
class GoodEntry:
    """One remembered manifest (secrets masked) and what converged with it."""

    key: str
    manifest: dict[str, Any]
    secret_env: dict[str, list[str]]
    expect: dict[str, Any] | None
    recorded_at: str
    meta: dict[str, Any] = field(default_factory=dict)

    def restore(self, secrets: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest with its secret variables set from `secrets`.

        A value may be a callable such as `studio.device_key`: each module then gets
        `value(model_version)` for the `MODEL_VERSION` it runs (None for a module without one),
        so a runner rolled back to an older model gets the device key for that model.

        Raises:
            RolloutError: a needed secret is not in `secrets`.
        """
        manifest = json.loads(json.dumps(self.manifest))
        needed = sorted({n for names in self.secret_env.values() for n in names})
        missing = [n for n in needed if n not in secrets]
        if missing:
            raise RolloutError(
                f"the last-known-good manifest of {self.key} needs secret(s) {missing} to be re-applied: "
                "pass secrets={'EI_API_KEY': studio.device_key} (they are never stored on disk)"
            )
        for module, names in self.secret_env.items():
            spec = manifest_modules(manifest).get(module) or {}
            version = mf.module_env(spec).get(mf.ENV_MODEL_VERSION, "").strip()
            values = {n: secrets[n](int(version) if version.isdigit() else None) if callable(secrets[n]) else secrets[n]
                      for n in names}
            manifest = mf.with_secret_env(manifest, values, modules=[module])
        return manifest


class LastKnownGood:
    """The last manifest that converged, per device or deployment, persisted as JSON.

    Args:
        workspace: the workspace folder (default: the configured one); the file is
            `WORKSPACE/deploy/last_known_good.json`.
    """

    def __init__(self, workspace: str | Path | None = None):
        self.path = _workspace(workspace) / "deploy" / STORE_NAME

    def _load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise RolloutError(f"{self.path} is not valid JSON ({e.msg}); delete it to start a new history") from None
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def record(self, key: str, manifest: Mapping[str, Any], expect: Mapping[str, Any] | None = None, **meta: Any) -> GoodEntry:
        """Remember `manifest` as the last good one of `key` (a device id or `deployment:<name>`)."""
        clean, names = _strip_secrets(manifest)
        entry = GoodEntry(key, clean, names, dict(expect) if expect is not None else None, utc_now(), dict(meta))
        data = self._load()
        data[key] = {"manifest": entry.manifest, "secret_env": entry.secret_env, "expect": entry.expect,
                     "recorded_at": entry.recorded_at, "meta": entry.meta}
        self._save(data)
        return entry

    def get(self, key: str) -> GoodEntry | None:
        """The entry of `key`, or None when nothing converged there yet."""
        raw = self._load().get(key)
        if raw is None:
            return None
        return GoodEntry(key, raw["manifest"], raw.get("secret_env") or {}, raw.get("expect"), raw.get("recorded_at", ""),
                         raw.get("meta") or {})

    def keys(self) -> list[str]:
        return sorted(self._load())

    def forget(self, key: str) -> None:
        """Drop `key`'s entry."""
        data = self._load()
        if data.pop(key, None) is not None:
            self._save(data)


@dataclass
class RolloutReport:
    """What `rollout` / `rollout_deployment` did.

    Attributes:
        result: the outcome of the new manifest per device.
        rolled_back: device (or deployment key) -> why it was rolled back.
        not_rolled_back: device -> why it failed but could not be rolled back (no good manifest).
        rollback_result: the outcome of re-applying the good manifests (None when nothing rolled back).
        recorded: devices whose new manifest was recorded as last-known-good.
    """

    result: RolloutResult
    rolled_back: dict[str, str] = field(default_factory=dict)
    not_rolled_back: dict[str, str] = field(default_factory=dict)
    rollback_result: RolloutResult | None = None
    recorded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every device runs the new manifest."""
        return self.result.ok

    def table(self) -> list[dict[str, Any]]:
        """One row per device: outcome, seconds, reason, rolled back, rollback outcome."""
        rows = []
        for row in self.result.table():
            d = row["device"]
            rb = self.rollback_result.outcomes.get(d) if self.rollback_result else None
            rows.append({**row, "rolled_back": d in self.rolled_back,
                         "rollback": rb.outcome if rb else ("impossible: " + self.not_rolled_back[d] if d in self.not_rolled_back else "")})
        return rows

    def summary(self) -> str:
        lines = [self.result.summary()]
        for d, why in self.rolled_back.items():
            rb = self.rollback_result.outcomes.get(d) if self.rollback_result else None
            lines.append(f"rolled back {d}: {why}" + (f" -> previous manifest {rb.outcome}" if rb else ""))
        for d, why in self.not_rolled_back.items():
            lines.append(f"could not roll back {d}: {why}")
        return "\n".join(lines)


def _secrets_for(manifest: Mapping[str, Any], secrets: Mapping[str, Secret | str] | None) -> dict[str, Secret | str]:
    out: dict[str, Secret | str] = dict(manifest_secrets(manifest))
    out.update(secrets or {})
    return out


def rollback(hub: Any, device_ids: Sequence[str], store: LastKnownGood, *, secrets: Mapping[str, Any] | None = None,
             timeout: float = 120.0, wait: bool = True, **wait_options: Any) -> tuple[dict[str, str], RolloutResult | None]:
    """Re-apply each device's last-known-good manifest now.

    Returns:
        (device -> reason it could not be rolled back, the rollback's RolloutResult or None
        when `wait` is False or nothing was re-applied).
    """
    impossible: dict[str, str] = {}
    expect_all: dict[str, Any] = {}
    done: list[str] = []
    for d in device_ids:
        entry = store.get(d)
        if entry is None:
            impossible[d] = "no last-known-good manifest recorded for this device: fix the deployment and redeploy"
            continue
        apply(hub, [d], entry.restore(secrets or {}))
        done.append(d)
        if entry.expect:
            expect_all = entry.expect  # same shape per device in practice; the last one wins
    if not wait or not done:
        return impossible, None
    return impossible, wait_for_rollout(hub, done, expect_all or None, timeout, **wait_options)


def rollout(
    hub: Any,
    device_ids: Sequence[str],
    manifest: Mapping[str, Any],
    *,
    expect: Mapping[str, Any] | None = None,
    absent: Iterable[str] = (),
    store: LastKnownGood | None = None,
    workspace: str | Path | None = None,
    secrets: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
    auto_rollback: bool = True,
    rollback_timeout: float | None = None,
    **wait_options: Any,
) -> RolloutReport:
    """Apply `manifest` to devices, wait, keep what converged, roll back what did not.

    Args:
        hub: the `Hub`.
        device_ids: devices to deploy to.
        manifest: the new manifest.
        expect: what converged means (default: `expect_from_manifest(manifest, absent)`).
        absent: modules that must be gone afterwards (e.g. `["collector"]`).
        store: where last-known-good manifests live (default: in `workspace`).
        workspace: workspace folder for the default store.
        secrets: secret env values for re-applied manifests (default: those in `manifest`);
            `{"EI_API_KEY": studio.device_key}` gives a rolled-back runner the device key for the
            model version it goes back to (the new manifest's key fetches only the new version).
        timeout: the rollout window in seconds.
        auto_rollback: re-apply the last good manifest on devices that failed or timed out.
        rollback_timeout: window for the rollback to converge (default: `timeout`).
        **wait_options: passed to `wait_for_rollout` (`poll_s`, `stable_s`, `health`, `on_poll`).

    Returns:
        A `RolloutReport` (check `.ok`, `.rolled_back`).
    """
    store = store or LastKnownGood(workspace)
    expect = dict(expect) if expect is not None else expect_from_manifest(manifest, absent)
    apply(hub, device_ids, manifest)
    result = wait_for_rollout(hub, device_ids, expect, timeout, **wait_options)
    report = RolloutReport(result)
    for d in result.converged:
        store.record(d, manifest, expect)
        report.recorded.append(d)
    bad = [d for d in device_ids if d not in result.converged]
    if not bad or not auto_rollback:
        return report
    candidates = []
    for d in bad:
        outcome = result.outcomes[d]
        why = f"{outcome.outcome}: {outcome.reason}"
        if store.get(d) is None:
            report.not_rolled_back[d] = why + " (no last-known-good manifest recorded)"
        else:
            report.rolled_back[d] = why
            candidates.append(d)
    if candidates:
        _, report.rollback_result = rollback(
            hub, candidates, store, secrets=_secrets_for(manifest, secrets),
            timeout=rollback_timeout if rollback_timeout is not None else timeout, **wait_options,
        )
    return report


def rollout_deployment(
    hub: Any,
    name: str,
    manifest: Mapping[str, Any],
    target_condition: str,
    device_ids: Sequence[str],
    *,
    priority: int = 10,
    expect: Mapping[str, Any] | None = None,
    absent: Iterable[str] = (),
    store: LastKnownGood | None = None,
    workspace: str | Path | None = None,
    secrets: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
    auto_rollback: bool = True,
    **wait_options: Any,
) -> RolloutReport:
    """`rollout` for an at-scale deployment: one manifest for every device matching the condition.

    The last good content is kept under `deployment:<name>`; when any watched device fails,
    the deployment is re-created with that content (Azure deployments are immutable).
    """
    key = f"deployment:{name}"
    store = store or LastKnownGood(workspace)
    expect = dict(expect) if expect is not None else expect_from_manifest(manifest, absent)
    deploy_at_scale(hub, name, manifest, target_condition, priority)
    result = wait_for_rollout(hub, device_ids, expect, timeout, deployment=name, **wait_options)
    report = RolloutReport(result)
    if result.ok:
        store.record(key, manifest, expect, target_condition=target_condition, priority=priority)
        report.recorded = list(device_ids)
        return report
    reasons = "; ".join(f"{d} {o.outcome}: {o.reason}" for d, o in result.outcomes.items() if o.outcome != "converged")
    entry = store.get(key)
    if not auto_rollback:
        return report
    if entry is None:
        report.not_rolled_back[key] = reasons + " (no last-known-good content recorded for this deployment)"
        return report
    report.rolled_back[key] = reasons
    good = entry.restore(_secrets_for(manifest, secrets))
    deploy_at_scale(hub, name, good, entry.meta.get("target_condition", target_condition),
                    int(entry.meta.get("priority", priority)))
    report.rollback_result = wait_for_rollout(hub, device_ids, entry.expect, timeout, deployment=name, **wait_options)
    return report


__all__ = [
    "GoodEntry",
    "LastKnownGood",
    "RolloutReport",
    "check_health",
    "manifest_secrets",
    "rollback",
    "rollout",
    "rollout_deployment",
]
