# The two commands of the README: `make demo` and `make test`.
PY_VERSION ?= 3.10
VENV ?= .venv
PY := $(VENV)/bin/python
DETECTRON2_PYPI ?= sal-detectron2==0.7.2
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets

.PHONY: venv demo test lint format clean-venv install-own-torch venv311 test311 test311-quick bundle

# $(call find_python,3.X): a command that runs Python 3.X (python3.X or python3 on PATH, else pyenv's).
find_python = $(shell v=$(1); for c in python$$v python3; do \
	  if command -v $$c >/dev/null 2>&1 && [ "$$($$c -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$$v" ]; then echo $$c; exit; fi; done; \
	  if command -v pyenv >/dev/null 2>&1; then p=$$(pyenv versions --bare 2>/dev/null | grep "^$$v\." | tail -1); \
	  [ -n "$$p" ] && echo "env PYENV_VERSION=$$p $$(pyenv root)/versions/$$p/bin/python$$v"; fi)
# Find some Python 3.10 (detectron2's PyPI build is tagged cp310 only).
PYTHON310 := $(call find_python,3.10)
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

# Into a Python that already has torch and torchvision (yours, any CUDA build, Python 3.10-3.12):
# everything else, with no torch reinstall; needs PyPI. tools/make_bundle.py writes a wheelhouse for
# that Python in which every package it already has stays at its version (torch included), pip
# installs from it, then this checkout is installed as an editable package. docs/GPU.md.
OWN_TORCH_BUNDLE ?= build/bundle-own-torch
install-own-torch:
	@if [ "$(origin PYTHON)" != "command line" ]; then echo "error: name the Python to install into: make install-own-torch PYTHON=/path/to/python"; exit 1; fi
	@$(PYTHON) -c 'import torch, torchvision' || { echo "error: $(PYTHON) cannot import torch and torchvision: install your torch build there first"; exit 1; }
	@$(PYTHON) -c 'import packaging' 2>/dev/null || $(PYTHON) -m pip install -q packaging
	$(PYTHON) tools/make_bundle.py --out $(OWN_TORCH_BUNDLE)
	$(PYTHON) -m pip install -q --no-index --find-links $(OWN_TORCH_BUNDLE) -r $(OWN_TORCH_BUNDLE)/requirements.txt
	$(PYTHON) -m pip install -q --no-deps -e .

# The second environment the suite runs in: Python 3.11, numpy 2, torch 2.11.0 from PyPI (the release
# found on GPU machines; PyPI's build is a CUDA 13 one and runs on the CPU too), detectron2's Python
# code without `_C` (tools/make_detectron2_wheel.py), installed by `make install-own-torch`.
VENV311 ?= .venv311
TORCH311 ?= torch==2.11.0 torchvision==0.26.0
PYTHON311 = $(call find_python,3.11)
# A quick subset for CI: numpy-heavy data / evaluation code, the GMM core, one training run, the bundle.
QUICK311 ?= tests/test_bundle.py tests/test_gmm_likelihood.py tests/test_gmm_fit.py tests/test_data_mapper.py \
	tests/test_data_zoo_augmentation.py tests/test_eval_anomaly.py tests/test_eval_calibration.py \
	tests/test_eval_components.py tests/test_eval_never_predicted.py tests/test_scores_fitted.py tests/test_user_data.py

$(VENV311)/.installed: requirements.txt setup.py tools/make_bundle.py tools/make_detectron2_wheel.py
	@if [ -z "$(PYTHON311)" ]; then echo "error: make venv311 needs Python 3.11 (python3.11 on PATH, or in pyenv)"; exit 1; fi
	@[ -x $(VENV311)/bin/python ] || $(PYTHON311) -m venv $(VENV311)
	$(VENV311)/bin/python -m pip install -q --upgrade pip wheel packaging
	$(VENV311)/bin/python -m pip install -q $(TORCH311) "numpy>=2"
	$(MAKE) --no-print-directory install-own-torch PYTHON=$(VENV311)/bin/python OWN_TORCH_BUNDLE=$(VENV311)/bundle
	@touch $@

venv311: $(VENV311)/.installed

test311: venv311
	$(VENV311)/bin/python -m pytest -q tests

test311-quick: venv311
	$(VENV311)/bin/python -m pytest -q $(QUICK311)

# The offline bundle (docs/GPU.md): a wheelhouse in bundle/ for BUNDLE_TARGET, without what
# BUNDLE_HAVE says the target has (`-`: only torch / torchvision); needs PyPI.
BUNDLE_TARGET ?= cp312-manylinux_2_28_x86_64
BUNDLE_HAVE ?= tools/bundle_have/cuda_image_py312.txt
bundle: venv
	$(PY) tools/make_bundle.py --out bundle --target $(BUNDLE_TARGET) --have $(BUNDLE_HAVE)
