"""Every size of zero (batch, query heads, kv heads, head dims, sequence lengths, pages, page
size) gives a clean empty result or an error naming the argument, on every entry point and the
backward; never a signal (zero query heads used to divide by a GQA group size of 0; a page size
of 0 would divide in the Metal kernels)."""

from __future__ import annotations

import math

import pytest
import torch

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's
H, HKV, D = 4, 2, 16


def rand(device, *shape):
    return torch.randn(shape, device=device)


def cu(device, *values):
    return torch.tensor(values, dtype=torch.int32, device=device)


def fixed(fa, device, b=2, sq=3, sk=4, h=H, hkv=HKV, d=D, dv=D):
    return fa.flash_attn_func(rand(device, b, sq, h, d), rand(device, b, sk, hkv, d),
                              rand(device, b, sk, hkv, dv), causal=True, return_attn_probs=True)


def varlen(fa, device, rows_q=5, rows_k=5, cu_q=(0, 2, 5), cu_k=(0, 2, 5), h=H, hkv=HKV, d=D):
    lengths_q = [b - a for a, b in zip(cu_q, cu_q[1:])]
    lengths_k = [b - a for a, b in zip(cu_k, cu_k[1:])]
    return fa.flash_attn_varlen_func(rand(device, rows_q, h, d), rand(device, rows_k, hkv, d),
                                     rand(device, rows_k, hkv, d), cu(device, *cu_q),
                                     cu(device, *cu_k), max(lengths_q, default=0),
                                     max(lengths_k, default=0), return_attn_probs=True)


def legacy(fa, device, h=H, rows=5):
    out = torch.full((rows, h, D), math.nan, device=device)
    fa.flash_attention_varlen(out, rand(device, rows, h, D), rand(device, rows, HKV, D),
                              rand(device, rows, HKV, D), cu(device, 0, 2, rows),
                              cu(device, 0, 2, rows), rows - 2, rows - 2)
    return out, None


def kvcache(fa, device, b=2, h=H, rows=2, slots=8, length=3, s_new=1, pages=None, page_size=None):
    kwargs = {}
    if pages is not None:
        cache_shape = (pages, page_size, HKV, D)
        kwargs["block_table"] = torch.zeros(b, 0 if pages == 0 else 2, dtype=torch.int32,
                                            device=device)
    else:
        cache_shape = (rows, slots, HKV, D)
    new = (rand(device, b, s_new, HKV, D), rand(device, b, s_new, HKV, D)) if s_new else (None,
                                                                                       None)
    return fa.flash_attn_with_kvcache(rand(device, b, 1, h, D), rand(device, *cache_shape),
                                      rand(device, *cache_shape), *new, cache_seqlens=length,
                                      return_softmax_lse=True, **kwargs)


def paged(fa, device, pages=3, page_size=4, max_pages=2, cu_k=(0, 1, 3)):
    k = rand(device, pages, page_size, HKV, D)
    table = torch.zeros(2, max_pages, dtype=torch.int32, device=device)
    return fa.flash_attn_varlen_func(rand(device, 5, H, D), k, k.clone(), cu(device, 0, 2, 5),
                                     cu(device, *cu_k), 3, max(cu_k), block_table=table,
                                     return_attn_probs=True)


def backward(fa, device, b=2, sq=3, sk=4, h=H):
    q, k, v = (t.requires_grad_() for t in (rand(device, b, sq, h, D), rand(device, b, sk, HKV, D),
                                            rand(device, b, sk, HKV, D)))
    fa.flash_attn_func(q, k, v, causal=True).sum().backward()
    return q.grad, torch.cat([k.grad, v.grad])


