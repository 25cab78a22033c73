# ganforge: `make demo` and `make test` both work on a fresh machine (Python 3.10+, no GPU needed).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel of this exact torch lies on the reference machines' disk; any other spec may pull CUDA.
TORCH  ?= torch==2.13.0
FMNIST_DIR := /usr/share/datasets/fashion-mnist
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
data:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	  || echo "note: apt-get could not install dataset-fashion-mnist; ganforge will download Fashion-MNIST instead"; \
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
	GANFORGE_REQUIRE_REAL_DATA=1 $(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install data
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
