"""Integer tensors of any strides (docs/API.md, "Integer tensors"): offsets, cache_seqlens,
block_table and cache_batch_idx given as strided or expanded views are read by their values, on
every entry point, through the op called directly and under torch.compile. The views put other
values between (or share) the entries, so that a kernel reading them as dense arrays gets a
wrong answer (and reads past the storage)."""

from __future__ import annotations

import math

import pytest
import torch

from batches import paged_cache, random_tensor, varlen_batch
from reference import Semantics, assert_close, assert_lse_close, attention_one_sequence, \
    attention_varlen

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's
JUNK = -77  # what lies between the entries of a strided view


def every_other(t: torch.Tensor) -> torch.Tensor:
    """A view with t's values in its even entries of the last dim and JUNK between them."""
    wide = torch.full((*t.shape[:-1], 2 * t.shape[-1]), JUNK, dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    view = wide[..., ::2]
    assert not view.is_contiguous() and torch.equal(view, t)
    return view


def expanded(value: int, batch: int, device) -> torch.Tensor:
    """torch.tensor([value]).expand(batch): one int32 entry, stride 0 (a common idiom)."""
    view = torch.tensor([value], dtype=torch.int32, device=device).expand(batch)
    assert view.stride() == (0,)
    return view


def op(fa, name):
    ops_module = __import__(fa.__name__ + "._ops", fromlist=["ops"])
    return getattr(ops_module.ops, name).default


def varlen_case(generator, device):
    batch = varlen_batch([3, 7, 5], [6, 2, 9], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator, device=device)
    sinks = random_tensor((4,), torch.float32, generator, device=device)
    return batch, sinks, Semantics(scale=32 ** -0.5, causal=True, sinks=sinks)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_varlen_strided_offsets_forward_and_backward(fa, device, generator, compiled):
    batch, sinks, sem = varlen_case(generator, device)
    q, k, v = (t.clone().requires_grad_() for t in (batch.q, batch.k, batch.v))
    attend = fa.flash_attn_varlen_func
    if compiled:
        torch._dynamo.reset()
        attend = torch.compile(attend, fullgraph=True)
    out, lse, _ = attend(q, k, v, every_other(batch.cu_seqlens_q), every_other(batch.cu_seqlens_k),
                         batch.max_seqlen_q, batch.max_seqlen_k, causal=True,
                         s_aux=every_other(sinks), return_attn_probs=True)
    grad_out = random_tensor(out.shape, torch.float32, generator, device=device)
    out.backward(grad_out)

    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    ref, ref_lse = attention_varlen(q64, k64, v64, batch.cu_seqlens_q.cpu(),
                                    batch.cu_seqlens_k.cpu(), sem)
    ref.backward(grad_out.cpu().double())
    assert_close(out.detach(), ref.detach(), torch.float32)
    assert_lse_close(lse, ref_lse.detach())
    for name, t, t64 in (("dq", q, q64), ("dk", k, k64), ("dv", v, v64)):
        assert_close(t.grad, t64.grad, torch.float32, what=name)


def test_op_called_directly_with_strided_offsets(fa, device, generator):
    """The C++ op itself, bypassing the Python layer."""
    batch, sinks, sem = varlen_case(generator, device)
    out, lse = op(fa, "fwd")(batch.q, batch.k, batch.v, every_other(batch.cu_seqlens_q),
                             every_other(batch.cu_seqlens_k), None, None, None,
                             every_other(sinks), batch.max_seqlen_q, batch.max_seqlen_k,
                             sem.scale, 0.0, -1, 0, True)
    ref, ref_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q.cpu(),
                                    batch.cu_seqlens_k.cpu(), sem)
    assert_close(out, ref, torch.float32)
    assert_lse_close(lse, ref_lse)
    legacy_out = torch.full_like(batch.q, math.nan)
    op(fa, "fwd_into")(legacy_out, batch.q, batch.k, batch.v, every_other(batch.cu_seqlens_q),
                       every_other(batch.cu_seqlens_k), None, None, None, None,
                       batch.max_seqlen_q, batch.max_seqlen_k, sem.scale, 0.0, -1, 0, False)
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q.cpu(),
                              batch.cu_seqlens_k.cpu(), Semantics(scale=sem.scale, causal=True))
    assert_close(legacy_out, ref, torch.float32)


