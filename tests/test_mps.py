"""On a Mac: the Metal build on MPS tensors against the float64 reference. Skipped where torch has
no MPS device (every machine this project is developed on); the same cases run against the Metal
kernels in the simulator through the `sim` build variant."""

from __future__ import annotations

import pytest
import torch

from batches import varlen_batch
from reference import Semantics, assert_close, assert_lse_close, attention_varlen

pytestmark = pytest.mark.skipif(not torch.backends.mps.is_available(),
                                reason="needs an Apple GPU (torch MPS)")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(scope="module")
def fa_mps():
    import kernels

    return kernels.get_kernel("kernels-community/metal-flash-sdpa", version=2)


@pytest.mark.parametrize("head_dim", [32, 64, 72, 80, 96, 128, 192, 256])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_varlen_on_mps(fa_mps, dtype, head_dim):
    g = torch.Generator().manual_seed(head_dim)
    batch = varlen_batch([1, 7, 130, 0], [300, 7, 200, 3], heads=8, heads_kv=2,
                         head_dim=head_dim, dtype=dtype, generator=g)
    sinks = torch.randn(8, generator=g)
    alibi = torch.rand(8, generator=g)
    to = lambda t: t.to("mps")  # noqa: E731
    out, lse, _ = fa_mps.flash_attn_varlen_func(
        to(batch.q), to(batch.k), to(batch.v), to(batch.cu_seqlens_q), to(batch.cu_seqlens_k),
        batch.max_seqlen_q, batch.max_seqlen_k, causal=True, window_size=(50, -1), softcap=3.0,
        alibi_slopes=to(alibi), s_aux=to(sinks), return_attn_probs=True)
    ref_out, ref_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                        batch.cu_seqlens_k,
                                        Semantics(scale=head_dim ** -0.5, causal=True,
                                                  window=(50, -1), softcap=3.0,
                                                  alibi_slopes=alibi, sinks=sinks))
    assert_close(out.cpu(), ref_out, dtype)
    assert_lse_close(lse.cpu(), ref_lse)


def test_cpu_tensor_is_rejected_by_the_metal_build(fa_mps):
    q = torch.randn(4, 2, 64)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="mps"):
        fa_mps.flash_attn_varlen_func(q, q, q, cu, cu, 4, 4)
