"""The ops trace under torch.compile(fullgraph=True) and pass torch.library.opcheck, on the
variant's device."""

from __future__ import annotations

import pytest
import torch

from batches import random_tensor, varlen_batch
from reference import Semantics, assert_close, attention_fixed, attention_varlen

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's


def op(fa, name):
    ops_module = __import__(fa.__name__ + "._ops", fromlist=["ops"])
    return getattr(ops_module.ops, name).default


@pytest.mark.kernels_ci
def test_varlen_compiles_fullgraph(fa, device, generator):
    batch = varlen_batch([5, 12], [7, 12], heads=4, heads_kv=2, head_dim=64,
                         dtype=torch.bfloat16, generator=generator, device=device)
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="inductor")
    def attend(q, k, v, cu_q, cu_k, sinks):
        out, lse, _ = fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 12, 12, causal=True,
                                                s_aux=sinks, return_attn_probs=True)
        return out * 2, lse

    sinks = random_tensor((4,), torch.float32, generator, device=device)
    out, lse = attend(batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k, sinks)
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                              Semantics(scale=64 ** -0.5, causal=True, sinks=sinks))
    assert_close(out / 2, ref, torch.bfloat16)
    assert lse.shape == (4, 17)


@pytest.mark.kernels_ci
def test_fixed_and_legacy_compile_fullgraph(fa, device, generator):
    q = random_tensor((2, 9, 4, 32), torch.float32, generator, device=device)
    k = random_tensor((2, 11, 1, 32), torch.float32, generator, device=device)
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def attend(q, k, v):
        return fa.flash_attn_func(q, k, v, causal=True, window_size=(4, -1))

    out = attend(q, k, k)
    ref, _ = attention_fixed(q, k, k, Semantics(scale=32 ** -0.5, causal=True, window=(4, -1)))
    assert_close(out, ref, torch.float32)

    @torch.compile(fullgraph=True)
    def legacy(out, q, k, v, cu):
        fa.flash_attention_varlen(out, q, k, v, cu, cu, 9, 9, do_causal=True)
        return out

    cu = torch.tensor([0, 4, 9], dtype=torch.int32, device=device)
    out = torch.full((9, 4, 32), float("nan"), device=device)
    legacy(out, q[0], k[0, :9], k[0, :9], cu)
    ref, _ = attention_varlen(q[0], k[0, :9], k[0, :9], cu, cu, Semantics(scale=32 ** -0.5,
                                                                           causal=True))
    assert_close(out, ref, torch.float32)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("return_lse", [False, True])
def test_opcheck(fa, device, generator, return_lse):
    batch = varlen_batch([3, 6], [4, 6], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float16, generator=generator, device=device)
    common = (batch.cu_seqlens_q, batch.cu_seqlens_k, None, None,
              torch.rand(4, generator=generator).to(device),
              random_tensor((4,), torch.float32, generator, device=device),
              6, 6, 0.2, 0.0, -1, 0, return_lse)
    torch.library.opcheck(op(fa, "fwd"), (batch.q, batch.k, batch.v, *common))
    out = torch.empty(9, 4, 32, dtype=torch.float16, device=device)
    torch.library.opcheck(op(fa, "fwd_into"), (out, batch.q, batch.k, batch.v, *common))
    q = random_tensor((2, 5, 4, 32), torch.float32, generator, device=device)
    torch.library.opcheck(op(fa, "fwd"), (q, q, q, None, None, None, None, None, None, 0, 0,
                                          0.3, 2.0, 2, 1, return_lse))


@pytest.mark.kernels_ci
def test_ops_live_in_the_unique_namespace(fa):
    ops_module = __import__(fa.__name__ + "._ops", fromlist=["ops"])
    namespace = ops_module.add_op_namespace_prefix("fwd").split("::")[0]
    assert namespace.startswith("_metal_flash_sdpa_") and namespace == fa.__name__
    assert set(fa.__all__) >= {"flash_attn_varlen_func", "flash_attn_func",
                               "flash_attention_varlen"}


@pytest.mark.kernels_ci
def test_kvcache_decode_compiles_fullgraph(fa, device, generator):
    """A decode step (append one token in place, attend) traced as one graph."""
    q, k_cache, v_cache, k_new, v_new = (
        random_tensor(shape, torch.float32, generator, device=device)
        for shape in ((2, 1, 4, 32), (2, 16, 2, 32), (2, 16, 2, 32), (2, 1, 2, 32), (2, 1, 2, 32)))
    lengths = torch.tensor([5, 11], dtype=torch.int32, device=device)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    eager = fa.flash_attn_with_kvcache(q, expected_k, expected_v, k_new, v_new,
                                       cache_seqlens=lengths, causal=True)
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def step(q, k_cache, v_cache, k, v, lengths):
        return fa.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, cache_seqlens=lengths,
                                          causal=True)

    out = step(q, k_cache, v_cache, k_new, v_new, lengths)
    assert_close(out, eager.double(), torch.float32)
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
