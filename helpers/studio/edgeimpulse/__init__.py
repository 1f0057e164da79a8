"""`EdgeImpulseStudio`: the one `Studio`, on Edge Impulse's official clients (a package: one module per job).

    studio = get_studio()                 # the workspace's local studio (the stand-in)
    studio = get_studio("edgeimpulse")    # a real project: EI_API_KEY (+ EI_PROJECT_ID)

Uploads go through the `edgeimpulse` SDK (`edgeimpulse.data.upload_samples`, Edge Impulse's
ingestion service); everything else through the generated `edgeimpulse-api` client
(`ProjectsApi`, `RawDataApi`, `ImpulseApi`, `DSPApi`, `JobsApi`, `LearnApi`, `DeploymentApi`).
Pointed at the local studio (`target="local"`) the endpoints are the workspace's local cloud
(`{url}/v1` and `{url}`) and the key its studio API key; pointed at Edge Impulse they are
`EI_STUDIO_URL/v1` and `EI_INGESTION_URL` with `EI_API_KEY`. The code is the same.

Edge Impulse answers many failures with HTTP 200 and `{"success": false, "error": "..."}`; the
generated client raises them as a bare `Exception`, and this class raises them once as
`EdgeImpulseError` (a `ServiceError`; `NotFound` for an unknown sample or job) with Edge
Impulse's message. HTTP errors become the `helpers.errors` class of their status.

Two things have no Edge Impulse call and stay documented extensions of the workspace's local
cloud, whichever project the samples live in: the model registry (ONNX + model card, stages
candidate/production/retired: `register_model`, `models`, `get_model`, `download_model`,
`set_model_stage`) and dataset snapshots (`snapshot`, `get_snapshot`, `snapshots`; on a real
project the snapshot is computed from the project's samples here and kept in the workspace).
"""
from __future__ import annotations

from helpers.studio.edgeimpulse.connection import EdgeImpulseError, EdgeImpulseNotFound, TrainingFailed
from helpers.studio.edgeimpulse.studio import EdgeImpulseStudio, edge_impulse_studio, local_studio
from helpers.studio.edgeimpulse.training import training_timeout_s

__all__ = ["EdgeImpulseStudio", "EdgeImpulseError", "EdgeImpulseNotFound", "TrainingFailed", "local_studio", "edge_impulse_studio",
           "training_timeout_s"]
