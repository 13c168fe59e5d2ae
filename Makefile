# Two commands do all the set-up: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch from the local disk on the build machines; on your own machine override, e.g.
#   make demo TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install data demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Fashion-MNIST from Debian (as root on Debian/Ubuntu); elsewhere use --root DIR or --download.
data:
	@if [ -d $(FASHION_MNIST) ]; then echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: Fashion-MNIST not installed (needs root on Debian); w2s run --data digits works anywhere"; fi

demo: install data
	$(VENV)/bin/w2s run --out-dir w2s-run

test: install data
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install data
	$(PY) bench/extract.py

clean:
	rm -rf w2s-run .pytest_cache
