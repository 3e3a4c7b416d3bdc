# The two commands a newcomer runs: `make quickstart` and `make test`.
# Both create ./.venv on first use and install the package into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU-only torch wheel that this machine keeps on local disk is preferred, so set-up does
# not pull a multi-GB CUDA build; elsewhere pip resolves `torch` the normal way.
LOCAL_CPU_TORCH := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
TORCH_SPEC ?= $(if $(LOCAL_CPU_TORCH),torch==$(word 2,$(subst -, ,$(notdir $(LOCAL_CPU_TORCH:+cpu=)))),)

.PHONY: setup quickstart test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_SPEC)" ]; then echo "installing $(TORCH_SPEC) (CPU build on local disk)"; $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(VENV)/bin/unisrec quickstart --output quickstart_out

# one pytest worker per core (each file's tests stay in one worker, so a file's shared fixtures are built
# once; at most 8, each holds its own torch): 2 cores, 285 s -> 165 s; TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses 8 --dist loadfile --durations=15 tests

clean:
	rm -rf $(VENV) quickstart_out