# name -> (call, expected: a shape of the first result, or (exception, words in its message))
CASES = {
    "fixed_zero_batch": (lambda fa, d: fixed(fa, d, b=0), (0, 3, H, D)),
    "fixed_zero_heads_q": (lambda fa, d: fixed(fa, d, h=0), (2, 3, 0, D)),
    "fixed_zero_heads_kv": (lambda fa, d: fixed(fa, d, h=0, hkv=0), (ValueError, ["heads"])),
    "fixed_zero_head_dim": (lambda fa, d: fixed(fa, d, d=0, dv=0), (ValueError, ["head_dim"])),
    "fixed_zero_head_dim_v": (lambda fa, d: fixed(fa, d, dv=0), (ValueError, ["head_dim of v"])),
    "fixed_zero_seqlen_q": (lambda fa, d: fixed(fa, d, sq=0), (2, 0, H, D)),
    "fixed_zero_seqlen_k": (lambda fa, d: fixed(fa, d, sk=0), (2, 3, H, D)),
    "varlen_zero_batch": (lambda fa, d: varlen(fa, d, rows_q=0, rows_k=0, cu_q=(0,), cu_k=(0,)),
                          (0, H, D)),
    "varlen_zero_heads_q": (lambda fa, d: varlen(fa, d, h=0), (5, 0, D)),
    "varlen_zero_heads_kv": (lambda fa, d: varlen(fa, d, hkv=0), (ValueError, ["heads"])),
    "varlen_zero_head_dim": (lambda fa, d: varlen(fa, d, d=0), (ValueError, ["head_dim"])),
    "varlen_zero_rows": (lambda fa, d: varlen(fa, d, rows_q=0, rows_k=0, cu_q=(0, 0, 0),
                                              cu_k=(0, 0, 0)), (0, H, D)),
    "varlen_empty_sequences": (lambda fa, d: varlen(fa, d, cu_q=(0, 0, 5), cu_k=(0, 2, 2)),
                               (5, H, D)),
    "legacy_zero_heads_q": (lambda fa, d: legacy(fa, d, h=0), (5, 0, D)),
    "kvcache_zero_batch": (lambda fa, d: kvcache(fa, d, b=0), (0, 1, H, D)),
    "kvcache_zero_heads_q": (lambda fa, d: kvcache(fa, d, h=0), (2, 1, 0, D)),
    "kvcache_zero_slots": (lambda fa, d: kvcache(fa, d, slots=0, length=0, s_new=0),
                           (ValueError, ["k_cache", "slot"])),
    "kvcache_zero_pages": (lambda fa, d: kvcache(fa, d, pages=0, page_size=8, length=0, s_new=0),
                           (2, 1, H, D)),
    "kvcache_zero_page_size": (lambda fa, d: kvcache(fa, d, pages=3, page_size=0, length=0,
                                                     s_new=0), (ValueError, ["k_cache", "page"])),
    "varlen_paged_zero_page_size": (lambda fa, d: paged(fa, d, page_size=0),
                                    (ValueError, ["page_size"])),
    "varlen_paged_zero_pages": (lambda fa, d: paged(fa, d, pages=0, max_pages=0, cu_k=(0, 0, 0)),
                                (5, H, D)),
    "backward_zero_heads_q": (lambda fa, d: backward(fa, d, h=0), (2, 3, 0, D)),
    "backward_zero_batch": (lambda fa, d: backward(fa, d, b=0), (0, 3, H, D)),
    "backward_zero_seqlen_k": (lambda fa, d: backward(fa, d, sk=0), (2, 3, H, D)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_size(fa, device, name):
    call, expected = CASES[name]
    if isinstance(expected[0], type) and issubclass(expected[0], Exception):
        error, words = expected
        with pytest.raises(error) as caught:
            call(fa, device)
        for word in words:
            assert word in str(caught.value), f"{word!r} not in {caught.value}"
        return
    first, second = call(fa, device)[:2]
    assert tuple(first.shape) == expected
    # Whatever exists of the results is a number: zeros where no key is visible (lse -inf).
    assert not first.isnan().any()
    if second is not None:
        assert not second.isnan().any()
    if name in ("fixed_zero_seqlen_k", "varlen_empty_sequences", "varlen_paged_zero_pages"):
        assert torch.equal(first, torch.zeros_like(first))
        assert torch.isneginf(second).all()
    if name == "backward_zero_heads_q":
        assert torch.equal(second, torch.zeros_like(second))  # no query, no key gradient
