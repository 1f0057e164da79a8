"""Deploy to the fleet: manifests, rollouts with automatic rollback, the evaluation gate, drift checks.

Typical use (notebook 05/06):
    >>> manifest = runner_manifest(model_version, image, studio)
    >>> report = rollout(hub, devices, manifest, absent=["collector"], workspace=ws)
    >>> report.ok, report.rolled_back
    >>> evaluation_gate(studio, candidate=2)          # raises GateRefused on a regression
"""
from helpers.deploy.board import RolloutBoard, board_rows
from helpers.deploy.drift import (
    ConfusionRate,
    banana_called_apple_rate,
    confusion_from_telemetry,
    confusion_rate,
    poll_results,
)
from helpers.deploy.gate import GateRefused, GateResult, GateRow, compare_reports, evaluation_gate, heldout_items
from helpers.deploy.rollback import LastKnownGood, RolloutReport, rollback, rollout, rollout_deployment
from helpers.deploy.rollout import (
    DeviceOutcome,
    RolloutResult,
    apply,
    check_device,
    check_health,
    deploy_at_scale,
    expect_from_manifest,
    remove_deployments,
    runner_manifest,
    wait_for_rollout,
)

__all__ = [
    "ConfusionRate",
    "DeviceOutcome",
    "GateRefused",
    "GateResult",
    "GateRow",
    "LastKnownGood",
    "RolloutBoard",
    "RolloutReport",
    "RolloutResult",
    "apply",
    "remove_deployments",
    "banana_called_apple_rate",
    "board_rows",
    "check_device",
    "check_health",
    "compare_reports",
    "confusion_from_telemetry",
    "confusion_rate",
    "deploy_at_scale",
    "evaluation_gate",
    "expect_from_manifest",
    "heldout_items",
    "poll_results",
    "rollback",
    "rollout",
    "rollout_deployment",
    "runner_manifest",
    "wait_for_rollout",
]
