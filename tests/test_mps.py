"""On a Mac: what only the real Metal build on MPS tensors can show. The numerical cases (every
feature, head dim and dtype against the float64 reference) are the API suite's own: conftest.py
adds the `mps` variant wherever torch has an MPS device, and the device-aware modules build their
inputs there. Skipped where torch has no MPS device (every machine this project is developed on)."""

from __future__ import annotations

import pytest
import torch

from conftest import load_kernel

pytestmark = pytest.mark.skipif(not torch.backends.mps.is_available(),
                                reason="needs an Apple GPU (torch MPS)")


def test_cpu_tensor_is_rejected_by_the_metal_build():
    fa_mps = load_kernel("mps")
    q = torch.randn(4, 2, 64)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="mps"):
        fa_mps.flash_attn_varlen_func(q, q, q, cu, cu, 4, 4)
