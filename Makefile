# `make train` and `make test` each create or refresh the virtualenv on first use.
# Extra arguments: make train ARGS="--epochs 20"; make test ARGS="-k models".
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
TEST_WORKERS ?= auto  # pytest-xdist processes, one per core (make test TEST_WORKERS=0: in-process)

.PHONY: train test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,onnx,explain,tensorboard]'
	touch $@

train: $(VENV)/.installed
	$(BIN)/resnetlab train --model resnet20 --dataset cifar10 --download $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: $(VENV)/.installed lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=15 $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
