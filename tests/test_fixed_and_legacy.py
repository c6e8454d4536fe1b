"""flash_attn_func (fixed-length batches) and the legacy in-place flash_attention_varlen."""

from __future__ import annotations

import math

import pytest
import torch

from batches import random_tensor, varlen_batch
from reference import (Semantics, assert_close, assert_lse_close, attention_fixed,
                       attention_varlen)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's


@pytest.mark.parametrize("shape", [(2, 17, 17), (3, 1, 40), (2, 30, 9), (1, 0, 5), (2, 6, 0)],
                         ids=lambda s: "B{}_Sq{}_Sk{}".format(*s))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fixed_length(fa, device, generator, dtype, causal, shape):
    batch, seqlen_q, seqlen_k = shape
    q = random_tensor((batch, seqlen_q, 8, 64), dtype, generator, device=device)
    k = random_tensor((batch, seqlen_k, 2, 64), dtype, generator, device=device)
    v = random_tensor((batch, seqlen_k, 2, 64), dtype, generator, device=device)
    sinks = torch.randn(8, generator=generator).to(device)
    alibi = torch.rand(batch, 8, generator=generator).to(device)
    out, lse, _ = fa.flash_attn_func(q, k, v, causal=causal, window_size=(12, -1), softcap=2.0,
                                     alibi_slopes=alibi, s_aux=sinks, return_attn_probs=True)
    ref_out, ref_lse = attention_fixed(q, k, v, Semantics(scale=64 ** -0.5, causal=causal,
                                                          window=(12, -1), softcap=2.0,
                                                          alibi_slopes=alibi, sinks=sinks))
    assert out.shape == (batch, seqlen_q, 8, 64) and lse.shape == (batch, 8, seqlen_q)
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("shape", [(2, 17, 17), (3, 1, 40)],
                         ids=lambda s: "B{}_Sq{}_Sk{}".format(*s))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fixed_length_head_dim_512(fa, device, generator, dtype, shape):
    """Gemma 4's global layers: head dim 512, prefill and decode-sized queries, with the window,
    softcap and sinks of the matrix above."""
    batch, seqlen_q, seqlen_k = shape
    q = random_tensor((batch, seqlen_q, 4, 512), dtype, generator, device=device)
    k = random_tensor((batch, seqlen_k, 2, 512), dtype, generator, device=device)
    v = random_tensor((batch, seqlen_k, 2, 512), dtype, generator, device=device)
    sinks = torch.randn(4, generator=generator).to(device)
    out, lse, _ = fa.flash_attn_func(q, k, v, causal=True, window_size=(12, -1), softcap=2.0,
                                     s_aux=sinks, return_attn_probs=True)
    ref_out, ref_lse = attention_fixed(q, k, v, Semantics(scale=512 ** -0.5, causal=True,
                                                          window=(12, -1), softcap=2.0,
                                                          sinks=sinks))
    assert out.shape == (batch, seqlen_q, 4, 512)
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fixed_length_strided_views_of_packed_qkv(fa, device, generator, dtype):
    """q, k, v as slices of one [B, S, 3, H, D] tensor, as a fused qkv projection gives them."""
    qkv = random_tensor((2, 33, 3, 4, 96), dtype, generator, device=device)
    q, k, v = qkv.unbind(dim=2)
    out = fa.flash_attn_func(q, k, v, causal=True)
    ref, _ = attention_fixed(q, k, v, Semantics(scale=96 ** -0.5, causal=True))
    assert_close(out, ref, dtype)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("softcapping", [1.0, 0.0, 4.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_legacy_entry_point_writes_only_its_rows(fa, device, generator, dtype, softcapping):
    """`out` is a view into a larger NaN-filled buffer: sequence rows are written, nothing else
    (not the padding rows past cu_seqlens_q[-1], not the buffer around the view)."""
    batch = varlen_batch([5, 0, 23], [5, 3, 31], heads=4, heads_kv=2, head_dim=64, dtype=dtype,
                         generator=generator, padding_rows=3, device=device)
    buffer = torch.full((batch.q.shape[0], 6, 80), math.nan, dtype=dtype, device=device)
    out = buffer[:, 1:5, 8:72]
    result = fa.flash_attention_varlen(out, batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                       batch.cu_seqlens_k, batch.max_seqlen_q,
                                       batch.max_seqlen_k, do_causal=True, scale=0.1,
                                       softcapping=softcapping)
    assert result is None
    softcap = 0.0 if softcapping == 1.0 else softcapping
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                              Semantics(scale=0.1, causal=True, softcap=softcap))
    rows = int(batch.cu_seqlens_q[-1])
    assert_close(out[:rows], ref[:rows], dtype)
    assert out[rows:].isnan().all(), "rows outside every sequence were written"
    outside = torch.ones_like(buffer, dtype=torch.bool)
    outside[:rows, 1:5, 8:72] = False
    assert buffer[outside].isnan().all(), "memory around the out view was written"


@pytest.mark.parametrize("dims", [(512, 512), (256, 512)], ids=lambda d: "d{}_dv{}".format(*d))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_legacy_entry_point_head_dim_512(fa, device, generator, dtype, dims):
    """The in-place call at the widest head dims writes the sequence rows and nothing else."""
    head_dim, head_dim_v = dims
    batch = varlen_batch([5, 1, 23], [5, 40, 31], heads=4, heads_kv=2, head_dim=head_dim,
                         head_dim_v=head_dim_v, dtype=dtype, generator=generator, padding_rows=2,
                         device=device)
    out = torch.full((batch.q.shape[0], 4, head_dim_v), math.nan, dtype=dtype, device=device)
    fa.flash_attention_varlen(out, batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                              batch.cu_seqlens_k, batch.max_seqlen_q, batch.max_seqlen_k,
                              do_causal=True, scale=0.05, softcapping=4.0)
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                              Semantics(scale=0.05, causal=True, softcap=4.0))
    rows = int(batch.cu_seqlens_q[-1])
    assert_close(out[:rows], ref[:rows], dtype)
    assert out[rows:].isnan().all(), "rows outside every sequence were written"
