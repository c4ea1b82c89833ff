# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SHARED_TORCH_HOME := $(abspath ../shared/torch-home)
export TORCH_HOME ?= $(if $(wildcard $(SHARED_TORCH_HOME)),$(SHARED_TORCH_HOME),$(HOME)/.cache/torch)

.PHONY: install test docs demo lint bench bench-deps figures clean

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev,tensorboard,lightning,timm,hf,notebook]"
	touch $@

install: $(VENV)/.installed

# The equivalence tests compare with the peers: pytorch-grad-cam and torchcam go in with --no-deps (no second torch).
$(VENV)/.peers-installed: $(VENV)/.installed
	$(PIP) install -q --no-deps grad-cam==1.5.7 torchcam==0.5.0 ttach==0.0.3
	$(PIP) install -q opencv-python-headless scikit-learn scipy
	touch $@

test: install $(VENV)/.peers-installed
	$(PY) -m pytest -q

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PIP) install -q -e ".[dev,docs]"
	touch $@

# The site in docs/_build/html (offline, warnings are errors), then its links and screenshots are checked.
docs: $(VENV)/.docs-installed
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	$(PY) -m pytest -q tests/test_docs_site.py

demo: install
	$(VENV)/bin/fmapviz report mobilenet_v2 --weights IMAGENET1K_V1 assets/chelsea.png -o demo-report --force
	@echo "Report: demo-report/chelsea.png (and demo-report/index.html)"
	$(VENV)/bin/fmapviz explore mobilenet_v2 --weights IMAGENET1K_V1 assets/chelsea.png assets/coffee.png \
		assets/astronaut.png --layers features.7 features.14 --actmax-top 4 --actmax-copies 1 --actmax-steps 64 \
		-o demo-site --quiet
	@echo "Explorer: $(abspath demo-site/index.html)"

lint: install
	$(VENV)/bin/ruff check fmapviz tests benchmarks assets docs notebooks examples
	$(VENV)/bin/ruff format --check fmapviz tests benchmarks assets docs notebooks examples

bench-deps: install
	$(PIP) install -q --no-deps torch-lucent==0.1.8 grad-cam==1.5.7 torchcam==0.5.0 torchlens==2.36.1 kornia==0.9.0 ttach
	$(PIP) install -q opencv-python-headless scikit-learn ipython decorator kornia-rs graphviz safetensors
	$(PY) benchmarks/peers_check.py

bench: bench-deps
	$(PY) benchmarks/run.py

figures: install
	$(PY) assets/make_figures.py

clean:
	rm -rf $(VENV) demo-report demo-site docs/_build docs/auto_examples docs/notebooks docs/sg_execution_times.rst
