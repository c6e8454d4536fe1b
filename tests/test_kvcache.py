"""flash_attn_with_kvcache: new tokens are appended into the cache in place, then attended with
the cache's earlier tokens; contiguous caches (with and without cache_batch_idx) and paged ones."""

from __future__ import annotations

import math

import pytest
import torch

from batches import random_tensor
from reference import Semantics, assert_close, assert_lse_close, attention_one_sequence

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: the kernel's inputs are on the `device` fixture's


def check(fa, device, generator, dtype, layout, s_new, seqlen_q, feature):
    batch, heads, heads_kv, dim, capacity = 3, 8, 2, 64, 48
    lengths = torch.tensor([0, 17, 40 - s_new], dtype=torch.int32)
    q = random_tensor((batch, seqlen_q, heads, dim), dtype, generator)
    k_new = random_tensor((batch, s_new, heads_kv, dim), dtype, generator) if s_new else None
    v_new = random_tensor((batch, s_new, heads_kv, dim), dtype, generator) if s_new else None
    # Every sequence's cached tokens, as the reference sees them.
    cached_k = [random_tensor((int(n), heads_kv, dim), dtype, generator) for n in lengths]
    cached_v = [random_tensor((int(n), heads_kv, dim), dtype, generator) for n in lengths]
    kwargs = {}
    if layout == "paged":
        page_size, pages_per_seq = 8, capacity // 8
        num_pages = batch * pages_per_seq + 3
        order = torch.randperm(num_pages, generator=generator)[: batch * pages_per_seq]
        table = order.view(batch, pages_per_seq).to(torch.int32)
        k_cache = torch.full((num_pages, page_size, heads_kv, dim), math.nan, dtype=dtype)
        v_cache = k_cache.clone()
        for b in range(batch):
            for t in range(int(lengths[b])):
                page, slot = int(table[b, t // page_size]), t % page_size
                k_cache[page, slot] = cached_k[b][t]
                v_cache[page, slot] = cached_v[b][t]
        kwargs["block_table"] = table
    else:
        rows = torch.tensor([2, 0, 3]) if layout == "batch_idx" else torch.arange(batch)
        k_cache = torch.full((4, capacity, heads_kv, dim), math.nan, dtype=dtype)
        v_cache = k_cache.clone()
        for b in range(batch):
            k_cache[rows[b], : int(lengths[b])] = cached_k[b]
            v_cache[rows[b], : int(lengths[b])] = cached_v[b]
        if layout == "batch_idx":
            kwargs["cache_batch_idx"] = rows.to(torch.int32)
    alibi = torch.rand(heads, generator=generator) if feature == "alibi" else None
    sinks = torch.randn(heads, generator=generator) if feature == "sinks" else None
    causal = feature != "full"
    # The kernel's inputs on the variant's device; the reference reads the CPU originals.
    on = lambda t: None if t is None else t.to(device)  # noqa: E731
    k_cache, v_cache = on(k_cache), on(v_cache)
    kwargs = {key: on(val) for key, val in kwargs.items()}
    untouched = k_cache.clone()
    out, lse = fa.flash_attn_with_kvcache(on(q), k_cache, v_cache, on(k_new), on(v_new),
                                          cache_seqlens=on(lengths), causal=causal,
                                          alibi_slopes=on(alibi), s_aux=on(sinks),
                                          return_softmax_lse=True, **kwargs)
    sem = Semantics(scale=dim ** -0.5, causal=causal, alibi_slopes=alibi, sinks=sinks)
    for b in range(batch):
        keys = torch.cat([cached_k[b], k_new[b]]) if s_new else cached_k[b]
        values = torch.cat([cached_v[b], v_new[b]]) if s_new else cached_v[b]
        ref_out, ref_lse = attention_one_sequence(q[b], keys, values, sem, b)
        assert_close(out[b], ref_out, dtype, what=f"sequence {b}")
        assert_lse_close(lse[b], ref_lse)
    # The cache holds the new tokens where they belong, and nothing else changed.
    if s_new:
        changed = (k_cache != untouched) & ~(k_cache.isnan() & untouched.isnan())
        assert int(changed.any(dim=(-1, -2)).sum()) <= batch * s_new
        if layout != "paged":
            rows = kwargs.get("cache_batch_idx", torch.arange(batch))
            for b in range(batch):
                start = int(lengths[b])
                assert torch.equal(k_cache[int(rows[b]), start:start + s_new].cpu(), k_new[b])
                assert torch.equal(v_cache[int(rows[b]), start:start + s_new].cpu(), v_new[b])


@pytest.mark.parametrize("feature", ["causal", "full", "alibi", "sinks"])
@pytest.mark.parametrize("layout", ["contiguous", "batch_idx", "paged"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_step(fa, device, generator, dtype, layout, feature):
    check(fa, device, generator, dtype, layout, s_new=1, seqlen_q=1, feature=feature)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("layout", ["contiguous", "paged"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_chunked_prefill(fa, device, generator, dtype, layout):
    check(fa, device, generator, dtype, layout, s_new=5, seqlen_q=5, feature="causal")


@pytest.mark.parametrize("layout", ["contiguous", "paged"])
def test_attend_without_appending(fa, device, generator, layout):
    check(fa, device, generator, torch.float32, layout, s_new=0, seqlen_q=2, feature="causal")


@pytest.mark.kernels_ci
def test_append_past_capacity_is_rejected(fa, device, generator):
    q = torch.randn(1, 1, 2, 32, device=device)
    cache = torch.zeros(1, 4, 1, 32, device=device)
    new = torch.randn(1, 2, 1, 32, device=device)
    lengths = torch.tensor([3], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="cache_seqlens"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), new, new, cache_seqlens=lengths)
