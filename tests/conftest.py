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

# Local build variants the API tests run against, and where `make` puts them:
#   cpu - the C++ cpu backend (make build -> build/)
#   sim - the Metal kernels run by the MSL simulator on CPU tensors
#         (python scripts/build_local.py --variant sim -> build-sim/)
VARIANTS = {
    "cpu": REPO,
    "sim": REPO / "build-sim",
}
# MFS_CPU_BUILD=<folder> runs the API tests against that cpu build alone: `make test-aarch64` runs
# the suite in an emulated aarch64 Python against the cross build build-aarch64/. The tests that
# load no build (the simulator's, the Metal design's, build.toml's, the x86 instruction sets')
# test this host's tools, not the build: they are deselected there (pytest counts them).
CPU_BUILD = os.environ.get("MFS_CPU_BUILD")
if CPU_BUILD:
    VARIANTS = {"cpu": REPO / CPU_BUILD}

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_kernel(variant: str):
    import kernels

    os.environ["LOCAL_KERNELS"] = f"{REPO_ID}={VARIANTS[variant]}"
    return kernels.get_kernel(REPO_ID, version=2)


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def fa(variant):
    """The loaded kernel module of one build variant."""
    return load_kernel(variant)


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
    if not CPU_BUILD:
        return
    host_only = [item for item in items if "variant" not in getattr(item, "fixturenames", ())]
    if host_only:
        config.hook.pytest_deselected(items=host_only)
        items[:] = [item for item in items if item not in host_only]
