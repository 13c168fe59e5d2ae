# Two commands do all the set-up: `make demo` and `make test` (`make test-fast`: the quick loop while editing).
VENV ?= .venv
PY := $(VENV)/bin/python
# torch from the local disk on the build machines; on your own machine override, e.g.
#   make demo TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist
LOG := $(VENV)/install.log
# quiet steps: their output goes to the log, shown only when a step fails
QUIET = >> $(LOG) 2>&1 || { tail -n 40 $(LOG); echo "install failed; full log: $(LOG)"; exit 1; }

.PHONY: install data demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "installing into $(VENV) (log: $(LOG))"
	@python3 -m venv $(VENV) && : > $(LOG)
	@$(PY) -m pip install --progress-bar off -q --upgrade pip $(QUIET)
	@echo "  $(TORCH_SPEC)"
	@$(PY) -m pip install --progress-bar off -q $(TORCH_SPEC) $(QUIET)
	@echo "  w2s and its dependencies (pyproject.toml, extras: test)"
	@$(PY) -m pip install --progress-bar off -q -e '.[test]' $(QUIET)
	@$(PY) -c "import torch, timm, sklearn, w2s_cli; print(f'  ok: torch {torch.__version__}, timm {timm.__version__}, scikit-learn {sklearn.__version__}, w2s {w2s_cli.__version__}')"
	@touch $@

# Fashion-MNIST from Debian (as root on Debian/Ubuntu); elsewhere use --root DIR or --download.
data:
	@if [ -d $(FASHION_MNIST) ]; then echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing dataset-fashion-mnist (Debian)"; \
		apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "note: Fashion-MNIST not installed (needs root on Debian); w2s run --data digits --n-labeled 300 --n-pseudo 1000 --n-test 400 works anywhere"; fi

demo: install data
	$(VENV)/bin/w2s run --out-dir w2s-run

test: install data
	$(PY) -m pytest -q tests

# the in-process and unit tests: no subprocess, study, real-backbone extraction or long finetune (marker `slow`)
test-fast: install data
	$(PY) -m pytest -q -n 2 -m "not slow" tests

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install data
	$(PY) bench/extract.py
	$(PY) bench/solvers.py
	$(PY) bench/synth.py

clean:
	rm -rf w2s-run .pytest_cache
