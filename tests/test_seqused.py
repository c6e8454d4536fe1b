"""flash-attn 3's seqused_q / seqused_k on flash_attn_varlen_func: each sequence owns the slot
cu_seqlens[b]..cu_seqlens[b + 1] of the packed rows, and only its first seqused[b] rows count.
The rest of a query slot belongs to no sequence: zeros in out, -inf in lse, zero gradients (the
unused key rows get zero gradients too). Forward (prefill and decode kernels) and backward, against
the float64 reference run on the used rows alone."""

from __future__ import annotations

import math

import pytest
import torch

from batches import cumulative, random_tensor
from reference import Semantics, assert_close, assert_lse_close, attention_one_sequence
from test_backward import check_gradients, leaf

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: the kernel's inputs are on the `device` fixture's


def reference_used(q, k, v, cu_q, cu_k, used_q, used_k, sem, dtype=torch.float64):
    """The reference over each sequence's used rows; every other row of q: 0, lse -inf."""
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[-1], dtype=dtype)
    lse = torch.full((q.shape[1], q.shape[0]), -math.inf, dtype=dtype)
    for b in range(len(used_q)):
        q0, k0 = int(cu_q[b]), int(cu_k[b])
        q1, k1 = q0 + int(used_q[b]), k0 + int(used_k[b])
        if q1 > q0:
            o, l = attention_one_sequence(q[q0:q1], k[k0:k1], v[k0:k1], sem, b, dtype)
            out = torch.cat([out[:q0], o.to(dtype), out[q1:]])
            lse = torch.cat([lse[:, :q0], l.to(dtype), lse[:, q1:]], dim=1)
    return out, lse


def dirty_allocator(shape, dtype, device):
    """Leaves a freed NaN-filled block of `shape` behind, so that an output allocated next is
    likely to start as NaN rather than as fresh zero pages (rows nobody writes then show)."""
    torch.full(shape, math.nan, dtype=dtype, device=device)


CASES = {
    # slots (q, k), used (q, k): an unused tail, a sequence using nothing, one using its whole
    # slot, one whose queries see no key; rows past the last slot too (padding).
    "prefill": ([5, 0, 40, 7], [9, 3, 50, 7], [3, 0, 40, 0], [9, 0, 17, 5]),
    "decode": ([4, 6, 1, 2], [30, 12, 8, 0], [1, 6, 1, 2], [29, 12, 0, 0]),
}


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("causal", [False, True])
def test_forward(fa, device, generator, dtype, case, causal):
    slots_q, slots_k, used_q, used_k = CASES[case]
    heads, heads_kv, d, padding = 4, 2, 64, 3
    cu_q, cu_k = cumulative(slots_q), cumulative(slots_k)
    q = random_tensor((sum(slots_q) + padding, heads, d), dtype, generator)
    k = random_tensor((sum(slots_k), heads_kv, d), dtype, generator)
    v = random_tensor((sum(slots_k), heads_kv, d), dtype, generator)
    sinks = torch.randn(heads, generator=generator)
    uq, uk = torch.tensor(used_q, dtype=torch.int32), torch.tensor(used_k, dtype=torch.int32)
    on = lambda t: t.to(device)  # noqa: E731
    dirty_allocator((q.shape[0], heads, d), dtype, device)
    out, lse, _ = fa.flash_attn_varlen_func(
        on(q), on(k), on(v), on(cu_q), on(cu_k), max(slots_q), max(slots_k), causal=causal,
        s_aux=on(sinks), return_attn_probs=True, seqused_q=on(uq), seqused_k=on(uk))
    sem = Semantics(scale=d ** -0.5, causal=causal, sinks=sinks)
    ref_out, ref_lse = reference_used(q, k, v, cu_q, cu_k, uq, uk, sem)
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("dtype", DTYPES)
def test_seqused_k_alone_and_window(fa, device, generator, dtype):
    # Only the keys' slots are cut; a sliding window aligned to the used keys (bottom-right).
    slots_q, slots_k, used_k = [6, 9], [20, 9], [11, 4]
    cu_q, cu_k = cumulative(slots_q), cumulative(slots_k)
    q = random_tensor((sum(slots_q), 4, 32), dtype, generator)
    k = random_tensor((sum(slots_k), 4, 32), dtype, generator)
    v = random_tensor((sum(slots_k), 4, 32), dtype, generator)
    uk = torch.tensor(used_k, dtype=torch.int32)
    out = fa.flash_attn_varlen_func(q.to(device), k.to(device), v.to(device), cu_q.to(device),
                                    cu_k.to(device), 9, 20, window_size=(3, 1),
                                    seqused_k=uk.to(device))
    sem = Semantics(scale=32 ** -0.5, window=(3, 1))
    ref_out, _ = reference_used(q, k, v, cu_q, cu_k, torch.tensor(slots_q), uk, sem)
    assert_close(out, ref_out, dtype)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward(fa, device, generator, dtype):
    slots_q, slots_k, used_q, used_k = [5, 3, 24], [9, 4, 30], [3, 0, 20], [9, 2, 13]
    cu_q, cu_k = cumulative(slots_q, device=device), cumulative(slots_k, device=device)
    uq = torch.tensor(used_q, dtype=torch.int32, device=device)
    uk = torch.tensor(used_k, dtype=torch.int32, device=device)
    q = random_tensor((sum(slots_q), 4, 32), dtype, generator, device=device)
    k = random_tensor((sum(slots_k), 2, 32), dtype, generator, device=device)
    v = random_tensor((sum(slots_k), 2, 32), dtype, generator, device=device)
    sem = Semantics(scale=32 ** -0.5, causal=True)

    def ours(q, k, v):
        return fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 24, 30, causal=True, seqused_q=uq,
                                         seqused_k=uk)

    def reference(q, k, v, dtype=torch.float64):
        return reference_used(q, k, v, cu_q.cpu(), cu_k.cpu(), used_q, used_k, sem, dtype)[0]

    dq, dk, dv = check_gradients(
        ours, reference, lambda q, k, v: reference(q, k, v, q.dtype).to(q.device),
        [leaf(q), leaf(k), leaf(v)], dtype, names=("q", "k", "v"))
    for b in range(3):  # rows past the used ones: exactly zero
        q_unused = slice(int(cu_q[b]) + used_q[b], int(cu_q[b + 1]))
        k_unused = slice(int(cu_k[b]) + used_k[b], int(cu_k[b + 1]))
        assert not dq[q_unused].any() and not dk[k_unused].any() and not dv[k_unused].any()


