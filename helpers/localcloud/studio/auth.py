"""Who calls the studio: the `x-api-key` of every studio request, checked against the key's role."""
from __future__ import annotations

from fastapi import Request

from helpers.localcloud.common.auth import Principal
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio.keys import endpoint_access, key_role
from helpers.protocol.ei_vocab import ROLE_ADMIN, ROLE_DEVICE


def require_studio(request: Request) -> Principal:
    """Dependency: a studio call with a valid `x-api-key`, allowed for the key's role.

    The management key may call everything. A device key (`helpers.localcloud.studio.keys`) may
    call only the endpoints marked with `device_access` (403 elsewhere), and a `model` endpoint
    only through a `version` path parameter naming the version its key names (403 for a download
    that names no version, such as the Studio API's latest trained model).
    """
    key = request.headers.get("x-api-key")
    if not key:
        raise ApiError(401, "missing x-api-key header: send the studio API key (credentials.json studio_api_key)", "x-api-key")
    role = key_role(key, ctx_of(request).studio_api_key)
    if role is None:
        raise ApiError(401, "wrong x-api-key: use the studio API key from the workspace's credentials.json", "x-api-key")
    if role.role == "management":
        return Principal("studio", role="management")
    access = endpoint_access(request.scope.get("endpoint"))
    if access is None or (access == "model" and role.model_version is None):
        raise ApiError(403, f"a device key may only upload samples{' and download its model' if role.model_version else ''}; "
                            f"{request.method} {request.url.path} needs the studio's management API key", "x-api-key")
    version = request.path_params.get("version")
    if access == "model" and version is None:
        # a device key is bound to one model version: a download that names none is not for it
        raise ApiError(403, f"this device key may download model version {role.model_version} only, and "
                            f"{request.method} {request.url.path} names no version; download it from "
                            f"/api/models/{role.model_version}/file, or call this with the management API key", "x-api-key")
    if access == "model" and str(version) != str(role.model_version):
        raise ApiError(403, f"this device key may download model version {role.model_version} only, not {version}; "
                            "deploy the runner with the key for the version it runs (studio.device_key(version))", "x-api-key")
    return Principal("studio", role="device", model_version=role.model_version)


def ei_role(request: Request) -> str:
    """Edge Impulse's role name for the calling key: `admin`, or `ingestion_deployment` for a device key."""
    principal = require_studio(request)
    role = principal.role or "management"
    return ROLE_DEVICE if role == "device" else ROLE_ADMIN


def require_management(request: Request) -> None:
    """403 for a key that may only ingest and download its model (Edge Impulse's `ingestion_deployment`)."""
    if ei_role(request) != ROLE_ADMIN:
        raise ApiError(403, "this API key may only upload data and download the deployed model; "
                            "use the project's management API key for this call", "x-api-key")
