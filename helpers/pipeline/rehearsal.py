"""The Edge Impulse path rehearsed against the workspace's own stand-in (`--studio edgeimpulse-rehearsal`).

The notebooks then see exactly the settings of a real Edge Impulse project (`EI_API_KEY`,
`EI_PROJECT_ID`, `EI_DEVICE_API_KEY`, `EI_STUDIO_URL`, `EI_INGESTION_URL`) and drive the studio as
`get_studio("edgeimpulse")`: uploads through the ingestion API, training through the job API, the
model fetched as an `.eim` build. What `make notebooks` records and the suite's smoke run replays.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from helpers.endpoints import service_url
from helpers.localcloud import service
from helpers.studio.edgeimpulse import EdgeImpulseStudio

REHEARSAL = "edgeimpulse-rehearsal"


def edge_impulse_rehearsal_env(workspace: Path) -> dict[str, str]:
    """Start the workspace's local cloud and return the environment of a real project pointed at it."""
    service.ensure_running(workspace)
    local = EdgeImpulseStudio(workspace)
    url = service_url(workspace, None)
    return {"EI_API_KEY": local.api_key.get_secret_value(), "EI_PROJECT_ID": str(local.project_id),
            "EI_DEVICE_API_KEY": local.device_key().get_secret_value(), "EI_STUDIO_URL": url, "EI_INGESTION_URL": url,
            # the stand-in's .eim starts with `/usr/bin/env python3`: this environment's interpreter first
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


__all__ = ["REHEARSAL", "edge_impulse_rehearsal_env"]
