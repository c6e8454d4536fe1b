# The stable entry points (README): `make demo` runs the main job, `make test` the whole suite.
# Both set up what they need on a fresh machine: a .venv with the pinned packages, then the build.

PYTHON_BOOTSTRAP ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv build build-sim test test-quick demo bench bench-metal check-metal check-tools clean

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

# The compilers that judge the Metal code here (tests/msl_check/README.md): clang-19 and LLVM's opt
# for the .metal sources, the GNU Objective-C headers for the .mm host. Pinned Debian packages,
# installed only when missing (and only where apt-get exists: a Mac runs Apple's compiler).
CHECK_PACKAGES := clang-19=1:19.1.7-3~deb12u1 llvm-19=1:19.1.7-3~deb12u1 libobjc-12-dev=12.2.0-14+deb12u1

check-tools:
	@if command -v apt-get >/dev/null && { ! command -v clang++-19 >/dev/null || \
	    ! command -v opt-19 >/dev/null || ! ls /usr/lib/gcc/*/*/include/objc/objc.h >/dev/null 2>&1; }; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(CHECK_PACKAGES); fi

# Every .metal translation unit through clang's front-end with MSL's rules (and Apple's
# `metal -std=metal4.0 -O2` where it exists), the .mm host through clang as Objective-C++.
check-metal: venv check-tools
	$(PY) tests/msl_check/check_metal.py
	$(PY) tests/msl_check/check_host.py

test: build build-sim check-metal
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

# The cheap subset (kernels_ci marker).
test-quick: build build-sim
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest tests -q -m kernels_ci -p no:cacheprovider $(PYTEST_ARGS)

demo: build
	$(PY) scripts/demo.py

bench: build
	$(PY) benchmarks/benchmark_attention.py

# The Metal kernels' device traffic and work, counted by the simulator, against the minimum.
bench-metal: build-sim
	$(PY) benchmarks/metal_traffic.py

clean:
	rm -rf build build-sim build-check
