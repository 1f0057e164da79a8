"""Helpers of the notebook tests: secret patterns and leftover-process checks."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"  # what a person opens: workshop parameters, no outputs
REFERENCE = ROOT / "tests" / "notebooks" / "reference"  # executed smoke runs nbval compares (make notebooks)
SANITIZE = REFERENCE / "sanitize.cfg"

# Unmasked secret shapes: a SAS key value, a SAS signature, an Edge Impulse or local studio key.
SECRET_PATTERNS = [
    re.compile(r"SharedAccessKey=(?!\*{8})[A-Za-z0-9+/]{16,}={0,2}"),
    re.compile(r"sig=(?!\*{8})[A-Za-z0-9%+/=]{16,}"),
    re.compile(r"\bei_[0-9a-fA-F]{32,}\b"),
]


def workspace_secrets(workspace: Path) -> list[str]:
    """The actual secret values a run's local cloud made (credentials.json), for exact-match scans."""
    creds = workspace / "localcloud" / "credentials.json"
    if not creds.exists():
        return []
    values = []
    for v in json.loads(creds.read_text()).values():
        if isinstance(v, str) and len(v) >= 16:
            values.append(v)
            m = re.search(r"SharedAccessKey=([^;]+)", v)
            if m:
                values.append(m.group(1))
    return values


def scan_for_secrets(paths: list[Path], exact: list[str] = ()) -> list[str]:
    """`path: what` for every secret-looking string or exact secret value found in `paths`."""
    hits = []
    for p in paths:
        text = p.read_text(errors="replace")
        for pat in SECRET_PATTERNS:
            for m in pat.finditer(text):
                hits.append(f"{p.name}: {m.group(0)[:24]}...")
        for value in exact:
            if value in text:
                hits.append(f"{p.name}: contains a secret value of the run")
    return hits


def leftovers(workspace: Path) -> list[str]:
    """What still runs in a workspace: the local cloud and simulated device agents."""
    from helpers import localcloud
    from helpers.device import fleet

    left = [f"device {d.device_id} (pid {d.pid})" for d in fleet.list_devices(workspace) if d.alive]
    if localcloud.status(workspace).get("running"):
        left.append("local cloud")
    return left
