# The stable entry points (README): `make demo` runs the main job, `make test` the whole suite.
# Both set up what they need on a fresh machine: a .venv with the pinned packages, then the build.

PYTHON_BOOTSTRAP ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv build build-sim test test-quick demo bench bench-backward bench-head-dims bench-metal \
	check-metal check-tools gpu-record gpu-kit test-gpu clean abi-check fuzz bench-visual aarch64-setup build-aarch64 \
	test-aarch64 lint-workflows

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
# `metal -std=metal4.0 -O2` where it exists), the .mm host through clang as Objective-C++, and
# every kernel instantiation's registers from nvcc/ptxas 13 (tests/metal_cuda/; cached in
# build-check/metal_cuda/).
check-metal: venv check-tools
	$(PY) tests/msl_check/check_metal.py
	$(PY) tests/msl_check/check_host.py
	$(PY) tests/metal_cuda/registers.py

# The Metal kernels on an NVIDIA GPU (tests/metal_cuda/README.md), not part of `make test` (CI has
# no GPU; the README's Status records each run). gpu-record, where build-sim/ is: every launch of
# the API suite's Metal variant and of API calls that use every kernel at every head-dim tile and
# dtype, recorded through the simulator with its results, packed in batches, translated to CUDA.
# test-gpu, on a machine with an NVIDIA GPU and nvcc (GPU_PY: a Python with CUDA torch and numpy;
# the .venv's torch is CPU-only): the kernels compiled, every packed launch replayed against the
# simulator's result, the decode kernel's bandwidth, then compute-sanitizer over one launch of
# every kernel. GPU_PACKS: the packs or batches to replay (one batch at a time where the machine
# receives a limited upload).
GPU_PY ?= python3
GPU_JOBS ?= $(shell nproc)
GPU_DIR := build-check/gpu
GPU_PACKS ?= $(GPU_DIR)/packs/suite $(GPU_DIR)/packs/cases
gpu-record: build-sim
	rm -rf $(GPU_DIR)/record $(GPU_DIR)/packs $(GPU_DIR)/cubins
	OPENBLAS_NUM_THREADS=1 $(PY) tests/metal_cuda/record_suite.py $(GPU_DIR)/record/suite
	$(PY) tests/metal_cuda/dump_cases.py $(GPU_DIR)/record/cases --bench $(GPU_DIR)/record/bench
	for p in suite cases bench; do \
	  $(PY) tests/metal_cuda/pack_launches.py $(GPU_DIR)/packs/$$p $(GPU_DIR)/record/$$p || exit 1; done
	$(PY) tests/metal_cuda/compile_cubins.py $(GPU_DIR)/cubins $(GPU_DIR)/packs/* --translate-only

# The every-kernel cases and the timed decode alone, laid out for device_run.sh in one upload
# (about 45 MiB): carry build-check/gpu/kit, run `cd build-check/gpu/kit && BENCH=1 SAN=1 bash
# tests/metal_cuda/device_run.sh` there.
GPU_KIT := $(GPU_DIR)/kit
gpu-kit: build-sim
	rm -rf $(GPU_DIR)/record/cases $(GPU_DIR)/record/bench $(GPU_DIR)/kit-cubins $(GPU_KIT)
	$(PY) tests/metal_cuda/dump_cases.py $(GPU_DIR)/record/cases --bench $(GPU_DIR)/record/bench
	for p in cases bench; do \
	  $(PY) tests/metal_cuda/pack_launches.py $(GPU_KIT)/packs/$$p $(GPU_DIR)/record/$$p || exit 1; done
	$(PY) tests/metal_cuda/compile_cubins.py $(GPU_DIR)/kit-cubins $(GPU_KIT)/packs/* --translate-only
	mkdir -p $(GPU_KIT)/tests && cp -r tests/metal_cuda tests/reference.py $(GPU_KIT)/tests/
	tar czf $(GPU_KIT)/cu.tgz -C $(GPU_DIR)/kit-cubins .

test-gpu:
	$(GPU_PY) tests/metal_cuda/compile_cubins.py $(GPU_DIR)/cubins --compile-only --jobs $(GPU_JOBS)
	$(GPU_PY) tests/metal_cuda/gpu_replay.py $(GPU_DIR)/cubins $(GPU_PACKS)
	$(GPU_PY) tests/metal_cuda/gpu_replay.py $(GPU_DIR)/cubins $(GPU_DIR)/packs/bench --bench
	for tool in racecheck synccheck memcheck; do \
	  compute-sanitizer --tool $$tool --kernel-name kns=mfs_ --error-exitcode 1 \
	    $(GPU_PY) tests/metal_cuda/gpu_replay.py $(GPU_DIR)/cubins $(GPU_DIR)/packs/cases \
	    --one-per-kernel || exit 1; done

# On Linux, aarch64-setup first: the simulator's fiber test cross-builds for arm64 and runs it
# under qemu (tests/test_msl_sim.py).
CROSS_TOOLS := $(if $(filter Linux,$(shell uname -s)),aarch64-setup)

test: build build-sim check-metal abi-check lint-workflows $(CROSS_TOOLS)
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-aarch64

# The cheap subset (kernels_ci marker).
test-quick: build build-sim
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest tests -q -m kernels_ci -p no:cacheprovider $(PYTEST_ARGS)

# The cpu variant for aarch64-linux, cross-built and tested under qemu user-mode emulation
# (scripts/aarch64/): the set-up makes .aarch64/ (pinned cross compiler, qemu, arm64 Python and
# the aarch64 torch), the build build-aarch64/<variant>/, the tests run in the emulated Python.
AARCH64_PY := .aarch64/venv/bin/python
AARCH64_PYTEST_ARGS ?= -m kernels_ci

aarch64-setup: venv
	$(PY) scripts/aarch64/setup.py

build-aarch64: aarch64-setup
	$(PY) scripts/aarch64/build.py

# MFS_CPU_BUILD: the API tests against build-aarch64/ alone (tests/conftest.py); CXX: what
# torch.compile runs inside the emulated Python (a cross g++).
test-aarch64: build-aarch64
	$(PY) scripts/abi_check.py build-aarch64/*/*.abi3.so
	MFS_CPU_BUILD=build-aarch64 CXX=$(CURDIR)/.aarch64/bin/g++ OPENBLAS_NUM_THREADS=1 \
		$(AARCH64_PY) -m pytest tests -q -p no:cacheprovider $(AARCH64_PYTEST_ARGS)

