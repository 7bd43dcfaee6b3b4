# Every target works on a fresh machine with only python3 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=

.PHONY: venv install install-server native serve test test-slow lint bench docs-check clean

# pytest exits 5 when a selection holds no test (e.g. no slow suite yet): say so, do not fail.
define run_pytest
	$(BIN)/python -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests selected (exit 5), treated as success"; rc=0; fi; \
	exit $$rc
endef

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The editable install also compiles the native kernel (setup.py) into the source tree.
NATIVE_SOURCES := setup.py $(wildcard service/initserve/engine/native/*.c service/initserve/engine/native/*.h)

$(VENV)/.installed-server: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[server]'
	touch $@ $(VENV)/.native

# torch is pinned in the extras (the CPU wheel); see pyproject.toml.
# mup (the µP reference in tests/client) without its requirements: they name an unpinned torch and
# torchvision, which would replace the CPU torch with a CUDA build; it needs nothing else we lack.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'mup==1.0.0'
	touch $@ $(VENV)/.installed-server $(VENV)/.native

# Rebuild the kernel when its sources change (e.g. after a pull). The extension is optional: without
# a compiler the install succeeds and the numpy kernel runs (INITSERVE_KERNEL=auto says so in the log).
$(VENV)/.native: $(NATIVE_SOURCES) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python -c "import initserve.engine._native" 2>/dev/null \
		|| echo "warning: the native kernel did not build; the numpy kernel will run"
	touch $@

venv: $(BIN)/python
install: $(STAMP) $(VENV)/.native
install-server: $(VENV)/.installed-server $(VENV)/.native
native: $(VENV)/.native

serve: $(VENV)/.installed-server $(VENV)/.native
	$(BIN)/initserve serve --host $(HOST) --port $(PORT)

test: $(STAMP) $(VENV)/.native
	$(call run_pytest,-m "not slow")

test-slow: $(STAMP) $(VENV)/.native
	$(call run_pytest,-m slow)

# wildcard: a folder that holds no file yet is absent from a fresh clone.
LINT_PATHS := $(wildcard service clients tests benchmarks)
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The documentation's promises: every README command runs, links resolve, the settings table is
# complete, and each package's own docs tests (tests/*/test_docs.py).
docs-check: $(STAMP)
	$(BIN)/python -m pytest $(wildcard tests/*/test_docs.py) tests/deploy/test_readme.py

clean:
	rm -rf $(VENV) build *.egg-info service/initserve/engine/_native*.so
