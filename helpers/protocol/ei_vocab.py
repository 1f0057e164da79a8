"""Edge Impulse's vocabulary: the names the Studio API uses and what each means here.

Shared by the Edge Impulse client (`helpers.studio.edgeimpulse`) and the local studio's stand-in
of the Studio API (`helpers.localcloud.studio`), so both translate the same way.
"""
from __future__ import annotations

# Edge Impulse's object-detection models and the helpers.train architecture trained for each.
EI_MODEL_ARCH = {"fomo_mobilenet_v2_a35": "fomo-box", "fomo_mobilenet_v2_a01": "fomo-box",
                 "object_ssd_mobilenet_v2_fpnlite_320x320": "ssdlite320"}
ARCH_EI_MODEL = {"fomo-box": "fomo_mobilenet_v2_a35", "ssdlite320": "object_ssd_mobilenet_v2_fpnlite_320x320"}
# helpers' colour names -> the image DSP block's `channels` values.
COLOR_EI = {"RGB": "RGB", "grayscale": "Grayscale"}
EI_COLOR = {v: k for k, v in COLOR_EI.items()}
IMAGE_RESIZE_MODES = ("squash", "fit-short", "fit-long", "crop")
# DeploymentApi.download_build types that give a Linux `.eim` executable.
EIM_TYPES = ("runner-linux-x86_64", "runner-linux-aarch64", "runner-linux-armv7")
# customParameters of the learn block (Edge Impulse has no field for these): the helpers.train
# architecture, the training seed and a time budget in seconds ("" clears it).
CUSTOM_PARAMETERS = ("arch", "seed", "time_budget_s")
# API key roles as ProjectsApi.get_current_api_key_info names them.
ROLE_ADMIN = "admin"
ROLE_DEVICE = "ingestion_deployment"
# The ingestion API's labels file (Edge Impulse's bounding-box format).
BOXES_FILE = "bounding_boxes.labels"
BOXES_FILE_TYPE = "bounding-box-labels"

__all__ = ["ARCH_EI_MODEL", "BOXES_FILE", "BOXES_FILE_TYPE", "COLOR_EI", "CUSTOM_PARAMETERS", "EIM_TYPES", "EI_COLOR",
           "EI_MODEL_ARCH", "IMAGE_RESIZE_MODES", "ROLE_ADMIN", "ROLE_DEVICE"]