# The GitHub Actions workflows (.github/workflows/) cannot run here: they are linted.
lint-workflows: venv
	$(VENV)/bin/actionlint

demo: build
	$(PY) scripts/demo.py

bench: build
	$(PY) benchmarks/benchmark_attention.py

# Training: forward + backward against torch's routes (ratios and peak extra memory).
bench-backward: build
	$(PY) benchmarks/training_routes.py

# The cpu kernels' efficiency per FLOP at head dim 512 against 256 (prefill, decode; forward, + backward).
bench-head-dims: build
	$(PY) benchmarks/head_dim_routes.py

# The Metal kernels' device traffic and work, counted by the simulator, against the minimum, and
# issue 20's counters per kernel (bank conflicts, barriers per key tile, dead work, wide loads).
bench-metal: build-sim
	$(PY) benchmarks/metal_traffic.py

# The Hub's ABI check (kernel-abi-check) on every built binary: no symbol outside Python 3.9's
# limited API; manylinux_2_28 findings are reported. More binaries: append to ABI_BINARIES.
ABI_BINARIES = build/*/*.abi3.so build-sim/*/*.abi3.so
abi-check: build build-sim
	$(PY) scripts/abi_check.py $(ABI_BINARIES)

# Random configurations of every entry point against the float64 reference, on both builds
# (tests/fuzz.py; a seeded slice of it runs in `make test`).
FUZZ_CASES ?= 10000
FUZZ_CASES_SIM ?= 1000
FUZZ_SEED ?= 0
fuzz: build build-sim
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) tests/fuzz.py --variant cpu --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) tests/fuzz.py --variant sim --cases $(FUZZ_CASES_SIM) --seed $(FUZZ_SEED)

# `kernels benchmark ./` with its --visual charts, into media/ (the README shows them).
bench-visual: build
	HF_HUB_OFFLINE=1 $(VENV)/bin/kernels benchmark ./ --iterations 20 --visual metal_flash_sdpa_cpu
	rm -f media/*_animation.svg

clean:
	rm -rf build build-sim build-check build-aarch64
