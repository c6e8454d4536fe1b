"""Autograd of flash_attn_varlen_func / flash_attn_func: gradients of q, k, v and s_aux against
float64 autograd of the reference (tests/reference.py), held to torch's own accuracy in the same
dtype on the same inputs; bitwise repeatable; no NaN and zeros where nothing flows back.

Every test runs on each build variant (conftest.py): `cpu` (the C++ backward) and `sim` (the Metal
backward kernels, metal/attention_backward.metal, run by the MSL simulator), and `mps` on a Mac.
The sizes are the same on every variant (the simulator runs these in seconds)."""

from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from batches import random_tensor, varlen_batch
from reference import Semantics, attention_fixed, attention_one_sequence, attention_varlen

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# Ours may be this many times torch's error (max abs, against float64), plus a margin of a few
# units in the last place of an O(1) gradient in the dtype.
ERROR_FACTOR = 2.0
MARGIN = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}

# Inputs are built on the variant's device (on a Mac the Metal build runs on mps).
INPUTS_ON_VARIANT_DEVICE = True


def leaf(t: torch.Tensor) -> torch.Tensor:
    """A leaf requiring grad that keeps t's strides (strided views stay strided)."""
    return t.detach().requires_grad_()


def assert_runs_bitwise_equal(runs):
    """Every run's gradients are the first run's, bit for bit."""
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)


def poisoned_grads(*tensors):
    for t in tensors:
        if t is not None:
            t.grad = None


def grads_of(tensors):
    return [None if t is None else t.grad for t in tensors]


def torch_baseline_varlen(q, k, v, cu_q, cu_k, sem: Semantics):
    """torch's own attention in the inputs' dtype: SDPA per sequence (bool mask, GQA) where SDPA
    has the features; the eager math of the reference in the dtype otherwise (softcap, sinks)."""
    if sem.softcap > 0 or sem.sinks is not None:
        return attention_varlen(q, k, v, cu_q, cu_k, sem, dtype=q.dtype)[0]
    outs = []
    heads, heads_kv = q.shape[1], k.shape[1]
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        sq, sk = q1 - q0, k1 - k0
        rows = torch.arange(sq).view(sq, 1)
        keys = torch.arange(sk).view(1, sk)
        diagonal = rows + sk - sq
        left, right = sem.window
        right = 0 if sem.causal else right
        visible = torch.ones(sq, sk, dtype=torch.bool)
        if left >= 0:
            visible &= keys >= diagonal - left
        if right >= 0:
            visible &= keys <= diagonal + right
        bias = torch.zeros(heads, sq, sk, dtype=q.dtype).masked_fill(~visible, -math.inf)
        bias = bias.to(q.device)
        if sem.alibi_slopes is not None:
            s = sem.alibi_slopes[b] if sem.alibi_slopes.dim() == 2 else sem.alibi_slopes
            bias = bias - (s.view(heads, 1, 1).cpu() * (diagonal - keys).abs()).to(q.dtype).to(q.device)
        o = F.scaled_dot_product_attention(
            q[q0:q1].transpose(0, 1), k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1),
            attn_mask=bias, scale=sem.scale, enable_gqa=heads != heads_kv).transpose(0, 1)
        empty = ~visible.any(dim=-1)
        outs.append(o.masked_fill(empty.view(sq, 1, 1).to(q.device), 0.0))
    out = torch.cat(outs) if outs else q.new_zeros(0, heads, v.shape[-1])
    pad = q.shape[0] - out.shape[0]
    return torch.cat([out, out.new_zeros(pad, *out.shape[1:])]) if pad else out


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if not actual.numel():
        return 0.0
    return (actual.detach().cpu().double() - expected.detach().cpu().double()).abs().max().item()


