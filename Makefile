# Two commands do all set-up on a fresh machine:
#   make demo   - creates .venv, installs the package, trains on synthetic COCO-format data, predicts
#   make test   - creates .venv, installs the package with its test extras, runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN) || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[local,sagemaker,tracking,dev]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/multilabel-ic demo --output demo-output

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

bench: venv
	$(BIN)/multilabel-ic bench --quick --output bench-output

clean:
	rm -rf $(VENV) demo-output bench-output
