"""The studio's endpoints in one router, in matching order: ingestion, samples, registry, device keys, the Studio API."""
from __future__ import annotations

from fastapi import APIRouter

from helpers.localcloud.studio import devicekeys, ingestion, registry, samples
from helpers.localcloud.studio.v1 import deployment, impulse, jobs, pretrained, projects, raw_data

router = APIRouter()
for _extension in (ingestion, samples, registry, devicekeys):
    router.include_router(_extension.router)
# Edge Impulse's Studio API; `projects` first: its `/projects` must match before `/{projectId}`
for _area in (projects, raw_data, impulse, jobs, deployment, pretrained):
    router.include_router(_area.router, prefix="/v1/api")
