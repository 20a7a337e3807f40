# Two commands do all set-up on a fresh machine (see README):
#   make demo   create .venv, install, generate the sample dataset, run all six notebooks on it
#   (make demo-full: the same with the full model comparison in 04/05)
#   make test   create .venv, install, run the whole test suite (what CI runs)
#   make test-fast   the same without the tests marked slow (training, notebooks)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo demo-full test test-fast notebooks lab clean-outputs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip check
	$(PY) -m ffdv_utils kernel
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m ffdv_utils demo

demo-full: $(STAMP)
	$(PY) -m ffdv_utils demo --run demo-full -f params/demo_full.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

notebooks: $(STAMP)
	$(PY) tools/build_notebooks.py

# JupyterLab with .jupyter/jupyter_server_config.py: the tracked notebooks are saved without their outputs
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter $(VENV)/bin/jupyter lab

clean-outputs:
	rm -rf outputs/*/ 
