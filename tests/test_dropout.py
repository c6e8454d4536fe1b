"""Dropout on the attention probabilities (`dropout_p`): the mask is common/dropout_stream.h's
stream (Philox4x32-7 keyed by the call's seed; counter {key / 4, query token, query head,
offset}), drawn from torch's default generator (docs/API.md, "Dropout").

The mask is regenerated here from a NumPy Philox4x32 (checked against known answers), and the
kernel's mask is read back exactly (uniform scores and identity values make out = mask / keys):
the two agree entry for entry, which ties the C++ stream to this file's. Statistics (keep rate,
independence across rows, heads and keys), the forward and the gradients against the float64
reference applied with the same mask, repeatability (seed, thread count), dropout_p = 0, torch's
SDPA, the packed variants and a transformers training step.

Builds whose kernels lack dropout (build-sim until the Metal kernels' dropout lands) must refuse
it by name: every test asserts that refusal there instead of its checks. The cpu build must
apply it."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from batches import cumulative, random_tensor, varlen_batch
from reference import Semantics, assert_close, assert_lse_close, attention_fixed, attention_varlen
from test_backward import MARGIN, leaf, max_error

INPUTS_ON_VARIANT_DEVICE = True
# MFS_CPU_BUILD (conftest.py): one cpu build alone, no Metal kernels to compare with.
CPU_BUILD_ONLY = bool(os.environ.get("MFS_CPU_BUILD"))

# ---------------------------------------------------------------- the stream, in NumPy

MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(counter, key, rounds=7):
    """Philox4x32-`rounds` (Salmon et al., SC'11) of counters (4 arrays of 32-bit words,
    broadcast together) under key (2 words): the 4 output words."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in counter)
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(rounds):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & MASK32, \
            (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & MASK32
        k0 = (k0 + np.uint64(0x9E3779B9)) & MASK32
        k1 = (k1 + np.uint64(0xBB67AE85)) & MASK32
    return c0, c1, c2, c3


def keep_threshold(p: float) -> int:
    """dropout_stream.h's dropout_threshold: round(p * 2^32), at most 2^32 - 1."""
    scaled = p * 4294967296.0
    return 0xFFFFFFFF if scaled >= 4294967295.0 else int(scaled + 0.5)


def keep_mask(words, p, tokens, heads, keys: int) -> np.ndarray:
    """bool [len(heads), len(tokens), keys]: whether (head, token, key) is kept, for the stream
    state words = (seed_lo, seed_hi, offset)."""
    seed_lo, seed_hi, offset = (int(w) for w in words)
    key = np.arange(keys, dtype=np.uint64)
    counter = ((key // np.uint64(4))[None, None, :],
               np.asarray(tokens, dtype=np.uint64)[None, :, None],
               np.asarray(heads, dtype=np.uint64)[:, None, None],
               np.uint64(offset))
    out = philox4x32(counter, (seed_lo, seed_hi))
    word = (key % np.uint64(4)).astype(np.int64)[None, None, :]
    draws = np.choose(np.broadcast_to(word, out[0].shape), out)
    return draws >= np.uint64(keep_threshold(p))


def drawn_words(seed: int) -> torch.Tensor:
    """The stream state a call with dropout draws right after torch.manual_seed(seed)
    (docs/API.md, "Dropout": torch.randint(0, 2**32, (3,)) from the default generator)."""
    torch.manual_seed(seed)
    return torch.randint(0, 2**32, (3,), dtype=torch.int64)


def fixed_factors(words, p, batch, heads, sq, sk):
    """Semantics.dropout_factors of a fixed-length call: query token b * sq + row."""
    def factors(b, rows, keys):
        kept = keep_mask(words, p, b * sq + np.arange(rows), np.arange(heads), keys)
        return torch.from_numpy(kept).double() / (1.0 - p)
    return factors


def varlen_factors(words, p, cu_q, heads):
    """Semantics.dropout_factors of a varlen call: query token cu_seqlens_q[b] + row."""
    def factors(b, rows, keys):
        kept = keep_mask(words, p, int(cu_q[b]) + np.arange(rows), np.arange(heads), keys)
        return torch.from_numpy(kept).double() / (1.0 - p)
    return factors


# ---------------------------------------------------------------- which builds apply it

def applies_dropout(fa, variant, device) -> bool:
    """Whether this build applies dropout. The cpu build must; another build either applies it
    or refuses it by name (NotImplementedError naming dropout_p): never ignores it."""
    q = torch.zeros(1, 4, 1, 8, device=device)
    try:
        out = fa.flash_attn_func(q, q, q, dropout_p=0.5)
    except NotImplementedError as e:
        assert "dropout_p" in str(e), f"refusal does not name dropout_p: {e}"
        assert variant != "cpu", f"the cpu build must apply dropout, it refused: {e}"
        return False
    assert out.shape == q.shape
    return True


@pytest.fixture
def dropout_build(fa, variant, device):
    return applies_dropout(fa, variant, device)


# ---------------------------------------------------------------- the stream itself

@pytest.mark.parametrize("rounds, expected", [
    # Random123's known answer (kat_vectors, philox4x32_10, counter 0, key 0)
    (10, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    # the 7-round variant dropout_stream.h uses (counter 0, key 0)
    (7, (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
])
def test_philox_known_answers(rounds, expected):
    got = philox4x32((0, 0, 0, 0), (0, 0), rounds)
    assert tuple(int(w) for w in got) == expected


@pytest.mark.parametrize("counter, key, expected", [
    # Random123's kat_vectors, philox4x32_10: all ones; the digits of pi
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers_nonzero(counter, key, expected):
    assert tuple(int(w) for w in philox4x32(counter, key, 10)) == expected


def kernel_mask_fixed(fa, device, dtype, batch, heads, sq, sk, p, seed, heads_kv=None):
    """The kernel's keep mask [batch, heads, sq, sk] of a fixed-length call: q = 0 (uniform
    probabilities 1/sk) and v = the identity (head_dim_v = sk) make out[b, i, h, j] = z / sk."""
    heads_kv = heads_kv or heads
    q = torch.zeros(batch, sq, heads, 8, dtype=dtype, device=device)
    k = torch.zeros(batch, sk, heads_kv, 8, dtype=dtype, device=device)
    v = torch.eye(sk, dtype=dtype).view(1, sk, 1, sk).expand(batch, sk, heads_kv, sk)
    v = v.contiguous().to(device)
    torch.manual_seed(seed)
    out = fa.flash_attn_func(q, k, v, dropout_p=p).cpu().double()
    scaled = out * sk * (1.0 - p)  # 1 where kept (to the dtype's rounding), 0 where dropped
    assert torch.all((scaled == 0) | ((scaled - 1).abs() < 1e-2)), "entries neither 0 nor 1/(1-p)"
    return (scaled > 0.5).permute(0, 2, 1, 3).numpy()


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sq, heads, heads_kv", [(96, 4, 2), (1, 3, 1), (2, 2, 2)])
def test_kernel_mask_is_the_stream(fa, variant, device, dropout_build, dtype, sq, heads, heads_kv):
    # Many rows (the row-vector kernels) and few (decode: the few-rows kernels), GQA; key
    # counts not a multiple of the blocks.
    if not dropout_build:
        return
    batch, sk, p = 2, 136, 0.3
    got = kernel_mask_fixed(fa, device, dtype, batch, heads, sq, sk, p, seed=11, heads_kv=heads_kv)
    words = drawn_words(11)
    want = np.stack([keep_mask(words, p, b * sq + np.arange(sq), np.arange(heads), sk)
                     for b in range(batch)])
    assert np.array_equal(got, want), f"{(got != want).sum()} of {got.size} entries differ"


def test_varlen_mask_counts_packed_query_tokens(fa, variant, device, dropout_build):
    # q token = cu_seqlens_q[b] + row; key = the position within the sequence.
    if not dropout_build:
        return
    lengths_q, lengths_k, heads, p, dv = [5, 0, 19], [40, 8, 24], 2, 0.25, 40
    cu_q, cu_k = cumulative(lengths_q), cumulative(lengths_k)
    q = torch.zeros(sum(lengths_q), heads, 8, device=device)
    k = torch.zeros(sum(lengths_k), heads, 8, device=device)
    v = torch.zeros(sum(lengths_k), heads, dv)
    for b in range(3):  # v[key of sequence b] = e_key (its position), so out = z / seqlen_k
        for j in range(lengths_k[b]):
            v[int(cu_k[b]) + j, :, j] = 1.0
    torch.manual_seed(5)
    out = fa.flash_attn_varlen_func(q, k, v.to(device), cu_q.to(device), cu_k.to(device),
                                    max(lengths_q), max(lengths_k), dropout_p=p).cpu().double()
    words = drawn_words(5)
    for b in range(3):
        q0, q1, sk = int(cu_q[b]), int(cu_q[b + 1]), lengths_k[b]
        if q1 == q0:
            continue
        got = (out[q0:q1, :, :sk] > 0).permute(1, 0, 2).numpy()
        want = keep_mask(words, p, np.arange(q0, q1), np.arange(heads), sk)
        assert np.array_equal(got, want), f"sequence {b}"
        assert (out[q0:q1, :, sk:] == 0).all()


def test_mask_statistics(fa, variant, device, dropout_build):
    """Keep rate within a binomial bound; no correlation between neighbouring rows, heads and
    keys (the words of one Philox block) beyond what independence allows."""
    if not dropout_build:
        return
    batch, heads, sq, sk, p = 2, 4, 128, 256, 0.2
    kept = kernel_mask_fixed(fa, device, torch.float32, batch, heads, sq, sk, p, seed=3)
    n = kept.size
    rate = kept.mean()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(rate - (1 - p)) < 5 * sigma, f"keep rate {rate:.5f}, expected {1 - p} +- {5 * sigma:.5f}"
    x = kept.astype(np.float64) - rate

    def corr(a, b):
        return float((a * b).mean() / math.sqrt((a * a).mean() * (b * b).mean()))

    for name, a, b in [("rows", x[:, :, 1:, :], x[:, :, :-1, :]),
                       ("heads", x[:, 1:], x[:, :-1]),
                       ("keys", x[..., 1:], x[..., :-1]),
                       ("keys 4 apart (next block)", x[..., 4:], x[..., :-4]),
                       ("batches", x[1], x[0])]:
        c = corr(a, b)
        assert abs(c) < 5 / math.sqrt(a.size), f"correlation across {name}: {c:.4f}"


# ---------------------------------------------------------------- against the reference

def grads_match(got, want, base, names, dtype):
    """Like test_backward's check: within 2x the error of the same math in the inputs' dtype,
    plus a margin."""
    for name, g, w, b in zip(names, got, want, base):
        assert torch.isfinite(g).all(), f"d{name} is not finite"
        err, base_err = max_error(g, w), max_error(b, w)
        bound = 2.0 * base_err + MARGIN[dtype] * max(1.0, w.abs().max().item())
        assert err <= bound, f"d{name} ({dtype}): error {err:.3g}, dtype math {base_err:.3g}"


DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_forward_and_gradients(fa, variant, device, dropout_build, generator, dtype, causal):
    p = 0.17
    batch = varlen_batch([7, 0, 70, 33], [9, 4, 70, 80], heads=4, heads_kv=2, head_dim=32,
                         dtype=dtype, generator=generator, device=device)
    cu_q, cu_k = batch.cu_seqlens_q, batch.cu_seqlens_k
    call = dict(dropout_p=p, causal=causal, return_attn_probs=False)
    q, k, v = leaf(batch.q), leaf(batch.k), leaf(batch.v)
    if not dropout_build:
        with pytest.raises(NotImplementedError, match="dropout_p"):
            fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 70, 80, **call)
        return
    torch.manual_seed(21)
    out = fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 70, 80, **call)
    sem = Semantics(scale=32 ** -0.5, causal=causal,
                    dropout_factors=varlen_factors(drawn_words(21), p, cu_q.cpu(), 4))
    dout = torch.randn(out.shape, generator=generator).to(dtype).to(device)
    got = torch.autograd.grad(out, [q, k, v], dout)
    ref_in = [leaf(t.detach().cpu().double()) for t in (q, k, v)]
    ref_out, _ = attention_varlen(*ref_in, cu_q.cpu(), cu_k.cpu(), sem)
    assert_close(out, ref_out, dtype)
    want = torch.autograd.grad(ref_out, ref_in, dout.cpu().double())
    base_in = [leaf(t.detach().cpu()) for t in (q, k, v)]
    base_out, _ = attention_varlen(*base_in, cu_q.cpu(), cu_k.cpu(), sem, dtype=dtype)
    base = torch.autograd.grad(base_out, base_in, dout.cpu())
    grads_match(got, want, base, "qkv", dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fixed_length_every_feature(fa, variant, device, dropout_build, generator, dtype):
    # window, softcap, ALiBi, sinks, GQA, sq != sk, head_dim_v != head_dim, lse returned
    p, B, sq, sk, H, Hkv = 0.3, 2, 37, 75, 6, 3
    q = leaf(random_tensor((B, sq, H, 64), dtype, generator, device=device))
    k = leaf(random_tensor((B, sk, Hkv, 64), dtype, generator, device=device))
    v = leaf(random_tensor((B, sk, Hkv, 32), dtype, generator, device=device))
    slopes = torch.rand(H, generator=generator)
    sinks = leaf(torch.randn(H, generator=generator).to(device))
    call = dict(dropout_p=p, window_size=(20, 3), softcap=8.0, alibi_slopes=slopes.to(device),
                s_aux=sinks)
    if not dropout_build:
        with pytest.raises(NotImplementedError, match="dropout_p"):
            fa.flash_attn_func(q, k, v, **call)
        return
    torch.manual_seed(4)
    out = fa.flash_attn_func(q, k, v, **call)
    dout = torch.randn(out.shape, generator=generator).to(dtype).to(device)
    got = torch.autograd.grad(out, [q, k, v, sinks], dout)
    sem = Semantics(scale=64 ** -0.5, window=(20, 3), softcap=8.0, alibi_slopes=slopes,
                    dropout_factors=fixed_factors(drawn_words(4), p, B, H, sq, sk))
    ref_in = [leaf(t.detach().cpu().double()) for t in (q, k, v, sinks)]
    sem.sinks = ref_in[3]
    ref_out, _ = attention_fixed(*ref_in[:3], sem)
    assert_close(out, ref_out, dtype)
    want = torch.autograd.grad(ref_out, ref_in, dout.cpu().double())
    base_in = [leaf(t.detach().cpu()) for t in (q, k, v, sinks)]
    sem.sinks = base_in[3]
    base_out, _ = attention_fixed(*base_in[:3], sem, dtype=dtype)
    base = torch.autograd.grad(base_out, base_in, dout.cpu())
    grads_match(got, want, base, ["q", "k", "v", "s_aux"], dtype)


# ---------------------------------------------------------------- repeatability

def test_same_seed_same_output_other_seed_other_output(fa, variant, device, dropout_build,
                                                      generator):
    if not dropout_build:
        return
    q, k, v = (random_tensor((2, 64, 4, 32), torch.float32, generator, device=device)
               for _ in range(3))

    def run(seed, threads=None):
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            torch.manual_seed(seed)
            qq, kk, vv = (leaf(t) for t in (q, k, v))
            out = fa.flash_attn_func(qq, kk, vv, dropout_p=0.4, causal=True)
            out.backward(torch.ones_like(out))
            return [out.detach(), qq.grad, kk.grad, vv.grad]
        finally:
            torch.set_num_threads(before)

    first = run(1)
    for again in (run(1), run(1, threads=1), run(1, threads=2)):
        for a, b in zip(first, again):
            assert torch.equal(a, b)
    other = run(2)
    assert not torch.equal(first[0], other[0])
    # two calls in a row draw two states: different masks
    torch.manual_seed(1)
    a = fa.flash_attn_func(q, k, v, dropout_p=0.4)
    b = fa.flash_attn_func(q, k, v, dropout_p=0.4)
    assert not torch.equal(a, b)


def test_dropout_p_zero_changes_nothing(fa, variant, device, generator):
    # On every build: no draw (the generator is untouched), the same bits as without dropout_p.
    q, k, v = (random_tensor((2, 30, 4, 32), torch.float32, generator, device=device)
               for _ in range(3))
    plain = fa.flash_attn_func(q, k, v, causal=True)
    state = torch.get_rng_state()
    zero = fa.flash_attn_func(q, k, v, dropout_p=0.0, causal=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(plain, zero)
    sdpa = fa.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), dropout_p=0.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert sdpa.shape == (2, 4, 30, 32)


BAD_P = [-0.1, 1.0, 1.5, math.nan, math.inf, "0.1", True]


@pytest.mark.parametrize("bad", BAD_P, ids=str)
def test_bad_dropout_p_is_refused_by_name(fa, device, generator, bad):
    q = random_tensor((1, 8, 2, 16), torch.float32, generator, device=device)
    qv = q[0]
    cu = torch.tensor([0, 8], dtype=torch.int32, device=device)
    calls = {
        "flash_attn_func": lambda: fa.flash_attn_func(q, q, q, dropout_p=bad),
        "flash_attn_varlen_func": lambda: fa.flash_attn_varlen_func(qv, qv, qv, cu, cu, 8, 8,
                                                                    dropout_p=bad),
        "flash_attn_qkvpacked_func": lambda: fa.flash_attn_qkvpacked_func(
            torch.stack([q, q, q], dim=2), dropout_p=bad),
        "flash_attn_varlen_kvpacked_func": lambda: fa.flash_attn_varlen_kvpacked_func(
            qv, torch.stack([qv, qv], dim=1), cu, cu, 8, 8, dropout_p=bad),
    }  # scaled_dot_product_attention raises what torch raises: test_sdpa.py::test_bad_dropout_p_*
    for name, call in calls.items():
        with pytest.raises(ValueError, match="dropout_p"):
            call()


def test_op_refuses_dropout_without_its_state(fa, device):
    q = torch.zeros(1, 4, 2, 8, device=device)
    ops = fa._ops.ops
    with pytest.raises((ValueError, NotImplementedError), match="dropout"):
        ops.fwd(q, q, q, None, None, None, None, None, None, 0, 0, 0.5, 0.0, -1, -1, False,
                None, 0.5, None)
    bad_state = torch.tensor([0, 1, 2**32], dtype=torch.int64)
    with pytest.raises((ValueError, NotImplementedError), match="dropout"):
        ops.fwd(q, q, q, None, None, None, None, None, None, 0, 0, 0.5, 0.0, -1, -1, False,
                None, 0.5, bad_state)


def reference_probs(q, k, sem, cu_q=None, cu_k=None):
    """The float64 reference's probabilities (undropped) [batch, heads, max_q, max_k], zero
    outside the sequences, from its lse: P = softmax of the reference's own scores, read back
    through v = the identity (out = P)."""
    if cu_q is None:
        B, sq, H, _ = q.shape
        sk = k.shape[1]
        eye = torch.eye(sk, dtype=torch.float64).view(1, sk, 1, sk).expand(B, sk, k.shape[2], sk)
        out, lse = attention_fixed(q, k, eye, sem)
        return out.permute(0, 2, 1, 3), lse
    batch = len(cu_q) - 1
    lq, lk = (cu_q[1:] - cu_q[:-1]).tolist(), (cu_k[1:] - cu_k[:-1]).tolist()
    probs = torch.zeros(batch, q.shape[1], max(lq), max(lk), dtype=torch.float64)
    lses = []
    for b in range(batch):
        q0, k0 = int(cu_q[b]), int(cu_k[b])
        sk = lk[b]
        eye = torch.eye(sk, dtype=torch.float64).view(sk, 1, sk).expand(sk, k.shape[1], sk)
        out, lse = attention_varlen(q[q0:q0 + lq[b]], k[k0:k0 + sk], eye,
                                    torch.tensor([0, lq[b]]), torch.tensor([0, sk]), sem)
        probs[b, :, :lq[b], :sk] = out.permute(1, 0, 2)
        lses.append(lse)
    return probs, torch.cat(lses, dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_return_attn_probs_is_flash_attns_s_dmask(fa, variant, device, dropout_build, generator,
                                                  dtype):
    """flash-attn 2 returns (out, lse, S_dmask) with return_attn_probs and dropout: the
    probabilities [batch, heads, seqlen_q, seqlen_k], the dropped ones negated (None without
    dropout). lse is the undropped softmax's."""
    p, B, sq, sk, H = 0.4, 2, 19, 45, 4
    q = random_tensor((B, sq, H, 32), dtype, generator, device=device)
    k = random_tensor((B, sk, 2, 32), dtype, generator, device=device)
    v = random_tensor((B, sk, 2, 32), dtype, generator, device=device)
    slopes = torch.rand(H, generator=generator)
    call = dict(causal=True, softcap=5.0, alibi_slopes=slopes.to(device))
    out, lse, probs = fa.flash_attn_func(q, k, v, return_attn_probs=True, **call)
    assert probs is None
    if not dropout_build:
        with pytest.raises(NotImplementedError, match="dropout_p"):
            fa.flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True, **call)
        return
    torch.manual_seed(6)
    out, lse, probs = fa.flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True, **call)
    torch.manual_seed(6)
    assert torch.equal(out, fa.flash_attn_func(q, k, v, dropout_p=p, **call))
    assert probs.shape == (B, H, sq, sk) and probs.dtype == dtype
    sem = Semantics(scale=32 ** -0.5, causal=True, softcap=5.0, alibi_slopes=slopes)
    want, want_lse = reference_probs(q.cpu().double(), k.cpu().double(), sem)
    assert_lse_close(lse, want_lse)
    kept = np.stack([keep_mask(drawn_words(6), p, b * sq + np.arange(sq), np.arange(H), sk)
                     for b in range(B)])
    probs = probs.cpu()
    negative = torch.signbit(probs).numpy()
    assert np.array_equal(negative, ~kept), "the sign of S_dmask is not the dropout mask"
    assert_close(probs.abs(), want, dtype, what="|S_dmask|")


def test_return_attn_probs_varlen(fa, variant, device, dropout_build, generator):
    p, heads = 0.3, 2
    batch = varlen_batch([3, 0, 17], [6, 5, 11], heads=heads, heads_kv=1, head_dim=16,
                         dtype=torch.float32, generator=generator, device=device)
    cu_q, cu_k = batch.cu_seqlens_q, batch.cu_seqlens_k
    if not dropout_build:
        return
    torch.manual_seed(2)
    out, lse, probs = fa.flash_attn_varlen_func(batch.q, batch.k, batch.v, cu_q, cu_k, 17, 11,
                                                dropout_p=p, return_attn_probs=True,
                                                window_size=(4, 2))
    assert probs.shape == (3, heads, 17, 11)
    sem = Semantics(scale=16 ** -0.5, window=(4, 2))
    want, want_lse = reference_probs(batch.q.cpu().double(), batch.k.cpu().double(), sem,
                                     cu_q.cpu(), cu_k.cpu())
    assert_lse_close(lse, want_lse)
    assert_close(probs.abs(), want, torch.float32, what="|S_dmask|")
    words = drawn_words(2)
    for b, (q0, n, sk) in enumerate([(0, 3, 6), (3, 0, 5), (3, 17, 11)]):
        kept = keep_mask(words, p, q0 + np.arange(n), np.arange(heads), sk)
        assert np.array_equal(torch.signbit(probs[b, :, :n, :sk]).cpu().numpy(), ~kept)
        assert (probs[b, :, n:] == 0).all() and (probs[b, :, :, sk:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_return_attn_probs_seqused_sinks_and_every_score_rule(fa, variant, device, dropout_build,
                                                              generator, dtype):
    """S_dmask of a varlen call whose slots are cut by seqused_q / seqused_k, with sinks (their
    share is in lse, never in S_dmask), causal, softcap, per-sequence ALiBi and GQA: |S_dmask| is
    the float64 reference's P over each sequence's used rows and keys, 0 past them (the rest of
    the slot and of max_seqlen), and its sign the stream's mask at query token cu_seqlens_q[b] +
    row (the slot's, not the used rows' packing)."""
    if not dropout_build:
        return
    p, heads, heads_kv, d = 0.25, 4, 2, 32
    slots_q, slots_k, used_q, used_k = [7, 0, 12], [9, 3, 20], [5, 0, 12], [9, 2, 13]
    cu_q, cu_k = cumulative(slots_q), cumulative(slots_k)
    q = random_tensor((sum(slots_q), heads, d), dtype, generator)
    k = random_tensor((sum(slots_k), heads_kv, d), dtype, generator)
    v = random_tensor((sum(slots_k), heads_kv, d), dtype, generator)
    sinks = torch.randn(heads, generator=generator)
    slopes = torch.rand(len(slots_q), heads, generator=generator)
    uq, uk = torch.tensor(used_q, dtype=torch.int32), torch.tensor(used_k, dtype=torch.int32)
    on = lambda t: t.to(device)  # noqa: E731
    torch.manual_seed(9)
    _, lse, probs = fa.flash_attn_varlen_func(
        on(q), on(k), on(v), on(cu_q), on(cu_k), max(slots_q), max(slots_k), dropout_p=p,
        causal=True, softcap=3.0, alibi_slopes=on(slopes), s_aux=on(sinks),
        seqused_q=on(uq), seqused_k=on(uk), return_attn_probs=True)
    assert probs.shape == (3, heads, max(slots_q), max(slots_k)) and probs.dtype == dtype
    probs = probs.cpu()
    words = drawn_words(9)
    for b in range(3):
        nq, nk, q0, k0 = used_q[b], used_k[b], int(cu_q[b]), int(cu_k[b])
        assert (probs[b, :, nq:] == 0).all() and (probs[b, :, :, nk:] == 0).all()
        if nq == 0:
            continue
        sem = Semantics(scale=d ** -0.5, causal=True, softcap=3.0, alibi_slopes=slopes[b],
                        sinks=sinks)
        want, _ = reference_probs(q[q0:q0 + nq].double(), k[k0:k0 + nk].double(), sem,
                                  torch.tensor([0, nq]), torch.tensor([0, nk]))
        assert_close(probs[b:b + 1, :, :nq, :nk].abs(), want, dtype, what=f"|S_dmask| of {b}")
        kept = keep_mask(words, p, q0 + np.arange(nq), np.arange(heads), nk)
        assert np.array_equal(torch.signbit(probs[b, :, :nq, :nk]).numpy(), ~kept), \
            f"the sign of S_dmask of sequence {b} is not the dropout mask"


def test_return_attn_probs_paged_is_refused_by_name(fa, variant, device, dropout_build, generator):
    """S_dmask of a paged call (block_table) is not computed by either build: refused, naming
    block_table, never a wrong tensor."""
    if not dropout_build:
        return
    q = random_tensor((6, 2, 16), torch.float32, generator, device=device)
    k_pages = random_tensor((3, 16, 2, 16), torch.float32, generator, device=device)
    table = torch.tensor([[0, 2]], dtype=torch.int32, device=device)
    cu_q = torch.tensor([0, 6], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 20], dtype=torch.int32, device=device)
    with pytest.raises(NotImplementedError, match="block_table"):
        fa.flash_attn_varlen_func(q, k_pages, k_pages, cu_q, cu_k, 6, 20, dropout_p=0.2,
                                  block_table=table, return_attn_probs=True)


# ---------------------------------------------------------------- the other entry points

def test_sdpa_dropout(fa, variant, device, dropout_build, generator):
    """torch's SDPA applies dropout whenever dropout_p > 0; (N, H, L, E) maps to the fixed-length
    form [N, L, H, E]: query token n * L + row, head h."""
    N, H, L, S, E, p = 2, 3, 40, 56, 32, 0.25
    q = leaf(random_tensor((N, H, L, E), torch.float32, generator, device=device))
    k = leaf(random_tensor((N, H, S, E), torch.float32, generator, device=device))
    v = leaf(random_tensor((N, H, S, E), torch.float32, generator, device=device))
    if not dropout_build:
        with pytest.raises(NotImplementedError, match="dropout_p"):
            fa.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return
    torch.manual_seed(8)
    out = fa.scaled_dot_product_attention(q, k, v, dropout_p=p)
    dout = torch.randn(out.shape, generator=generator).to(device)
    got = torch.autograd.grad(out, [q, k, v], dout)
    sem = Semantics(scale=E ** -0.5, dropout_factors=fixed_factors(drawn_words(8), p, N, H, L, S))
    ref_in = [leaf(t.detach().cpu().double().transpose(1, 2)) for t in (q, k, v)]
    ref_out, _ = attention_fixed(*ref_in, sem)
    assert_close(out.transpose(1, 2), ref_out, torch.float32)
    want = torch.autograd.grad(ref_out, ref_in, dout.cpu().double().transpose(1, 2))
    for name, g, w in zip("qkv", got, want):
        torch.testing.assert_close(g.transpose(1, 2).double().cpu(), w, atol=2e-5, rtol=2e-5,
                                   msg=lambda m: f"d{name}: {m}")


def test_routed_training_step_with_dropout(fa, variant, device, dropout_build, generator,
                                           monkeypatch):
    """F.scaled_dot_product_attention routed (fa.routed_sdpa) with dropout_p > 0 runs on the
    kernels, as torch applies it (whatever the module's training mode: SDPA has no training
    flag), with the kernels' stream. The keep rate of the mask it used (read back exactly:
    uniform scores and identity values make out = Z / S) is within a binomial bound; a training
    step's output and gradients equal the float64 reference applied with that call's mask
    (query token n * L + row); dropout_p = 0 draws nothing and gives what the unrouted-dropout
    call gave before."""
    import torch.nn.functional as F

    calls = []
    kernel = fa._routing.scaled_dot_product_attention
    monkeypatch.setattr(fa._routing, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    N, H, L, S, E, p = 2, 2, 24, 40, 32, 0.3
    if not dropout_build:  # the kernels refuse dropout: routing must not send it there
        assert not fa._routing.kernel_takes(*(torch.zeros(1, 1, 4, 8, device=device),) * 3,
                                            dropout_p=p)
        return
    # The mask's statistics, through the routed call.
    uniform_q, uniform_k = torch.zeros(N, H, L, E, device=device), torch.zeros(N, H, S, E, device=device)
    eye = torch.eye(S, device=device).expand(N, H, S, S)
    torch.manual_seed(3)
    with fa.routed_sdpa():
        z = F.scaled_dot_product_attention(uniform_q, uniform_k, eye, dropout_p=p) * S
    kept = (z.cpu() > 0).numpy()
    n = kept.size
    assert abs(kept.sum() - n * (1 - p)) <= 5 * math.sqrt(n * p * (1 - p)), "keep rate off"
    torch.testing.assert_close(z.cpu()[z.cpu() > 0], torch.full([int(kept.sum())], 1 / (1 - p)))
    assert np.array_equal(kept.transpose(0, 2, 1, 3).reshape(N * L, H, S).transpose(1, 0, 2),
                          keep_mask(drawn_words(3), p, np.arange(N * L), np.arange(H), S))

    # A training step (a projection, then attention with dropout), against float64 with the mask.
    proj = torch.nn.Linear(E, 3 * E).to(device)
    x = random_tensor((N, L, E), torch.float32, generator, device=device)
    kv = random_tensor((N, S, E), torch.float32, generator, device=device)

    def step(use_dropout: float):
        wq, wk, wv = proj.weight.split(E)
        q = (x @ wq.T).view(N, L, H, E // H).transpose(1, 2)
        k = (kv @ wk.T).view(N, S, H, E // H).transpose(1, 2)
        v = (kv @ wv.T).view(N, S, H, E // H).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=use_dropout, is_causal=False)
        return out, (q, k, v)

    calls.clear()
    torch.manual_seed(4)
    with fa.routed_sdpa():
        out, (q, k, v) = step(p)
        dout = torch.randn(out.shape, generator=generator).to(device)
        got = torch.autograd.grad(out, [q, k, v, proj.weight], dout)
    assert len(calls) == 1, "the routed dropout call did not run on the kernels"
    factors = fixed_factors(drawn_words(4), p, N, H, L, S)
    drop = torch.stack([factors(b, L, S) for b in range(N)])  # [N, H, L, S]
    rq, rk, rv = (leaf(t.detach().cpu().double()) for t in (q, k, v))
    ref = (torch.softmax(rq @ rk.transpose(-1, -2) * (E // H) ** -0.5, -1) * drop) @ rv
    assert_close(out, ref, torch.float32)
    want = torch.autograd.grad(ref, [rq, rk, rv], dout.cpu().double())
    for name, g, w in zip("qkv", got, want):
        torch.testing.assert_close(g.double().cpu(), w, atol=2e-5, rtol=2e-5,
                                   msg=lambda m: f"d{name}: {m}")
    assert torch.isfinite(got[3]).all()

    # dropout_p = 0: routed as before, draws nothing, equals the call without dropout_p.
    calls.clear()
    state = torch.get_rng_state()
    with fa.routed_sdpa():
        plain = F.scaled_dot_product_attention(q, k, v)
        zero = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    assert len(calls) == 2 and torch.equal(plain, zero)
    assert torch.equal(torch.get_rng_state(), state), "dropout_p = 0 drew from the generator"


def test_packed_variants_use_the_same_mask(fa, variant, device, dropout_build, generator):
    qkv = random_tensor((2, 24, 3, 4, 16), torch.float32, generator, device=device)
    if not dropout_build:
        with pytest.raises(NotImplementedError, match="dropout_p"):
            fa.flash_attn_qkvpacked_func(qkv, dropout_p=0.3)
        return
    q, k, v = qkv.unbind(2)
    torch.manual_seed(9)
    unpacked = fa.flash_attn_func(q, k, v, dropout_p=0.3, causal=True)
    torch.manual_seed(9)
    assert torch.equal(fa.flash_attn_qkvpacked_func(qkv, 0.3, causal=True), unpacked)
    torch.manual_seed(9)
    assert torch.equal(fa.flash_attn_kvpacked_func(q, torch.stack([k, v], 2), dropout_p=0.3,
                                                   causal=True), unpacked)
    cu = torch.tensor([0, 24, 48], dtype=torch.int32, device=device)
    flat = qkv.reshape(48, 3, 4, 16)
    torch.manual_seed(9)
    varlen = fa.flash_attn_varlen_func(*flat.unbind(1), cu, cu, 24, 24, dropout_p=0.3)
    torch.manual_seed(9)
    assert torch.equal(fa.flash_attn_varlen_qkvpacked_func(flat, cu, 24, dropout_p=0.3), varlen)
    torch.manual_seed(9)
    assert torch.equal(fa.flash_attn_varlen_kvpacked_func(
        flat[:, 0], flat[:, 1:], cu, cu, 24, 24, dropout_p=0.3), varlen)
    # packed varlen and fixed-length count query tokens alike (b * seqlen + row)
    torch.manual_seed(9)
    fixed = fa.flash_attn_func(q, k, v, dropout_p=0.3)
    assert torch.equal(varlen.view(2, 24, 4, 16), fixed)


# ---------------------------------------------------------------- transformers

def test_transformers_training_with_attention_dropout(variant, device):
    """A tiny Llama with attention_dropout = 0.1 in training mode through the kernel: the step
    runs, its gradients are finite, the same seed repeats them bit for bit, and dropout changed
    them (eval-mode calls pass dropout 0)."""
    import copy

    import transformers.modeling_flash_attention_utils as flash_utils
    from transformers import AutoModelForCausalLM, LlamaConfig

    from conftest import REPO_ID, load_kernel

    flash_utils._loaded_implementation = None
    fa = load_kernel(variant)
    supported = applies_dropout(fa, variant, device)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, attention_dropout=0.1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=REPO_ID)
    model = model.to(device).train()
    ids = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(1)).to(device)

    def step(seed, train=True):
        model.train(train)
        model.zero_grad()
        torch.manual_seed(seed)
        model(input_ids=ids, labels=ids).loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    if not supported:
        with pytest.raises(NotImplementedError, match="dropout_p"):
            step(0)
        return
    first = step(0)
    assert all(torch.isfinite(g).all() for g in first)
    assert all(torch.equal(a, b) for a, b in zip(first, step(0)))
    assert not all(torch.equal(a, b) for a, b in zip(first, step(1)))
    no_dropout = step(0, train=False)
    assert not all(torch.equal(a, b) for a, b in zip(first, no_dropout))


# ---------------------------------------------------------------- torch.compile and the ops

def test_training_step_compiles_fullgraph(fa, variant, device, dropout_build, generator):
    """The draw is part of the graph: a compiled step runs, reproduces under torch.manual_seed
    and draws a new mask per call (compiled masks are not eager's: docs/API.md)."""
    if not dropout_build:
        return
    q, k, v = (leaf(random_tensor((2, 33, 4, 32), torch.float32, generator, device=device))
               for _ in range(3))
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def step(q, k, v):
        out = fa.flash_attn_func(q, k, v, dropout_p=0.3, causal=True)
        return (out * out).sum()

    def grads(seed):
        torch.manual_seed(seed)
        return torch.autograd.grad(step(q, k, v), [q, k, v])

    first = grads(3)
    assert all(torch.isfinite(g).all() for g in first)
    assert all(torch.equal(a, b) for a, b in zip(first, grads(3)))
    assert not torch.equal(first[0], grads(4)[0])


def test_opcheck_with_dropout(fa, variant, device, generator, dropout_build):
    if not dropout_build:
        return
    ops_module = __import__(fa.__name__ + "._ops", fromlist=["ops"])
    state = torch.tensor([12, 34, 56], dtype=torch.int64)
    batch = varlen_batch([3, 6], [4, 6], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator, device=device)
    args = (batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k, None, None, None,
            None, 6, 6, 0.2, 0.0, -1, 0)
    torch.library.opcheck(ops_module.ops.fwd.default, (*args, True, None, 0.25, state))
    _, lse = ops_module.ops.fwd(*args, True, None, 0.25, state)
    torch.library.opcheck(ops_module.ops.dropout_probs.default,
                          (*args, None, 0.25, state, lse))


def test_sdpa_mask_and_dropout_together(fa, variant, device, dropout_build, generator):
    """A float attn_mask that requires grad (with -inf entries) and dropout in one SDPA call:
    the mask biases the scaled scores, dropout multiplies the softmax's probabilities (torch's
    order; the lse is the undropped one). out, dq, dk, dv and the mask's gradient against
    float64 with the same dropout mask."""
    N, H, L, S, E, p = 2, 2, 24, 40, 32, 0.2
    q, k, v = (leaf(random_tensor((N, H, n, E), torch.float32, generator, device=device))
               for n in (L, S, S))
    bias = torch.randn(N, 1, L, S, generator=generator)
    bias[torch.rand(N, 1, L, S, generator=generator) < 0.3] = -math.inf
    bias[:, :, :, :2] = 0.0  # every row keeps a key
    mask = leaf(bias.to(device))
    if not dropout_build:
        with pytest.raises(NotImplementedError, match="dropout_p"):
            fa.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return
    torch.manual_seed(11)
    out = fa.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    dout = torch.randn(out.shape, generator=generator).to(device)
    got = torch.autograd.grad(out, [q, k, v, mask], dout)

    factors = fixed_factors(drawn_words(11), p, N, H, L, S)
    drop = torch.stack([factors(b, L, S) for b in range(N)])  # [N, H, L, S]
    ref_in = [leaf(t.detach().cpu().double()) for t in (q, k, v, mask)]
    rq, rk, rv, rm = ref_in
    probs = torch.softmax(rq @ rk.transpose(-1, -2) * E ** -0.5 + rm, dim=-1)
    ref_out = (probs * drop) @ rv
    assert_close(out, ref_out, torch.float32)
    want = torch.autograd.grad(ref_out, ref_in, dout.cpu().double())
    for name, g, w in zip(("dq", "dk", "dv", "dmask"), got, want):
        torch.testing.assert_close(g.double().cpu(), w, atol=2e-5, rtol=2e-5,
                                   msg=lambda m: f"{name}: {m}")


# ---------------------------------------------------------------- the two builds, one mask

@pytest.mark.skipif(CPU_BUILD_ONLY, reason="needs both builds: MFS_CPU_BUILD runs one cpu build")
def test_cpu_build_and_metal_kernels_draw_the_same_mask(generator):
    """One call, one seed, both builds (the Metal kernels in the simulator): the same output and
    gradients up to float32 rounding; another seed changes them by far more. A decode-sized
    sequence (the Metal plan sends dropout calls to the prefill) and a window whose tiles start
    off multiples of 4 keys (a Metal lane's key pair then spans two Philox blocks)."""
    from conftest import load_kernel

    batch = varlen_batch([5, 40, 17], [30, 60, 30], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator)
    dout = torch.randn(batch.q.shape, generator=generator)

    def run(build, seed):
        q, k, v = leaf(batch.q), leaf(batch.k), leaf(batch.v)
        torch.manual_seed(seed)
        out = load_kernel(build).flash_attn_varlen_func(
            q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k, 40, 60, dropout_p=0.3,
            window_size=(21, 3))
        return [out.detach(), *torch.autograd.grad(out, [q, k, v], dout)]

    cpu, metal, other_seed = run("cpu", 5), run("sim", 5), run("sim", 6)
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), cpu, metal, other_seed):
        scale = max(1.0, a.abs().max().item())
        assert max_error(b, a) <= 1e-5 * scale, f"{name}: the builds differ by {max_error(b, a):.3g}"
        assert max_error(c, a) > 1e-2 * scale, f"{name}: another seed gives the same {name}"


@pytest.mark.skipif(CPU_BUILD_ONLY, reason="needs both builds: MFS_CPU_BUILD runs one cpu build")
def test_cpu_build_and_metal_kernels_write_the_same_s_dmask(generator):
    """S_dmask of one call, one seed, on both builds (metal/attention_probabilities.metal in the
    simulator): equal up to float32 rounding, entry for entry with its sign (dropped entries,
    zeros outside the sequences), over every score rule at once (window, softcap, ALiBi, sinks,
    GQA, seqused_q/seqused_k, a slot with no used query)."""
    from conftest import load_kernel

    batch = varlen_batch([5, 40, 3, 17], [30, 60, 4, 30], heads=4, heads_kv=2, head_dim=40,
                         dtype=torch.float32, generator=generator)
    slopes = torch.rand(4, generator=generator)
    sinks = torch.randn(4, generator=generator)
    used_q = torch.tensor([5, 33, 0, 17], dtype=torch.int32)
    used_k = torch.tensor([30, 51, 4, 12], dtype=torch.int32)

    def run(build, seed):
        torch.manual_seed(seed)
        return load_kernel(build).flash_attn_varlen_func(
            batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k, 40, 60,
            dropout_p=0.3, window_size=(21, 3), softcap=4.0, alibi_slopes=slopes, s_aux=sinks,
            seqused_q=used_q, seqused_k=used_k, return_attn_probs=True)[2]

    cpu, metal, other_seed = run("cpu", 5), run("sim", 5), run("sim", 6)
    assert torch.equal(torch.signbit(cpu), torch.signbit(metal)), "the builds drop other entries"
    assert max_error(metal, cpu) <= 1e-5, f"the builds differ by {max_error(metal, cpu):.3g}"
    assert not torch.equal(torch.signbit(other_seed), torch.signbit(cpu)), \
        "another seed gives the same mask"
