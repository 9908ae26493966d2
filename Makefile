# Everything a fresh machine needs: `make test` and `make demo` create or
# refresh the virtual environment .venv and install what they use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test test-cpu test-sim demo bench bench-html clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# Optional peer for comparison tests and benchmarks (skipped when absent).
	# torch==2.13.0 is the CPU wheel on this kind of machine's disk.
	-$(PY) -m pip install -q torch==2.13.0 || echo "torch not installed: comparison tests will skip"
	touch $(STAMP)

test: venv test-cpu test-sim
	cd asv_bench && ../$(PY) -m asv check -E existing:../$(PY)

test-cpu: venv
	$(PY) -m pytest -q -m "not cudasim" tests

# The CUDA simulator must be switched on before numba is imported: its own process.
# It runs a Python thread per CUDA thread, so its tests are spread over the cores
# (pytest-xdist; at most 4 workers): 15 minutes instead of 41 on two cores.
test-sim: venv
	NUMBA_ENABLE_CUDASIM=1 $(PY) -m pytest -q -n auto --maxprocesses 4 -m cudasim tests/test_gpu_sim.py

demo: venv
	$(PY) -m numba_ln.demo

bench: venv
	cd asv_bench && ../$(PY) -m asv machine --yes && \
	  ../$(PY) -m asv run -E existing:../$(PY) --set-commit-hash $$(git rev-parse HEAD) && \
	  ../$(PY) -m asv publish

clean:
	rm -rf $(VENV) asv_bench/results asv_bench/html .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
