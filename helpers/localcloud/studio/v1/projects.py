"""Projects (ProjectsApi): the workspace's one project, its information and metadata, the calling key's role."""
from __future__ import annotations

from typing import Any

from fastapi import Request

from helpers.localcloud.common.clock import now_iso
from helpers.localcloud.common.context import ctx_of
from helpers.localcloud.common.errors import ApiError
from helpers.localcloud.studio import store
from helpers.localcloud.studio.auth import ei_role, require_management
from helpers.localcloud.studio.checks import normalise_label
from helpers.localcloud.studio.keys import device_access
from helpers.localcloud.studio.routing import studio_router
from helpers.localcloud.studio.schemas import UpdateProjectRequest
from helpers.localcloud.studio.v1.base import (
    check_project,
    empty_summary,
    impulse_of,
    ok,
    project_id,
    project_json,
    summary,
    trained_job,
)

router = studio_router(tags=["studio (Edge Impulse Studio API)"])


@router.get("/projects", summary="The projects this API key can access (ProjectsApi.list_projects)")
def list_projects(request: Request) -> dict[str, Any]:
    return ok(projects=[project_json(ctx_of(request))])


@router.get("/projects/api-key-info", summary="Role and project of the calling key (ProjectsApi.get_current_api_key_info)")
@device_access("info")
def api_key_info(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    return ok(apiKeyId=1, projectId=project_id(ctx), role=ei_role(request))


@router.get("/{pid}", summary="Project information (ProjectsApi.get_project_info)")
def project_info(pid: int, request: Request) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    with ctx.store.read() as conn:
        total = summary(conn)
        training = summary(conn, "WHERE category='training'")
        testing = summary(conn, "WHERE category='testing'")
    impulse = impulse_of(ctx)
    now = now_iso()
    return ok(
        project=project_json(ctx), developmentKeys={}, devices=[],
        impulse={"created": impulse is not None, "configured": impulse is not None, "complete": trained_job(ctx) is not None},
        dataSummary=total, dataSummaryPerCategory={"training": training, "testing": testing, "validation": empty_summary(),
                                                   "postProcessing": empty_summary()},
        computeTime={"periodStartDate": now, "periodEndDate": now, "timeUsedMs": 0, "timeLeftMs": 0},
        acquisitionSettings={"intervalMs": 0.0, "lengthMs": 0, "segmentShift": False, "defaultPageSize": 50, "viewType": "grid",
                             "gridColumnCount": 6, "gridColumnCountDetailed": 3, "showExactSampleLength": False,
                             "inlineEditBoundingBoxes": True},
        collaborators=[], deploySettings={"eonCompiler": False, "sensor": "camera", "arduinoLibraryName": "",
                                          "tinkergenLibraryName": "", "particleLibraryName": ""},
        experiments=[], latencyDevices=[], urls={}, showCreateFirstImpulse=impulse is None,
        showGettingStartedWizard={"showWizard": False, "step": 0},
        performance={"gpu": False, "jobLimitM": 60, "dspFileSizeMb": 0, "enterprisePerformance": False, "trainJobRamMb": 0},
        trainJobNotificationUids=[], dspJobNotificationUids=[], modelTestingJobNotificationUids=[],
        exportJobNotificationUids=[], hasNewTrainingData=False, studioUrl=str(request.base_url).rstrip("/"),
        inPretrainedModelFlow=False, showSensorDataInAcquisitionGraph=False, notifications=[],
        defaultImpulseId=(impulse or {}).get("id"),
    )


@router.post("/{pid}", summary="Update the project's metadata (ProjectsApi.update_project); metadata.labels is the "
             "label set the labeling tools offer")
def update_project(pid: int, request: Request, body: UpdateProjectRequest) -> dict[str, Any]:
    ctx = check_project(request, pid)
    require_management(request)
    meta = body.metadata
    if meta is None:
        return ok()
    labels = meta.get("labels", [])
    if not isinstance(labels, list):
        raise ApiError(400, "metadata.labels must be a list of label names", "metadata.labels")
    names = {normalise_label(x, f"metadata.labels[{i}]") for i, x in enumerate(labels)}
    with ctx.store.tx() as conn:
        store.add_labels(conn, names)
    store.set_meta(ctx, "studio_project_metadata", {k: v for k, v in meta.items() if k != "labels"})
    return ok()