BAD = {
    "negative": (lambda u: u.fill_(-1), ValueError, "seqused_q"),
    "past_its_slot": (lambda u: u.fill_(6), ValueError, "seqused_q"),
    "int64": (lambda u: u.long(), ValueError, "seqused_q must be int32"),
    "wrong_length": (lambda u: u[:1], ValueError, "seqused_q must have 2 entries"),
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_bad_seqused_refused_by_name(fa, device, bad):
    change, error, message = BAD[bad]
    q = torch.zeros(10, 2, 16, device=device)
    cu = torch.tensor([0, 5, 10], dtype=torch.int32, device=device)
    used = change(torch.full((2,), 2, dtype=torch.int32, device=device))
    if device.type != "cpu" and bad in ("negative", "past_its_slot"):
        pytest.skip("values are checked only where the host reads them (cpu)")
    for side in ("seqused_q", "seqused_k"):
        with pytest.raises(error, match=message.replace("seqused_q", side)):
            fa.flash_attn_varlen_func(q, q, q, cu, cu, 5, 5, **{side: used})


def test_seqused_q_needs_cu_seqlens_q(fa, device):
    q = torch.zeros(1, 4, 2, 16, device=device)
    with pytest.raises(ValueError, match="seqused_q needs cu_seqlens_q"):
        fa._ops.ops.fwd(q, q, q, None, None, None, None, None, None, 4, 4, 0.25, 0.0, -1, -1,
                        False, torch.tensor([2], dtype=torch.int32, device=device))


@pytest.mark.kernels_ci
def test_opcheck_and_compile(fa, device, generator):
    """The ops' schemas, fake implementations and autograd registration with seqused, and the
    entry point traced with fullgraph=True."""
    ops_module = __import__(fa.__name__ + "._ops", fromlist=["ops"])
    fwd, bwd = ops_module.ops.fwd.default, ops_module.ops.bwd.default
    cu = cumulative([4, 6], device=device)
    used_q = torch.tensor([2, 6], dtype=torch.int32, device=device)
    used_k = torch.tensor([4, 3], dtype=torch.int32, device=device)
    q = leaf(random_tensor((10, 4, 32), torch.float32, generator, device=device))
    kv = leaf(random_tensor((10, 2, 32), torch.float32, generator, device=device))
    args = (q, kv, kv, cu, cu, used_k, None, None, None, 6, 6, 0.2, 0.0, -1, 0, True, used_q)
    torch.library.opcheck(fwd, args)
    out, lse = fwd(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    torch.library.opcheck(bwd, (torch.randn_like(out), q.detach(), kv.detach(), kv.detach(), out,
                                lse, cu, cu, None, None, 6, 6, 0.2, 0.0, -1, 0, used_q, used_k))
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def step(q, k, v):
        return fa.flash_attn_varlen_func(q, k, v, cu, cu, 6, 6, causal=True, seqused_q=used_q,
                                         seqused_k=used_k)

    eager = fa.flash_attn_varlen_func(q, kv, kv, cu, cu, 6, 6, causal=True, seqused_q=used_q,
                                      seqused_k=used_k)
    torch.testing.assert_close(step(q, kv, kv), eager)
