"""The names of the environment variables a module reads, as constants.

Three groups: what IoT Edge's agent gives every module (`IOTEDGE_*`, and the IoT Edge
simulator's pair the device SDK's `create_from_edge_environment()` reads), what the manifest
builders write into a module's `env` section, and what the local agent's runtime adds (the
module's work folder, port, scene file). Each constant's value is the variable's name.
"""
from __future__ import annotations

# --------------------------------------------------------------------------- IoT Edge

#: The device's id in its hub.
IOTEDGE_DEVICEID = "IOTEDGE_DEVICEID"
#: The module's name in the deployment.
IOTEDGE_MODULEID = "IOTEDGE_MODULEID"
#: Changes each time the module identity is re-created (a module's spool keys on it).
IOTEDGE_MODULEGENERATIONID = "IOTEDGE_MODULEGENERATIONID"
#: The hub's host name, e.g. `myhub.azure-devices.net`.
IOTEDGE_IOTHUBHOSTNAME = "IOTEDGE_IOTHUBHOSTNAME"
#: The edgeHub the module connects through.
IOTEDGE_GATEWAYHOSTNAME = "IOTEDGE_GATEWAYHOSTNAME"
#: The IoT Edge security daemon's workload API (where a real device's modules get tokens).
IOTEDGE_WORKLOADURI = "IOTEDGE_WORKLOADURI"
IOTEDGE_APIVERSION = "IOTEDGE_APIVERSION"
IOTEDGE_AUTHSCHEME = "IOTEDGE_AUTHSCHEME"
#: The IoT Edge simulator's module connection string (what the local agent hands a module).
EDGEHUB_CONNECTION_STRING = "EdgeHubConnectionString"
#: The IoT Edge simulator's CA file the module trusts for its hub.
EDGE_MODULE_CA_CERTIFICATE_FILE = "EdgeModuleCACertificateFile"
#: The device connection string the edge agent reads (`python -m helpers.device.agent`).
IOTEDGE_CONNECTION_STRING = "IOTEDGE_CONNECTION_STRING"

#: What `create_from_edge_environment()` needs: either the workload API or the simulator's pair.
IOTEDGE_MODULE_ENV = (IOTEDGE_DEVICEID, IOTEDGE_MODULEID, IOTEDGE_MODULEGENERATIONID, IOTEDGE_IOTHUBHOSTNAME,
                      IOTEDGE_GATEWAYHOSTNAME, IOTEDGE_WORKLOADURI, IOTEDGE_APIVERSION, IOTEDGE_AUTHSCHEME)
EDGE_SIMULATOR_ENV = (EDGEHUB_CONNECTION_STRING, EDGE_MODULE_CA_CERTIFICATE_FILE)

# --------------------------------------------------------------------------- the manifest builders' env

#: `collect` (camera collector) or `infer` (model runner); `start.sh` dispatches on it.
MODE = "MODE"
MODE_COLLECT = "collect"
MODE_INFER = "infer"
MODES = (MODE_COLLECT, MODE_INFER)
#: The studio's base URL (ingestion, model downloads).
STUDIO_URL = "STUDIO_URL"
#: The studio API key; a deploy-time secret, never a literal in a manifest.
EI_API_KEY = "EI_API_KEY"
#: The collector: the label of every uploaded frame, how many frames, frames per second.
LABEL = "LABEL"
SAMPLE_COUNT = "SAMPLE_COUNT"
RATE_HZ = "RATE_HZ"
#: The camera device mapped into the container, e.g. `/dev/video0`.
CAMERA_DEVICE = "CAMERA_DEVICE"
#: `synthetic`, `folder` or `webcam` (helpers.device.camera).
CAMERA_SOURCE = "CAMERA_SOURCE"
#: The runner: the studio model version it downloads at start.
MODEL_VERSION = "MODEL_VERSION"
#: The runner: `"low,high"` detector-score band of frames it uploads for labeling.
SAMPLING_BAND = "SAMPLING_BAND"
#: The runner: seconds between telemetry messages.
TELEMETRY_INTERVAL_S = "TELEMETRY_INTERVAL_S"

# --------------------------------------------------------------------------- optional module settings

CATEGORY = "CATEGORY"
CAPTURE_COUNT = "CAPTURE_COUNT"
CAPTURE_RATE_HZ = "CAPTURE_RATE_HZ"
CAMERA_PATH = "CAMERA_PATH"
CAMERA_SIZE = "CAMERA_SIZE"
CAMERA_SEED = "CAMERA_SEED"
CAMERA_SHUFFLE_EVERY = "CAMERA_SHUFFLE_EVERY"
CAMERA_MOVE_EVERY = "CAMERA_MOVE_EVERY"
MODEL_PATH = "MODEL_PATH"
SCORE_THRESHOLD = "SCORE_THRESHOLD"
INFER_RATE_HZ = "INFER_RATE_HZ"
LOW_CONFIDENCE = "LOW_CONFIDENCE"
SAMPLING_MAX_PER_MIN = "SAMPLING_MAX_PER_MIN"
FAIL_GRACE_S = "FAIL_GRACE_S"
THREADS = "THREADS"
UPLOAD_TIMEOUT_S = "UPLOAD_TIMEOUT_S"
SPOOL_MAX_ITEMS = "SPOOL_MAX_ITEMS"
SPOOL_MAX_MB = "SPOOL_MAX_MB"
LOG_LEVEL = "LOG_LEVEL"

# --------------------------------------------------------------------------- set by the agent's runtime

#: The module's writable work folder (`/data` in the container).
MODULE_WORKDIR = "MODULE_WORKDIR"
#: The port the runner serves on, and the address it binds.
PORT = "PORT"
BIND_HOST = "BIND_HOST"
#: The simulated device's scene file (the synthetic camera reads it).
EDGELOOP_SCENE_FILE = "EDGELOOP_SCENE_FILE"
#: The camera source of `helpers.device.camera.open_camera` when none is given.
EDGELOOP_CAMERA = "EDGELOOP_CAMERA"
