# The two commands of the README: `make demo` and `make test`.
PY_VERSION ?= 3.10
VENV ?= .venv
PY := $(VENV)/bin/python
DETECTRON2_PYPI ?= sal-detectron2==0.7.2
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets

.PHONY: venv demo test clean-venv

# Find some Python 3.10 (detectron2's PyPI build is tagged cp310 only).
PYTHON310 := $(shell for c in python$(PY_VERSION) python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then echo $$c; exit; fi; done; \
	  if command -v pyenv >/dev/null 2>&1; then v=$$(pyenv versions --bare 2>/dev/null | grep '^3\.10' | tail -1); \
	  [ -n "$$v" ] && echo "env PYENV_VERSION=$$v $$(pyenv root)/versions/$$v/bin/python3.10"; fi)

$(VENV)/.installed: requirements.txt setup.py
	@if [ -z "$(PYTHON310)" ]; then echo "error: Python 3.10 is required (detectron2's PyPI wheel is cp310); install it or set PYTHON310=/path/to/python3.10"; exit 1; fi
	@[ -x $(PY) ] || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	$(PY) -m pip install -q -r requirements.txt
	@$(PY) -c 'import detectron2' 2>/dev/null || $(PY) -m pip install -q $(DETECTRON2_PYPI) "numpy<2" "opencv-python-headless<5"
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) tools/run_demo.py --output output/demo

test: venv
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
