"""NaN and Inf in the inputs reach exactly the outputs that depend on them (docs/API.md, "NaN and
Inf"), on every entry point, every cpu instruction set (tests/test_cpu_instruction_sets.py runs
this module per instruction set) and the Metal kernels (the `sim` variant).

The truth is the float64 reference (tests/reference.py), which is torch's math written plainly:
a NaN score makes its row's out and lse NaN, a +inf score makes out NaN and lse +inf, a -inf
score drops its key; a masked key (causal, window, past the cache length) never reaches a row,
whatever it holds. Ours must have NaN, +inf and -inf exactly where the reference has them, and
its finite values within the usual tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from batches import random_tensor, varlen_batch
from nonfinite import assert_same_nonfinite_and_close
from reference import LSE_TOLERANCE, TOLERANCE, Semantics, attention_fixed, attention_varlen

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
NAN, INF = math.nan, math.inf

# Sequence 0: 20 queries, 24 keys (causal: row i sees keys 0 .. i + 4, so key 10 is masked for
# rows 0-5); sequence 1: one query (the decode tiles); sequence 2: queries but no key.
LENGTHS_Q, LENGTHS_K = [20, 1, 4], [24, 30, 0]
HEADS, HEADS_KV, HEAD_DIM = 4, 2, 32


def plant(batch, s_aux, case):
    """Writes the case's NaN/Inf into the inputs (in place); returns the semantics' extras."""
    q, k, v = batch.q, batch.k, batch.v
    if case == "nan_in_q":  # row 5 of sequence 0, head 1; and a row of sequence 2 (sees no key)
        q[5, 1, 3] = NAN
        q[22, 0, 0] = NAN
    elif case == "nan_in_k":  # key 10 of sequence 0, kv head 0: masked for rows 0-5
        k[10, 0, 7] = NAN
    elif case == "nan_in_masked_k":  # key 23 of sequence 0 is masked for every row but the last
        k[23, 1, 0] = NAN
    elif case in ("posinf_in_k", "neginf_in_k"):  # scores of key 10 +-inf for rows that see it
        q[..., 0] = q[..., 0].abs() + 0.25
        k[10, 0, :] = 0.0
        k[10, 0, 0] = INF if case == "posinf_in_k" else -INF
    elif case == "posinf_in_q":  # every score of row 7, head 3 is +inf
        k[..., 0] = k[..., 0].abs() + 0.25
        q[7, 3, :] = 0.0
        q[7, 3, 0] = INF
    elif case in ("neginf_row", "neginf_row_sink"):  # every score of row 7, head 3 is -inf:
        k[..., 0] = k[..., 0].abs() + 0.25  # zeros and lse -inf; with a sink, lse = the sink
        q[7, 3, :] = 0.0
        q[7, 3, 0] = -INF
    elif case == "nan_in_v":  # one value entry: that column of the rows that see key 10
        v[10, 0, 4] = NAN
    elif case == "inf_in_v":
        v[10, 1, 5] = INF
    elif case == "posinf_sink":  # head 2: out 0, lse +inf
        s_aux[2] = INF
    elif case == "nan_sink":
        s_aux[2] = NAN
    elif case == "neginf_sink":  # as no sink for head 2
        s_aux[2] = -INF
    else:
        raise AssertionError(case)


CASES = ["nan_in_q", "nan_in_k", "nan_in_masked_k", "posinf_in_k", "neginf_in_k", "posinf_in_q",
         "neginf_row", "neginf_row_sink", "nan_in_v", "inf_in_v", "posinf_sink", "nan_sink",
         "neginf_sink"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("softcap", [0.0, 20.0])
def test_varlen_forward(fa, device, generator, dtype, case, softcap):
    batch = varlen_batch(LENGTHS_Q, LENGTHS_K, heads=HEADS, heads_kv=HEADS_KV, head_dim=HEAD_DIM,
                         dtype=dtype, generator=generator, device=device)
    s_aux = torch.randn(HEADS, generator=generator).to(device)
    plant(batch, s_aux, case)
    # A NaN or Inf in v reaches the rows that see its key; whether it reaches a row for which the
    # key is masked is not specified (0 * NaN in a shared tile), so those cases run unmasked.
    causal = not case.endswith("_in_v")
    with_sink = case.endswith("_sink")
    sem = Semantics(scale=HEAD_DIM ** -0.5, causal=causal, softcap=softcap,
                    sinks=s_aux if with_sink else None)
    want_out, want_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                          batch.cu_seqlens_k, sem)
    out, lse, _ = fa.flash_attn_varlen_func(
        batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k, max(LENGTHS_Q),
        max(LENGTHS_K), causal=causal, softcap=softcap, s_aux=s_aux if with_sink else None,
        return_attn_probs=True)
    # The case is what it says: some outputs finite, and non-finite ones unless the case is one
    # that leaves every output finite (a -inf drops a key or a sink; softcap caps +inf).
    all_finite = case.startswith("neginf") or (softcap > 0 and case.startswith("posinf_in"))
    assert torch.isfinite(want_out).any()
    touched = (~torch.isfinite(want_out)).any() or (want_lse.isnan() | want_lse.isposinf()).any()
    assert bool(touched) != all_finite
    assert_same_nonfinite_and_close(out, want_out, TOLERANCE[dtype], f"out ({case})")
    assert_same_nonfinite_and_close(lse, want_lse, LSE_TOLERANCE, f"lse ({case})")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fixed_length_forward(fa, device, generator, dtype):
    # flash_attn_func: a NaN in q, a NaN in a key masked for the first rows.
    q = random_tensor((2, 9, HEADS, HEAD_DIM), dtype, generator, device=device)
    k = random_tensor((2, 12, HEADS_KV, HEAD_DIM), dtype, generator, device=device)
    v = random_tensor((2, 12, HEADS_KV, HEAD_DIM), dtype, generator, device=device)
    q[0, 4, 2, 1] = NAN
    k[1, 8, 1, 0] = NAN  # rows 0-4 of batch 1 do not see key 8 (causal, bottom-right)
    want_out, want_lse = attention_fixed(q, k, v, Semantics(scale=HEAD_DIM ** -0.5, causal=True))
    out, lse, _ = fa.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert_same_nonfinite_and_close(out, want_out, TOLERANCE[dtype], "out")
    assert_same_nonfinite_and_close(lse, want_lse, LSE_TOLERANCE, "lse")


@pytest.mark.parametrize("dtype", DTYPES)
def test_kvcache_decode(fa, device, generator, dtype):
    # One query per sequence (the decode kernels). A NaN in a cache slot past cache_seqlens is
    # never read; one in a visible slot makes its kv head's rows NaN.
    k_cache = random_tensor((2, 16, HEADS_KV, HEAD_DIM), dtype, generator, device=device)
    v_cache = random_tensor((2, 16, HEADS_KV, HEAD_DIM), dtype, generator, device=device)
    q = random_tensor((2, 1, HEADS, HEAD_DIM), dtype, generator, device=device)
    lengths = [9, 12]
    k_cache[0, 12, 0, 3] = NAN  # past cache_seqlens[0]
    v_cache[0, 9:, :, :] = INF  # past it too
    k_cache[1, 3, 1, 0] = NAN  # seen by heads 2, 3 of sequence 1
    cache_seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    out, lse = fa.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=cache_seqlens,
                                          causal=True, return_softmax_lse=True)
    sem = Semantics(scale=HEAD_DIM ** -0.5, causal=True)
    for b, n in enumerate(lengths):
        want_out, want_lse = attention_fixed(q[b : b + 1], k_cache[b : b + 1, :n],
                                             v_cache[b : b + 1, :n], sem)
        assert_same_nonfinite_and_close(out[b : b + 1], want_out, TOLERANCE[dtype], f"out {b}")
        assert_same_nonfinite_and_close(lse[b : b + 1], want_lse, LSE_TOLERANCE, f"lse {b}")
    assert out[1, 0, 2:].isnan().all() and torch.isfinite(out[0]).all()


def grads(fa, batch, s_aux=None, causal=True):
    q, k, v = (t.detach().clone().requires_grad_() for t in (batch.q, batch.k, batch.v))
    s = None if s_aux is None else s_aux.detach().clone().requires_grad_()
    out = fa.flash_attn_varlen_func(q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                                    max(LENGTHS_Q), max(LENGTHS_K), causal=causal, s_aux=s)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out)
    inputs = [q, k, v] + ([s] if s is not None else [])
    return out, torch.autograd.grad(out, inputs, dout)


def test_backward_of_a_nan_row(fa, device, generator):
    # The forward's NaN row sends NaN back into its own dq and the dk of the keys it sees; every
    # gradient that does not depend on it is exactly the clean run's.
    batch = varlen_batch(LENGTHS_Q, LENGTHS_K, heads=HEADS, heads_kv=HEADS_KV, head_dim=HEAD_DIM,
                         dtype=torch.float32, generator=generator, device=device)
    _, (dq0, dk0, dv0) = grads(fa, batch)
    batch.q[5, 1, 3] = NAN  # row 5 of sequence 0 (sees keys 0-9), head 1 (kv head 0)
    out, (dq, dk, dv) = grads(fa, batch)
    assert out[5, 1].isnan().all()
    assert dq[5, 1].isnan().all(), "the NaN row's dq"
    assert dk[0:10, 0].isnan().any(dim=-1).all(), "dk of the keys the NaN row sees"
    others = torch.ones(dq.shape[:2], dtype=torch.bool)
    others[5, 1] = False
    assert torch.equal(dq[others], dq0[others]), "dq of every other row"
    assert torch.equal(dk[24:], dk0[24:]) and torch.equal(dv[24:], dv0[24:]), "other sequences"
    assert torch.equal(dk[:, 1], dk0[:, 1]) and torch.equal(dv[:, 1], dv0[:, 1]), "other kv head"


def test_backward_of_an_infinite_sink(fa, device, generator):
    # s_aux = +inf takes the whole softmax of its head: out 0, lse +inf, and nothing flows back
    # through that head (its dq is 0, d s_aux 0); the other heads are the clean run's.
    batch = varlen_batch(LENGTHS_Q, LENGTHS_K, heads=HEADS, heads_kv=HEADS_KV, head_dim=HEAD_DIM,
                         dtype=torch.float32, generator=generator, device=device)
    s_aux = torch.randn(HEADS, generator=generator).to(device)
    _, (dq0, _, _, ds0) = grads(fa, batch, s_aux)
    s_aux[2] = INF
    out, (dq, dk, dv, ds) = grads(fa, batch, s_aux)
    assert torch.equal(out[:, 2], torch.zeros_like(out[:, 2]))
    assert torch.equal(dq[:, 2], torch.zeros_like(dq[:, 2])), "dq of the sink's head"
    assert ds[2].item() == 0.0, "d s_aux of a +inf sink"
    for h in (0, 1, 3):
        assert torch.equal(dq[:, h], dq0[:, h]) and ds[h] == ds0[h], f"head {h}"
    assert torch.isfinite(dk).all() and torch.isfinite(dv).all()
