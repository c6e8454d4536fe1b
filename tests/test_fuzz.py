"""A small seeded slice of the fuzzer (tests/fuzz.py; `make fuzz` runs the full counts)."""

from __future__ import annotations

import pytest

from fuzz import run_case

SLICE = 100  # cases per build; case i of seed 0 is the same configuration everywhere
INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: run_case builds the kernel's inputs on `device`


@pytest.mark.parametrize("index", range(SLICE))
def test_fuzz_slice(fa, device, index):
    run_case(fa, seed=0, index=index, device=device)