def check_gradients(ours, reference, baseline, inputs, dtype, names=("q", "k", "v", "s_aux"),
                    factor=ERROR_FACTOR):
    """Runs ours / the float64 reference / torch's baseline on the same inputs and incoming
    gradient; every gradient of ours is finite, has its input's dtype and shape, and is within
    `factor` of torch's error plus MARGIN."""
    out = ours(*inputs)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    dout = dout.to(out.device)
    got = torch.autograd.grad(out, [t for t in inputs if t is not None], dout)
    ref_inputs = [None if t is None else leaf(t.detach().cpu().double()) for t in inputs]
    ref_out = reference(*ref_inputs)
    want = torch.autograd.grad(ref_out, [t for t in ref_inputs if t is not None],
                               dout.cpu().double())
    base_inputs = [None if t is None else leaf(t.detach()) for t in inputs]
    base_out = baseline(*base_inputs)
    base = torch.autograd.grad(base_out, [t for t in base_inputs if t is not None], dout,
                               allow_unused=True)
    present = [n for n, t in zip(names, inputs) if t is not None]
    for name, t, g, w, b in zip(present, [t for t in inputs if t is not None], got, want, base):
        assert g.dtype == t.dtype and g.shape == t.shape, f"d{name}: {g.dtype} {g.shape}"
        assert g.device == t.device, f"d{name} on {g.device}"
        assert torch.isfinite(g).all(), f"d{name} is not finite"
        ours_err = max_error(g, w)
        torch_err = max_error(b, w) if b is not None else 0.0
        bound = factor * torch_err + MARGIN[dtype] * max(1.0, w.abs().max().item())
        assert ours_err <= bound, (f"d{name} ({dtype}): error {ours_err:.3g} vs torch's "
                                   f"{torch_err:.3g} (bound {bound:.3g})")
    return got


def varlen_case(fa, device, generator, dtype, lengths_q, lengths_k, heads=4, heads_kv=2, head_dim=32,
                head_dim_v=None, sinks=False, alibi=None, softcap=0.0, causal=False,
                window=(-1, -1), scale=None, strided=False, padding_rows=0, factor=ERROR_FACTOR):
    batch = varlen_batch(lengths_q, lengths_k, heads=heads, heads_kv=heads_kv,
                         head_dim=head_dim, head_dim_v=head_dim_v, dtype=dtype,
                         generator=generator, strided=strided, padding_rows=padding_rows,
                         device=device)
    s_aux = torch.randn(heads, generator=generator).to(device) if sinks else None
    slopes = None
    if alibi == "heads":
        slopes = torch.rand(heads, generator=generator).to(device)
    elif alibi == "batch":
        slopes = torch.rand(len(lengths_q), heads, generator=generator).to(device)
    softmax_scale = scale if scale is not None else head_dim ** -0.5
    sem = Semantics(scale=softmax_scale, causal=causal, window=window, softcap=softcap,
                    alibi_slopes=slopes)
    cu_q, cu_k = batch.cu_seqlens_q, batch.cu_seqlens_k
    max_q, max_k = max(lengths_q, default=0), max(lengths_k, default=0)

    def ours(q, k, v, s):
        return fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k,
                                         softmax_scale=scale, causal=causal, window_size=window,
                                         softcap=softcap, alibi_slopes=slopes, s_aux=s)

    def with_sinks(fn):
        def call(q, k, v, s):
            sem.sinks = s
            return fn(q, k, v, cu_q, cu_k, sem)
        return call

    reference = with_sinks(lambda *a: attention_varlen(*a)[0])
    baseline = with_sinks(torch_baseline_varlen)
    inputs = [leaf(batch.q), leaf(batch.k), leaf(batch.v), None if s_aux is None else leaf(s_aux)]
    return check_gradients(ours, reference, baseline, inputs, dtype, factor=factor), batch


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_gqa_zero_length_and_padding(fa, device, generator, dtype, causal):
    # sq != sk, a sequence without queries, one without keys (its rows see nothing: zero dq),
    # a long one spanning several key and query tiles, rows past the last sequence.
    (dq, dk, dv), batch = varlen_case(fa, device, generator, dtype, [5, 0, 70, 3, 9],
                                      [9, 4, 140, 0, 9], causal=causal, padding_rows=3)
    assert torch.equal(dq[-3:], torch.zeros_like(dq[-3:])), "rows outside sequences: dq = 0"
    assert torch.equal(dq[75:78], torch.zeros_like(dq[75:78])), "rows without keys: dq = 0"


@pytest.mark.parametrize("dtype", DTYPES)
def test_sinks_window_softcap_alibi(fa, device, generator, dtype):
    # gpt-oss: sinks with a sliding window (bottom-right); every row sees keys.
    varlen_case(fa, device, generator, dtype, [6, 33, 1], [6, 40, 3], heads=4, heads_kv=1,
                sinks=True, causal=True, window=(7, -1))
    # Gemma 2: softcap; ALiBi per head and per sequence; a window with rows that see nothing.
    varlen_case(fa, device, generator, dtype, [12, 4], [20, 4], softcap=5.0, causal=True)
    varlen_case(fa, device, generator, dtype, [7, 10], [9, 3], alibi="batch", window=(2, 1),
                sinks=True)
    varlen_case(fa, device, generator, dtype, [8, 5], [8, 5], alibi="heads", softcap=2.0,
                scale=0.3, window=(-1, 2))


