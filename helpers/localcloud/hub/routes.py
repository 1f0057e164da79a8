"""The IoT Hub service REST API (api-version 2021-04-12) as the official `azure-iot-hub` SDK calls it.

Served over HTTPS on the workspace's hub address (`common/tls.py`) and, for the simulated devices'
HTTP agent, on the plain local listener. Shapes, status codes and error bodies are Azure's, so
`IoTHubRegistryManager` / `IoTHubConfigurationManager` work unmodified and raise their own
`HttpOperationError` on errors. One router per resource:

- `devices`: device identities (SAS keys, self-signed and CA-signed X.509, IoT Edge capability, etags);
- `modules`: module identities (the service's, and an IoT Edge device's own);
- `twins`: device and module twins (tags, desired, reported, `$version`s, etags, If-Match);
- `configurations`: `applyConfigurationContent` and at-scale IoT Edge deployments with metrics
  (applied by `deploy` on its evaluation cycle), `testQueries`;
- `query`: `POST /devices/query` in the query language of `condition.py`, with paging;
- `statistics`: `/statistics/devices`, `/statistics/service`, the stand-in's `/api/hub/stats`.

Every route counts against the throttle (off by default: 429 with `Retry-After`). Direct methods
reach devices over MQTT and are served by `helpers.localcloud.mqtt.api`.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends

from helpers.localcloud.hub import configurations, devices, modules, query, statistics, twins
from helpers.localcloud.hub.runtime import throttle

API_VERSION = "2021-04-12"

router = APIRouter(tags=["hub"], dependencies=[Depends(throttle)])
for _resource in (devices, query, modules, twins, configurations, statistics):
    router.include_router(_resource.router)
