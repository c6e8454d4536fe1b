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


def check(fa, device, generator, dtype, layout, s_new, seqlen_q, feature, dim=64, dim_v=None,
          heads=8, heads_kv=2):
    batch, capacity = 3, 48
    dim_v = dim if dim_v is None else dim_v
    lengths = torch.tensor([0, 17, 40 - s_new], dtype=torch.int32)
    q = random_tensor((batch, seqlen_q, heads, dim), dtype, generator)
    k_new = random_tensor((batch, s_new, heads_kv, dim), dtype, generator) if s_new else None
    v_new = random_tensor((batch, s_new, heads_kv, dim_v), dtype, generator) if s_new else None
    # Every sequence's cached tokens, as the reference sees them.
    cached_k = [random_tensor((int(n), heads_kv, dim), dtype, generator) for n in lengths]
    cached_v = [random_tensor((int(n), heads_kv, dim_v), dtype, generator) for n in lengths]
    kwargs = {}
    if layout == "paged":
        page_size, pages_per_seq = 8, capacity // 8
        num_pages = batch * pages_per_seq + 3
        order = torch.randperm(num_pages, generator=generator)[: batch * pages_per_seq]
        table = order.view(batch, pages_per_seq).to(torch.int32)
        k_cache = torch.full((num_pages, page_size, heads_kv, dim), math.nan, dtype=dtype)
        v_cache = torch.full((num_pages, page_size, heads_kv, dim_v), math.nan, dtype=dtype)
        for b in range(batch):
            for t in range(int(lengths[b])):
                page, slot = int(table[b, t // page_size]), t % page_size
                k_cache[page, slot] = cached_k[b][t]
                v_cache[page, slot] = cached_v[b][t]
        kwargs["block_table"] = table
    else:
        rows = torch.tensor([2, 0, 3]) if layout == "batch_idx" else torch.arange(batch)
        k_cache = torch.full((4, capacity, heads_kv, dim), math.nan, dtype=dtype)
        v_cache = torch.full((4, capacity, heads_kv, dim_v), math.nan, dtype=dtype)
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
    untouched_k, untouched_v = k_cache.clone(), v_cache.clone()
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
    # The caches hold the new tokens in their slots (a page of the block table, or a row of the
    # cache), and nothing else changed: every other entry, NaN filler included, bit for bit.
    want_k, want_v = untouched_k.cpu(), untouched_v.cpu()
    for b in range(batch):
        for i in range(s_new):
            t = int(lengths[b]) + i
            if layout == "paged":
                page_size = k_cache.shape[1]
                where = (int(kwargs["block_table"][b, t // page_size]), t % page_size)
            else:
                where = (int(kwargs.get("cache_batch_idx", torch.arange(batch))[b]), t)
            want_k[where] = k_new[b, i]
            want_v[where] = v_new[b, i]
    for name, got, want in (("k_cache", k_cache, want_k), ("v_cache", v_cache, want_v)):
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m: f"{name} after the append: {m}")


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


# The Metal decode's MMA path (head-dim tiles 96 and 128, 16-bit, 4 to 8 (head, row) pairs per
# KV head: GQA 4 and 8 of one row, GQA 4 of two rows) and its shuffle path beside it (GQA 2).
@pytest.mark.parametrize("heads_kv,seqlen_q", [(1, 1), (2, 1), (2, 2), (4, 1)],
                         ids=["gqa8", "gqa4", "gqa4-rows2", "gqa2"])
@pytest.mark.parametrize("dim", [96, 128])
@pytest.mark.parametrize("feature", ["causal", "alibi", "sinks"])
@pytest.mark.parametrize("layout", ["contiguous", "paged"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_decode_step_gqa_groups(fa, device, generator, dtype, layout, feature, dim, heads_kv, seqlen_q):
    check(fa, device, generator, dtype, layout, s_new=seqlen_q, seqlen_q=seqlen_q, feature=feature,
          dim=dim, heads=8, heads_kv=heads_kv)


# (step, q/k head dim, v head dim): a decode step appends 1 token, a chunk 5.
WIDE_STEPS = [("decode", 512, 512), ("chunk", 512, 512), ("decode", 512, 256),
              ("chunk", 256, 512)]


@pytest.mark.parametrize("step,dim,dim_v", WIDE_STEPS,
                         ids=["{}-d{}_dv{}".format(*c) for c in WIDE_STEPS])
@pytest.mark.parametrize("layout", ["contiguous", "paged"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_head_dim_512(fa, device, generator, dtype, layout, step, dim, dim_v):
    """Gemma 4's global layers (head dim 512) decoding and prefilling a chunk from a cache, and
    V's head dim differing from q/k's either way."""
    s_new = 1 if step == "decode" else 5
    check(fa, device, generator, dtype, layout, s_new=s_new, seqlen_q=s_new, feature="sinks",
          dim=dim, dim_v=dim_v)


@pytest.mark.parametrize("layout", ["contiguous", "paged"])
def test_attend_without_appending(fa, device, generator, layout):
    check(fa, device, generator, torch.float32, layout, s_new=0, seqlen_q=2, feature="causal")


@pytest.mark.kernels_ci
def test_append_past_capacity_is_rejected(fa, device, generator):
    if device.type != "cpu":
        pytest.skip("cache_seqlens values are checked only where the host reads them (cpu)")
    q = torch.randn(1, 1, 2, 32, device=device)
    cache = torch.zeros(1, 4, 1, 32, device=device)
    new = torch.randn(1, 2, 1, 32, device=device)
    lengths = torch.tensor([3], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="cache_seqlens"):
        fa.flash_attn_with_kvcache(q, cache, cache.clone(), new, new, cache_seqlens=lengths)


def refused_call(device, generator, layout):
    """A good decode call (fp16, 2 sequences, 4/2 heads, d 32) whose tensors a case then breaks."""
    batch, heads, heads_kv, dim = 2, 4, 2, 32
    if layout == "paged":
        cache_shape, table = (5, 4, heads_kv, dim), torch.tensor([[3, 0], [1, 4]], dtype=torch.int32)
    else:
        cache_shape, table = (batch, 8, heads_kv, dim), None
    args = dict(
        q=random_tensor((batch, 2, heads, dim), torch.float16, generator),
        k_cache=random_tensor(cache_shape, torch.float16, generator),
        v_cache=random_tensor(cache_shape, torch.float16, generator),
        k=random_tensor((batch, 2, heads_kv, dim), torch.float16, generator),
        v=random_tensor((batch, 2, heads_kv, dim), torch.float16, generator),
        cache_seqlens=torch.tensor([3, 5], dtype=torch.int32), block_table=table)
    return {name: t.to(device) if isinstance(t, torch.Tensor) else t for name, t in args.items()}


# name -> (how to break a good call, exception type, words the message must contain). Each is
# refused before anything is written: the checks of the new tokens, and the op's own.
REFUSED = {
    "q_dtype": (lambda a: dict(q=a["q"].float()), ValueError, ["dtype"]),
    "q_head_dim": (lambda a: dict(q=a["q"][..., :16]), ValueError, ["head_dim"]),
    "q_heads_not_multiple": (lambda a: dict(q=a["q"][:, :, :3]), ValueError, ["heads"]),
    "k_dtype": (lambda a: dict(k=a["k"].float()), ValueError, ["k", "dtype"]),
    "v_head_dim": (lambda a: dict(v=a["v"][..., :16]), ValueError, ["v"]),
    "v_fewer_tokens": (lambda a: dict(v=a["v"][:, :1]), ValueError, ["k and v"]),
    "k_batch": (lambda a: dict(k=a["k"][:1]), ValueError, ["k", "batch"]),
    "k_device": (lambda a: dict(k=a["k"].to("meta")), RuntimeError, ["k", "device"]),
    "alibi_shape": (lambda a: dict(alibi_slopes=torch.ones(3, device=a["q"].device)), ValueError,
                    ["alibi_slopes"]),
    "alibi_dtype": (lambda a: dict(alibi_slopes=torch.ones(4, dtype=torch.float16,
                                                          device=a["q"].device)),
                    ValueError, ["alibi_slopes", "float32"]),
    "alibi_device": (lambda a: dict(alibi_slopes=torch.ones(4, device="meta")), RuntimeError,
                     ["alibi_slopes", "device"]),
    "s_aux_shape": (lambda a: dict(s_aux=torch.ones(2, 2, device=a["q"].device)), ValueError,
                    ["s_aux"]),
    "s_aux_integer": (lambda a: dict(s_aux=torch.ones(4, dtype=torch.int32, device=a["q"].device)),
                      ValueError, ["s_aux"]),
    "cache_seqlens_past_capacity": (
        lambda a: dict(cache_seqlens=torch.tensor([3, 7], dtype=torch.int32,
                                                  device=a["q"].device)),
        ValueError, ["cache_seqlens"]),
    "cache_seqlens_negative": (
        lambda a: dict(cache_seqlens=torch.tensor([-1, 3], dtype=torch.int32,
                                                  device=a["q"].device)),
        ValueError, ["cache_seqlens"]),
    "cache_seqlens_int64": (lambda a: dict(cache_seqlens=a["cache_seqlens"].long()), ValueError,
                            ["cache_seqlens", "int32"]),
    "softcap": (lambda a: dict(softcap=1e300), ValueError, ["softcap"]),
    "softmax_scale": (lambda a: dict(softmax_scale=math.inf), ValueError, ["softmax_scale"]),
    "window_size": (lambda a: dict(window_size=(2**32 + 5, -1)), ValueError, ["window_size"]),
}
# Only a paged cache has a block table to get wrong.
REFUSED_PAGED = {
    "block_table_page_out_of_range": (
        lambda a: dict(block_table=torch.tensor([[3, 0], [1, 5]], dtype=torch.int32,
                                                device=a["q"].device)),
        ValueError, ["block_table", "num_pages"]),
    "v_cache_fewer_pages": (lambda a: dict(v_cache=a["v_cache"][:4]), ValueError, ["v"]),
}
# Values only the host can check: on a GPU they are not read back (that would stall every call).
VALUES_CHECKED_ON_HOST_ONLY = {"cache_seqlens_past_capacity", "cache_seqlens_negative",
                               "block_table_page_out_of_range"}
CASES = [(c, "contiguous") for c in sorted(REFUSED)] + \
        [(c, "paged") for c in sorted({**REFUSED, **REFUSED_PAGED})]


def check_refused_call_leaves_the_cache_untouched(fa, device, generator, refused, host_only,
                                                  case, layout):
    """docs/API.md: a call refused for any argument raises naming it, and k_cache, v_cache and
    cache_seqlens are bitwise as they were (every check runs before the new tokens are written).
    refused[case] = (make_bad(args) -> overrides, error type, words the message names)."""
    if device.type != "cpu" and case in host_only:
        pytest.skip(f"{case}: values are checked only where the host reads them (cpu)")
    make_bad, error, words = refused[case]
    args = refused_call(device, generator, layout)
    args.update(make_bad(args))
    before = {name: args[name].clone() for name in ("k_cache", "v_cache", "cache_seqlens")}
    with pytest.raises(error) as info:
        fa.flash_attn_with_kvcache(**args)
    for word in words:
        assert word in str(info.value), f"{word!r} not in error message: {info.value}"
    for name, tensor in before.items():
        assert torch.equal(args[name], tensor), f"{name} was modified by a refused call"


@pytest.mark.kernels_ci
@pytest.mark.parametrize("case,layout", CASES, ids=[f"{c}-{l}" for c, l in CASES])
def test_refused_call_leaves_the_cache_untouched(fa, device, generator, case, layout):
    check_refused_call_leaves_the_cache_untouched(
        fa, device, generator, {**REFUSED, **REFUSED_PAGED}, VALUES_CHECKED_ON_HOST_ONLY, case,
        layout)
