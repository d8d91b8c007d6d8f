# The two commands of the README: `make demo` and `make test`.
PY_VERSION ?= 3.10
VENV ?= .venv
PY := $(VENV)/bin/python
DETECTRON2_PYPI ?= sal-detectron2==0.7.2
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets

.PHONY: venv demo test lint format clean-venv

# Find some Python 3.10 (detectron2's PyPI build is tagged cp310 only).
PYTHON310 := $(shell for c in python$(PY_VERSION) python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then echo $$c; exit; fi; done; \
	  if command -v pyenv >/dev/null 2>&1; then v=$$(pyenv versions --bare 2>/dev/null | grep '^3\.10' | tail -1); \
	  [ -n "$$v" ] && echo "env PYENV_VERSION=$$v $$(pyenv root)/versions/$$v/bin/python3.10"; fi)
# The Python that creates $(VENV): VENV_PYTHON=/path/to/python, else the Python 3.10 found above.
VENV_PYTHON ?= $(PYTHON310)
# Two ways to get detectron2:
# - default: a fresh $(VENV) from Python 3.10 with the pinned torch of requirements.txt and
#   detectron2 from PyPI ($(DETECTRON2_PYPI), a CPU/CUDA build of upstream detectron2);
# - SYSTEM_SITE_PACKAGES=1: $(VENV) also sees the packages of $(VENV_PYTHON), any version: your
#   own torch and detectron2 (e.g. built from source for your GPU) are used as they are; the torch
#   pins of requirements.txt are skipped and nothing is installed from $(DETECTRON2_PYPI).
SYSTEM_SITE_PACKAGES ?= 0

$(VENV)/.installed: requirements.txt setup.py
ifeq ($(SYSTEM_SITE_PACKAGES),1)
	@if [ -z "$(VENV_PYTHON)" ]; then echo "error: SYSTEM_SITE_PACKAGES=1 needs VENV_PYTHON=/path/to/the/python/that/has/your/detectron2"; exit 1; fi
	@[ -x $(PY) ] || $(VENV_PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c 'import torch, detectron2' || { echo "error: SYSTEM_SITE_PACKAGES=1 but torch and detectron2 cannot be imported in $(VENV) (made from $(VENV_PYTHON)): install them for that Python first, or run without SYSTEM_SITE_PACKAGES for the PyPI build (then remove $(VENV))"; exit 1; }
	$(PY) -m pip install -q --upgrade pip wheel
	grep -v -E '^(torch|torchvision)([=<>!~ ]|$$)' requirements.txt > $(VENV)/requirements-own-torch.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-own-torch.txt
else
	@if [ -z "$(VENV_PYTHON)" ]; then echo "error: Python 3.10 is required (detectron2's PyPI wheel is cp310); install it or set VENV_PYTHON=/path/to/python3.10 (own detectron2 build: SYSTEM_SITE_PACKAGES=1, see README)"; exit 1; fi
	@[ -x $(PY) ] || $(VENV_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q -r requirements.txt
	@$(PY) -c 'import detectron2' 2>/dev/null || $(PY) -m pip install -q $(DETECTRON2_PYPI) "numpy<2" "opencv-python-headless<5"
endif
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) tools/run_demo.py --output output/demo

test: venv
	$(PY) -m pytest -q tests

# The formatter and linter (ruff.toml): `make lint` checks, `make format` rewrites.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean-venv:
	rm -rf $(VENV)
