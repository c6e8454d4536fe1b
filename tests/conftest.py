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
