#!/bin/sh
# Device entrypoint: one image, two modules. MODE=collect runs the camera collector,
# MODE=infer the model runner (helpers/device/module.py dispatches on MODE).
# The same script is the container ENTRYPOINT and what the local edge agent runs per module.
#
# Required environment (set in the deployment manifest's module Env, never in an image):
#   MODE        collect | infer
#   STUDIO_URL  the studio (local studio URL, or https://ingestion.edgeimpulse.com)
#   EI_API_KEY  the studio API key
# Optional: PYTHON (interpreter, default python3); everything else is read by the module.
set -eu

fail() {
    echo "start.sh: $*" >&2
    exit 2
}

case "${MODE:-}" in
    collect|infer) ;;
    "") fail "MODE is not set: set MODE=collect (camera collector) or MODE=infer (model runner) in the module's Env" ;;
    *) fail "MODE='${MODE}' is not valid: use MODE=collect or MODE=infer" ;;
esac

missing=""
[ -n "${STUDIO_URL:-}" ] || missing="${missing} STUDIO_URL"
[ -n "${EI_API_KEY:-}" ] || missing="${missing} EI_API_KEY"
if [ -n "${missing}" ]; then
    fail "missing environment variable(s):${missing}. Set them in the module's Env in the deployment manifest (EI_API_KEY is passed at deploy time, never baked into the image)"
fi

# Make the helpers package next to this script importable (the image copies it to /app;
# a checkout runs it from the repository root).
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
if [ -d "${here}/helpers" ]; then
    PYTHONPATH="${here}${PYTHONPATH:+:${PYTHONPATH}}"
    export PYTHONPATH
fi

# exec: the module becomes this process, so SIGTERM from the agent or docker reaches it.
exec "${PYTHON:-python3}" -m helpers.device.module