@pytest.mark.kernels_ci
def test_sink_gradient_of_rows_that_see_no_key(fa, device, generator):
    # Sequence 1 has queries but no keys: its rows output zeros and contribute nothing to d s_aux.
    (dq, dk, dv, ds), batch = varlen_case(fa, device, generator, torch.float32, [4, 3], [5, 0],
                                          sinks=True)
    assert torch.equal(dq[4:], torch.zeros_like(dq[4:]))


# Every multiple of 8 up to 256, and a few above it up to 512 (Gemma 4's global layers): the
# simulator is slowest at the widest tiles.
@pytest.mark.parametrize("head_dim", [*range(8, 257, 8), 264, 384, 504, 512])
def test_every_head_dim(fa, device, generator, head_dim):
    head_dim_v = {8: 16, 64: 128, 256: 64, 264: 136, 512: 256}.get(head_dim)  # V's own head dim
    varlen_case(fa, device, generator, torch.float32, [3, 9], [5, 9], heads=2, heads_kv=1,
                head_dim=head_dim, head_dim_v=head_dim_v, causal=head_dim % 16 == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_value_head_dim_512_with_narrower_queries(fa, device, generator, dtype):
    # V wider than q/k (the reverse, 512 / 256, is in test_every_head_dim).
    varlen_case(fa, device, generator, dtype, [4, 13], [9, 13], heads=4, heads_kv=2,
                head_dim=256, head_dim_v=512, causal=True, sinks=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [72, 128, 192, 256, 512])
def test_half_precision_head_dims(fa, device, generator, dtype, head_dim):
    # The 16-bit tiles (other tile sizes and threadgroup layouts than float32's).
    varlen_case(fa, device, generator, dtype, [5, 18], [9, 18], heads=4, heads_kv=2,
                head_dim=head_dim, causal=True, sinks=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim, head_dim_v", [(40, 24), (64, 128), (256, 72)])
def test_half_precision_value_head_dims(fa, device, generator, dtype, head_dim, head_dim_v):
    # V's own head dim, dims that are not whole 16-lane registers, several key tiles and row
    # blocks of odd sizes (the cpu's bf16 kernel pairs rows and keys).
    varlen_case(fa, device, generator, dtype, [67, 9], [131, 9], heads=4, heads_kv=2,
                head_dim=head_dim, head_dim_v=head_dim_v, causal=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_strided_inputs(fa, device, generator, dtype):
    (dq, dk, dv), batch = varlen_case(fa, device, generator, dtype, [6, 11], [8, 11], strided=True,
                                      causal=True)
    assert batch.q.stride(-2) != batch.q.shape[-1], "the inputs are strided views"
    assert dq.shape == batch.q.shape


@pytest.mark.parametrize("rows_q, rows_k, head_dim, head_dim_v, window, softcap", [
    pytest.param(9, 13, 64, 32, (5, -1), 3.0, marks=pytest.mark.kernels_ci),
    (7, 11, 512, 512, (-1, -1), 5.0),  # Gemma 4's global layers
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fixed_length(fa, device, generator, dtype, rows_q, rows_k, head_dim, head_dim_v, window,
                      softcap):
    """flash_attn_func: GQA, causal, window, softcap and sinks."""
    q = leaf(random_tensor((2, rows_q, 4, head_dim), dtype, generator, device=device))
    k = leaf(random_tensor((2, rows_k, 2, head_dim), dtype, generator, device=device))
    v = leaf(random_tensor((2, rows_k, 2, head_dim_v), dtype, generator, device=device))
    s_aux = leaf(torch.randn(4, generator=generator).to(device))
    sem = Semantics(scale=head_dim ** -0.5, causal=True, window=window, softcap=softcap)

    def ours(q, k, v, s):
        return fa.flash_attn_func(q, k, v, causal=True, window_size=window, softcap=softcap,
                                  s_aux=s)

    def with_sinks(dt):
        def call(q, k, v, s):
            sem.sinks = s
            return attention_fixed(q, k, v, sem, dtype=dt)[0]
        return call

    check_gradients(ours, with_sinks(torch.float64), with_sinks(dtype), [q, k, v, s_aux], dtype)


# Large scores (softmax_scale 1.0, as Gemma 4: q and k are RMS-normed instead), wide heads, long
# sequences and GQA groups: where a backward's fp32 errors outgrow torch's. Probabilities are
# recomputed as exp(S - lse) with the forward's lse, so the error of the recomputed S does not
# cancel as it does in torch's softmax, and dK, dV, dQ are long sums. The cpu backward sums S and
# dP in pieces of 32 dims and each block's share of dK, dV, dQ apart (backward_tile_kernel.h),
# and is held to FP32_LARGE_SCORES_FACTOR; it was 3-11x torch's error before (issue 9). The
# Metal kernels sum S in the same groups in the prefill and the backward
# (mfs_score_group_chunks, bwd_finish); with the prefill's groups of 32 columns and the backward's
# partials summed in one run, it was ~3x torch's dv error at head dim 512 or 96, scale 1.0.
FP32_LARGE_SCORES_FACTOR = 1.5


@pytest.mark.parametrize("head_dim, scale, causal, heads, lengths, sinks", [
    (512, 1.0, False, (4, 2), [200, 56], False),
    (96, 1.0, False, (4, 2), [200, 56], False),
    (128, 1.0, True, (8, 2), [256], False),
    (512, None, True, (4, 2), [100, 37, 119], True),
])
def test_fp32_large_scores_wide_heads_long_sums(fa, device, generator, variant, head_dim, scale,
                                                causal, heads, lengths, sinks):
    varlen_case(fa, device, generator, torch.float32, lengths, lengths, heads=heads[0],
                heads_kv=heads[1], head_dim=head_dim, scale=scale, causal=causal, sinks=sinks,
                factor=FP32_LARGE_SCORES_FACTOR)


@pytest.mark.parametrize("lengths_q, lengths_k, heads, heads_kv, head_dim", [
    pytest.param([100, 37, 200], [130, 37, 200], 8, 2, 64, marks=pytest.mark.kernels_ci),
    # Gemma 4's global layers (on Metal the tile whose streamed rows go to registers)
    ([7, 20], [7, 33], 4, 2, 512),
])
def test_gradients_are_bitwise_repeatable(fa, device, generator, monkeypatch, lengths_q,
                                          lengths_k, heads, heads_kv, head_dim):
    # In the simulator each run takes another thread schedule (the order GPU threads interleave
    # in): no atomics and fixed reduction orders make the gradients independent of it.
    batch = varlen_batch(lengths_q, lengths_k, heads=heads, heads_kv=heads_kv, head_dim=head_dim,
                         dtype=torch.bfloat16, generator=generator, device=device)
    s_aux = torch.randn(heads, generator=generator).to(device)
    dout = random_tensor(batch.q.shape, torch.bfloat16, generator, device=device)
    runs = []
    for schedule in ("inorder", "reverse", "random"):
        monkeypatch.setenv("MFS_SIM_SCHEDULE", schedule)
        inputs = [leaf(batch.q), leaf(batch.k), leaf(batch.v), leaf(s_aux)]
        out = fa.flash_attn_varlen_func(*inputs[:3], batch.cu_seqlens_q, batch.cu_seqlens_k,
                                        max(lengths_q), max(lengths_k), causal=True,
                                        s_aux=inputs[3], deterministic=True)
        runs.append(torch.autograd.grad(out, inputs, dout))
    assert_runs_bitwise_equal(runs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_do_not_depend_on_the_thread_count(fa, device, generator, dtype):
    # The cpu backward splits its work by shape only and sums every partial result in a fixed
    # order, so any number of threads gives the same bits.
    lengths = [300, 37, 1, 130]
    batch = varlen_batch(lengths, lengths, heads=8, heads_kv=2, head_dim=64, dtype=dtype,
                         generator=generator, device=device)
    dout = random_tensor(batch.q.shape, dtype, generator, device=device)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            inputs = [leaf(batch.q), leaf(batch.k), leaf(batch.v)]
            out = fa.flash_attn_varlen_func(*inputs, batch.cu_seqlens_q, batch.cu_seqlens_k,
                                            max(lengths), max(lengths), causal=True)
            runs.append(torch.autograd.grad(out, inputs, dout))
    finally:
        torch.set_num_threads(threads)
    assert_runs_bitwise_equal(runs)


@pytest.mark.kernels_ci
def test_lse_is_not_differentiated(fa, device, generator):
    batch = varlen_batch([4, 6], [4, 6], heads=2, heads_kv=2, head_dim=16, dtype=torch.float32,
                         generator=generator, device=device)
    q = leaf(batch.q)
    out, lse, _ = fa.flash_attn_varlen_func(q, batch.k, batch.v, batch.cu_seqlens_q,
                                            batch.cu_seqlens_k, 6, 6, return_attn_probs=True)
    assert out.requires_grad and not lse.requires_grad


@pytest.mark.kernels_ci
def test_calls_that_cannot_be_differentiated_raise(fa, device, generator):
    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    q = leaf(randn(2, 3, 4, 32))
    k_cache = randn(2, 8, 2, 32)
    v_cache = randn(2, 8, 2, 32)
    new_k = randn(2, 1, 2, 32)
    before = k_cache.clone()
    with pytest.raises(NotImplementedError, match="flash_attn_with_kvcache"):
        fa.flash_attn_with_kvcache(q, k_cache, v_cache, new_k, new_k.clone(), cache_seqlens=3)
    assert torch.equal(k_cache, before), "the cache is untouched when the call is refused"
    with torch.no_grad():  # inference is fine
        fa.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=3)

    # Paged K/V through the varlen entry point.
    qv = leaf(randn(5, 4, 32))
    cu_q = torch.tensor([0, 2, 5], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 6, 10], dtype=torch.int32, device=device)
    pages = randn(4, 4, 2, 32)
    table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32, device=device)
    with pytest.raises(NotImplementedError, match="block_table"):
        fa.flash_attn_varlen_func(qv, pages, pages, cu_q, cu_k, 3, 6, block_table=table)

    # The in-place legacy entry point is not differentiable: it refuses rather than drop grads.
    out = torch.empty(5, 4, 32, device=device)
    kv = randn(5, 2, 32)
    with pytest.raises(NotImplementedError, match="not differentiable"):
        fa.flash_attention_varlen(out, qv, kv, kv, cu_q, cu_q, 3, 3)
    with torch.no_grad():
        fa.flash_attention_varlen(out, qv, kv, kv, cu_q, cu_q, 3, 3)


def bwd_op(fa, name):
    ops_module = __import__(fa.__name__ + "._ops", fromlist=["ops"])
    return getattr(ops_module.ops, name).default


@pytest.mark.kernels_ci
def test_forward_and_backward_compile_fullgraph(fa, device, generator):
    batch = varlen_batch([5, 12], [7, 12], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator, device=device)
    s_aux = torch.randn(4, generator=generator).to(device)
    dout = torch.randn(batch.q.shape, generator=generator).to(device)

    def step(q, k, v, s):
        out = fa.flash_attn_varlen_func(q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k, 12,
                                        12, causal=True, softcap=4.0, s_aux=s)
        return (out * dout).sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    eager_inputs = [leaf(batch.q), leaf(batch.k), leaf(batch.v), leaf(s_aux)]
    compiled_inputs = [leaf(batch.q), leaf(batch.k), leaf(batch.v), leaf(s_aux)]
    step(*eager_inputs).backward()
    compiled(*compiled_inputs).backward()
    for a, b in zip(eager_inputs, compiled_inputs):
        assert b.grad is not None
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.kernels_ci
def test_opcheck_with_autograd(fa, device, generator):
    batch = varlen_batch([3, 6], [4, 6], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator, device=device)
    s_aux = leaf(torch.randn(4, generator=generator).to(device))
    args = (leaf(batch.q), leaf(batch.k), leaf(batch.v), batch.cu_seqlens_q, batch.cu_seqlens_k,
            None, None, None, s_aux, 6, 6, 0.2, 3.0, -1, 0, True)
    torch.library.opcheck(bwd_op(fa, "fwd"), args)  # incl. autograd registration, AOT dispatch
    q = leaf(torch.randn(2, 5, 4, 16, generator=generator).to(device))
    torch.library.opcheck(bwd_op(fa, "fwd"), (q, leaf(q.detach()[:, :, :2]),
                                              leaf(q.detach()[:, :, :2]), None, None, None,
                                              None, torch.rand(4, generator=generator).to(device),
                                              None, 0, 0, 0.3, 0.0, 2, 1, True))
    out, lse = bwd_op(fa, "fwd")(*[a.detach() if isinstance(a, torch.Tensor) else a
                                   for a in args])
    dout = torch.randn(out.shape, generator=generator).to(device)
    torch.library.opcheck(bwd_op(fa, "bwd"), (dout, batch.q, batch.k, batch.v, out, lse,
                                              batch.cu_seqlens_q, batch.cu_seqlens_k, None,
                                              s_aux.detach(), 6, 6, 0.2, 3.0, -1, 0))
