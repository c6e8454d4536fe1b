"""A small seeded slice of the fuzzer (tests/fuzz.py; `make fuzz` runs the full counts)."""

from __future__ import annotations

import pytest

from fuzz import run_case

SLICE = 100  # cases per build; case i of seed 0 is the same configuration everywhere


@pytest.mark.parametrize("index", range(SLICE))
def test_fuzz_slice(fa, index):
    run_case(fa, seed=0, index=index)
