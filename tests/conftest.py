"""Loads the kernel the way users do: kernels.get_kernel with LOCAL_KERNELS pointing at a local
build. Every API test runs once per build variant in VARIANTS."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
REPO_ID = "kernels-community/metal-flash-sdpa"

# Local build variants the API tests run against: (directory given to LOCAL_KERNELS, kernels
# backend, device the test inputs are built on).
#   cpu - the C++ cpu backend (make build -> build/)
#   sim - the Metal kernels run by the MSL simulator on CPU tensors
#         (python scripts/build_local.py --variant sim -> build-sim/)
#   mps - on a Mac only: the real Metal build (kernel-builder's metal variant in build/,
#         docs/CONTRIBUTING.md "On a Mac") on MPS tensors
VARIANTS = {
    "cpu": (REPO, "cpu", "cpu"),
    "sim": (REPO / "build-sim", "cpu", "cpu"),
}
if torch.backends.mps.is_available():
    VARIANTS["mps"] = (REPO, "metal", "mps")
# MFS_CPU_BUILD=<folder> runs the API tests against that cpu build alone: `make test-aarch64` runs
# the suite in an emulated aarch64 Python against the cross build build-aarch64/. The tests that
# load no build (the simulator's, the Metal design's, build.toml's, the x86 instruction sets')
# test this host's tools, not the build: they are deselected there (pytest counts them).
CPU_BUILD = os.environ.get("MFS_CPU_BUILD")
if CPU_BUILD:
    VARIANTS = {"cpu": (REPO / CPU_BUILD, "cpu", "cpu")}

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_kernel(variant: str):
    import kernels

    path, backend, _ = VARIANTS[variant]
    os.environ["LOCAL_KERNELS"] = f"{REPO_ID}={path}"
    return kernels.get_kernel(REPO_ID, version=2, backend=backend)


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def fa(variant):
    """The loaded kernel module of one build variant."""
    return load_kernel(variant)


@pytest.fixture(scope="session")
def device(variant) -> torch.device:
    """Where the test inputs of this variant live (the float64 reference stays on the CPU)."""
    return torch.device(VARIANTS[variant][2])


@pytest.fixture
def generator(request) -> torch.Generator:
    """Fresh random inputs per test, reproducible from the test's name and MFS_TEST_SEED (set it
    to draw other inputs)."""
    key = f"{os.environ.get('MFS_TEST_SEED', '0')}:{request.node.nodeid}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
    return torch.Generator().manual_seed(seed)


def pytest_configure(config):
    config.addinivalue_line("markers", "kernels_ci: the cheap subset, run first")


def pytest_collection_modifyitems(config, items):
    """Two adjustments of what runs.

    With MFS_CPU_BUILD (the emulated aarch64 run) the tests that load no build test this host's
    tools, not the build: they are deselected, and pytest counts them.

    Modules whose tests build their inputs on `device` say so with INPUTS_ON_VARIANT_DEVICE
    (tests/test_inputs_on_device.py audits seven of them). Every module that runs the kernel does;
    a new module that does not (or test_build_layout.py, which checks the local build's layout
    and skips mps itself) has its mps cases reported as skipped, by name, not silently run on
    CPU tensors, which the Metal build refuses."""
    if CPU_BUILD:
        host_only = [item for item in items if "variant" not in getattr(item, "fixturenames", ())]
        if host_only:
            config.hook.pytest_deselected(items=host_only)
            items[:] = [item for item in items if item not in host_only]
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("variant") != "mps":
            continue
        if not getattr(item.module, "INPUTS_ON_VARIANT_DEVICE", False):
            item.add_marker(pytest.mark.skip(
                reason="this module builds its inputs on the CPU; not yet on the mps device"))
