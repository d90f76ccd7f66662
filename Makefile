# make install: create or reuse .venv and install nlbpipe into it
# make lint:    install, then ruff over the whole tree (config in pyproject.toml)
# make test:    install, then run the test suite on TEST_WORKERS processes (pytest-xdist; 0 = in this process)
# make demo:    install, then run the whole pipeline on a synthetic dataset (CPU, no download)
#
# torch goes in first, pinned, so that nothing pulls a CUDA build by accident. A GPU user picks
# the build for their CUDA version, e.g.  make install TORCH_SPEC="torch==2.13.0 --index-url <pytorch CUDA index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
NLB_TOOLS_SPEC ?= nlb-tools==0.0.4
EXTRAS ?= test
TEST_WORKERS ?= 2
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.nlbpipe-installed

.PHONY: install lint test demo clean-venv

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	# nlb-tools pins pandas<=1.3.4, which has no wheel for Python 3.11; it runs on pandas 2.x
	$(PIP) install --quiet --no-deps $(NLB_TOOLS_SPEC)
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	$(PY) -c "import torch, nlb_tools, ray, skopt, pynwb, dandi, nlbpipe; print('nlbpipe', nlbpipe.__version__, 'torch', torch.__version__, 'ray', ray.__version__)"
	@touch $@

lint: install
	$(VENV)/bin/ruff check .

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

demo: install
	$(PY) -m nlbpipe.demo

clean-venv:
	rm -rf $(VENV)