def test_paged_strided_block_table_and_offsets(fa, device, generator):
    batch = varlen_batch([3, 7, 5], [6, 2, 19], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator, device=device)
    k_pages, v_pages, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, 4, generator)
    table = table.to(device)
    out = fa.flash_attn_varlen_func(batch.q, k_pages.to(device), v_pages.to(device),
                                    every_other(batch.cu_seqlens_q),
                                    every_other(batch.cu_seqlens_k), batch.max_seqlen_q,
                                    batch.max_seqlen_k, block_table=every_other(table))
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q.cpu(),
                              batch.cu_seqlens_k.cpu(), Semantics(scale=32 ** -0.5))
    assert_close(out, ref, torch.float32)


def test_legacy_strided_offsets(fa, device, generator):
    batch, _, _ = varlen_case(generator, device)
    out = torch.full_like(batch.q, math.nan)
    fa.flash_attention_varlen(out, batch.q, batch.k, batch.v, every_other(batch.cu_seqlens_q),
                              every_other(batch.cu_seqlens_k), batch.max_seqlen_q,
                              batch.max_seqlen_k, do_causal=True)
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q.cpu(),
                              batch.cu_seqlens_k.cpu(), Semantics(scale=32 ** -0.5, causal=True))
    assert_close(out, ref, torch.float32)


@pytest.mark.parametrize("s_new", [0, 2], ids=["no_append", "append"])
@pytest.mark.parametrize("layout", ["contiguous", "paged"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_kvcache_expanded_lengths_and_strided_indices(fa, device, generator, layout, compiled,
                                                      s_new):
    """cache_seqlens = tensor([5]).expand(B); cache_batch_idx / block_table strided views. The new
    tokens (if any) land at position 5 of each sequence's own rows or pages, and the output
    attends to the keys there."""
    batch, heads, heads_kv, dim, length = 3, 4, 2, 32, 5
    q = random_tensor((batch, 2, heads, dim), torch.float32, generator, device=device)
    k_new, v_new = (random_tensor((batch, s_new, heads_kv, dim), torch.float32, generator,
                                  device=device) if s_new else None for _ in range(2))
    if layout == "contiguous":
        rows = 4
        k_cache = random_tensor((rows, 8, heads_kv, dim), torch.float32, generator, device=device)
        v_cache = random_tensor((rows, 8, heads_kv, dim), torch.float32, generator, device=device)
        index = torch.tensor([2, 0, 3], dtype=torch.int32, device=device)
        kwargs = dict(cache_batch_idx=every_other(index))
        slots_of = lambda b: [(int(index[b]), t) for t in range(length + s_new)]
    else:
        page_size, pages = 4, 2
        k_cache = random_tensor((8, page_size, heads_kv, dim), torch.float32, generator,
                                device=device)
        v_cache = random_tensor((8, page_size, heads_kv, dim), torch.float32, generator,
                                device=device)
        table = torch.tensor([[5, 1], [0, 7], [3, 6]], dtype=torch.int32, device=device)
        kwargs = dict(block_table=every_other(table))
        slots_of = lambda b: [(int(table[b, t // page_size]), t % page_size)
                              for t in range(length + s_new)]
    k_before, v_before = k_cache.clone(), v_cache.clone()
    attend = fa.flash_attn_with_kvcache
    if compiled:
        torch._dynamo.reset()
        attend = torch.compile(attend, fullgraph=True)
    out = attend(q, k_cache, v_cache, k_new, v_new, cache_seqlens=expanded(length, batch, device),
                 causal=True, **kwargs)

    expected_k, expected_v = k_before.clone(), v_before.clone()
    for b in range(batch):
        for t, (row, slot) in enumerate(slots_of(b)[length:] if s_new else []):
            expected_k[row, slot] = k_new[b, t]
            expected_v[row, slot] = v_new[b, t]
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
    for b in range(batch):
        keys = torch.stack([k_cache[row, slot] for row, slot in slots_of(b)])
        values = torch.stack([v_cache[row, slot] for row, slot in slots_of(b)])
        ref, _ = attention_one_sequence(q[b], keys, values,
                                        Semantics(scale=dim ** -0.5, causal=True), b)
        assert_close(out[b], ref, torch.float32, what=f"out of sequence {b}")
