# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SHARED_TORCH_HOME := $(abspath ../shared/torch-home)
export TORCH_HOME ?= $(if $(wildcard $(SHARED_TORCH_HOME)),$(SHARED_TORCH_HOME),$(HOME)/.cache/torch)

.PHONY: install test demo lint bench bench-deps figures clean

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/fmapviz report mobilenet_v2 --weights IMAGENET1K_V1 assets/chelsea.png -o demo-report --force
	@echo "Report: demo-report/chelsea.png (and demo-report/index.html)"

lint: install
	$(VENV)/bin/ruff check fmapviz tests benchmarks assets docs notebooks
	$(VENV)/bin/ruff format --check fmapviz tests benchmarks assets docs notebooks

bench-deps: install
	$(PIP) install -q --no-deps torch-lucent==0.1.8 grad-cam==1.5.7 torchcam==0.5.0 torchlens==2.36.1 kornia==0.9.0 ttach
	$(PIP) install -q opencv-python-headless scikit-learn ipython decorator kornia-rs graphviz safetensors
	$(PY) benchmarks/peers_check.py

bench: bench-deps
	$(PY) benchmarks/run.py

figures: install
	$(PY) assets/make_figures.py

clean:
	rm -rf $(VENV) demo-report
