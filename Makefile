# Two commands do all set-up on a fresh machine:
#   make demo   - creates .venv, installs the package, trains on synthetic COCO-format data, predicts
#   make test   - creates .venv, installs the package with its test extras, runs the test suite; then the MXNet lane:
#                 creates .venv-gluon (mxnet 1.9.1 needs numpy < 1.24) and runs tests/gluon there
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GLUON_VENV ?= .venv-gluon
GLUON_BIN := $(GLUON_VENV)/bin
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv gluon-venv browser demo test test-main test-gluon lint bench parity clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH_PIN) || $(BIN)/pip install -q torch torchvision
	$(BIN)/pip install -q -e ".[local,sagemaker,tracking,export,openvino,lowp,serve,tune,dev]"
	touch $@

venv: $(VENV)/.installed

$(GLUON_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(GLUON_VENV)
	$(GLUON_BIN)/pip install -q --upgrade pip
	$(GLUON_BIN)/pip install -q $(TORCH_PIN) || $(GLUON_BIN)/pip install -q torch torchvision
	$(GLUON_BIN)/pip install -q -e ".[local,gluon,dev]"
	touch $@

gluon-venv: $(GLUON_VENV)/.installed

demo: venv
	$(BIN)/multilabel-ic demo --output demo-output $(DEMO_ARGS)

test: test-main test-gluon

# Chromium for the report's browser test (tests/test_report.py), from the distribution's packages
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing chromium (apt-get) for the report's browser test"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else echo "chromium is missing: install it (apt-get install chromium) or set CHROMIUM=/path/to/chrome"; fi; }

# one test worker per CPU core (pytest-xdist; each computes on one thread: tests/conftest.py); TEST_WORKERS=0 runs in
# one process
TEST_WORKERS ?= auto
test-main: venv browser
	$(BIN)/python -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist worksteal

test-gluon: gluon-venv
	$(GLUON_BIN)/python -m pytest -q tests/gluon

lint: venv
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

bench: venv
	$(BIN)/multilabel-ic bench --quick --output bench-output

parity: venv gluon-venv
	$(GLUON_BIN)/multilabel-ic parity --seeds 3 --output parity-output

clean:
	rm -rf $(VENV) $(GLUON_VENV) demo-output bench-output parity-output
