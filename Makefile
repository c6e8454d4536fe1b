# The stable entry points (README): `make demo` runs the main job, `make test` the whole suite.
# Both set up what they need on a fresh machine: a .venv with the pinned packages, then the build.

PYTHON_BOOTSTRAP ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv build build-sim test test-quick demo bench bench-backward bench-metal clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	# torch first and alone: pip then takes the CPU build from this machine's disk.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# The local cpu variant, laid out as kernel-builder lays it out: build/<variant>/.
build: venv
	$(PY) scripts/build_local.py

# The same package with its ops running the Metal kernels in the MSL simulator (tests/msl_sim)
# on CPU tensors: build-sim/<variant>/. The test suite runs against both builds.
build-sim: venv
	$(PY) scripts/build_local.py --variant sim

test: build build-sim
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

# The cheap subset (kernels_ci marker).
test-quick: build build-sim
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest tests -q -m kernels_ci -p no:cacheprovider $(PYTEST_ARGS)

demo: build
	$(PY) scripts/demo.py

bench: build
	$(PY) benchmarks/benchmark_attention.py

# Training: forward + backward against torch's routes (ratios and peak extra memory).
bench-backward: build
	$(PY) benchmarks/benchmark_backward.py

# The Metal kernels' device traffic and work, counted by the simulator, against the minimum.
bench-metal: build-sim
	$(PY) benchmarks/metal_traffic.py

clean:
	rm -rf build build-sim
