# Two entry points on a fresh clone: `make demo` and `make test`.
# Each creates .venv if missing and installs the package with the extras it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test lint bench clean fashion-mnist

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-install when the project metadata changes.
$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,experiments]'
	touch $@

$(VENV)/.stamp-demo: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[experiments]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (offline data).
fashion-mnist:
	@if [ ! -d $(FMNIST_DIR) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)); \
	  else \
	    echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1; \
	  fi; \
	fi

demo: $(VENV)/.stamp-demo
	$(PY) -m jaxunlearn compare --dataset digits --model mlp --forget-classes 3 \
	  --methods all --workdir runs/demo

test: $(VENV)/.stamp-test fashion-mnist
	$(PY) -m pytest -q -n 2 --durations=15

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check jaxunlearn experiments tests

bench: $(VENV)/.stamp-test
	$(PY) experiments/bench_train.py --out experiments/results/bench_train_cpu.json

clean:
	rm -rf $(VENV) runs .cache .pytest_cache
