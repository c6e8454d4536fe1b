"""scaled_dot_product_attention against torch's own SDPA (math backend, float64) on the same
inputs: torch's layout with any batch dims, every attn_mask kind and broadcast, top-left
is_causal, GQA, scale, Ev != E, views; forward and backward (the mask's gradient included); the
same errors as torch; the routing of F.scaled_dot_product_attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from reference import TOLERANCE, assert_close

INPUTS_ON_VARIANT_DEVICE = True
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Gradients: within this factor of torch's own error (in the input dtype) plus a margin.
ERROR_FACTOR = 2.0
MARGIN = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def reference(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """torch's math SDPA in float64. torch 2.13 combines attn_mask with is_causal (its fused
    path; the math path refuses the pair): the reference then applies the top-left causal mask
    to attn_mask itself."""
    q, k, v = (t.cpu().double() for t in (q, k, v))
    if attn_mask is not None:
        attn_mask = attn_mask.cpu()
        attn_mask = attn_mask if attn_mask.dtype == torch.bool else attn_mask.double()
        if is_causal:
            keep = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool).tril()
            attn_mask = (attn_mask & keep if attn_mask.dtype == torch.bool
                         else attn_mask.masked_fill(~keep, float("-inf")))
            is_causal = False
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                              scale=scale, enable_gqa=enable_gqa)


def randn(generator, *shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=generator).to(dtype).to(device)


def mask_of(kind, generator, n, h, L, S, dtype, device):
    """attn_mask of one kind, as models pass them."""
    def keep(*shape, p=0.3):
        return (torch.rand(*shape, generator=generator) > p).to(device)
    if kind == "key_padding":  # [N, 1, 1, S], one batch row's keys all padded away
        m = keep(n, 1, 1, S)
        m[0, ..., S // 2:] = False
        return m
    if kind == "full_bool":
        return keep(n, h, L, S)
    if kind == "shared_bool":  # [L, S]
        return keep(L, S)
    if kind == "head_rows_bool":  # [H, L, 1]: broadcast over batch and keys, some rows empty
        return keep(h, L, 1, p=0.2)
    if kind == "tiles_bool":  # whole 64-key tiles open, closed and mixed, and fully masked rows
        m = torch.ones(n, 1, L, S, dtype=torch.bool)
        m[..., :, 64:128] = False
        m[..., ::3, 128:] = torch.rand(n, 1, len(range(0, L, 3)), S - 128, generator=generator) > 0.5
        m[..., 1, :] = False
        return m.to(device)
    if kind == "full_float":  # a bias with -inf holes, in the query's dtype
        bias = torch.randn(n, h, L, S, generator=generator)
        return bias.masked_fill(torch.rand(n, h, L, S, generator=generator) < 0.2,
                                float("-inf")).to(dtype).to(device)
    if kind == "position_bias":  # [1, H, L, S] fp32 (T5, Swin): broadcast over batch
        return torch.randn(1, h, L, S, generator=generator).to(device)
    if kind == "padding_float":  # [N, 1, 1, S]: 0 or -inf, fp32
        return torch.zeros(n, 1, 1, S).masked_fill(
            ~(torch.rand(n, 1, 1, S, generator=generator) > 0.3), float("-inf")).to(device)
    raise ValueError(kind)


MASKS = ["key_padding", "full_bool", "shared_bool", "head_rows_bool", "tiles_bool", "full_float",
         "position_bias", "padding_float"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("is_causal", [False, True])
def test_masks(fa, device, generator, dtype, kind, is_causal):
    n, h, L, S, e = 2, 3, 150, 200, 64
    q = randn(generator, n, h, L, e, dtype=dtype, device=device)
    k = randn(generator, n, h, S, e, dtype=dtype, device=device)
    v = randn(generator, n, h, S, e, dtype=dtype, device=device)
    mask = mask_of(kind, generator, n, h, L, S, dtype, device)
    if is_causal and mask.dim() == 3:  # torch 2.13 combines the pair for 2-D and 4-D masks only
        expect_same_error(fa, q, k, v, attn_mask=mask, is_causal=True)
        return
    out = fa.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    assert out.shape == (n, h, L, e) and out.dtype == dtype and out.is_contiguous()
    assert_close(out, reference(q, k, v, mask, is_causal), dtype)
    if is_causal:  # torch's own (fused) computation of the pair
        want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                              attn_mask=mask if mask.dtype == torch.bool else mask.float(),
                                              is_causal=True)
        assert_close(out, want, dtype)


def test_fully_masked_rows_are_zeros_as_in_torch(fa, device, generator):
    q, k, v = (randn(generator, 1, 2, 5, 8, device=device) for _ in range(3))
    for mask in (torch.zeros(5, 5, dtype=torch.bool), torch.full((5, 5), float("-inf"))):
        out = fa.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(device))
        want = reference(q, k, v, mask)
        assert torch.equal(want, torch.zeros_like(want))  # torch 2.13's answer
        assert torch.equal(out.cpu(), torch.zeros_like(out.cpu()))


# A finite bias as large as a float allows (transformers pads with torch.finfo(dtype).min):
# (query dtype, mask dtype, value).
HUGE_BIASES = {
    "f32_finfo_min": (torch.float32, torch.float32, torch.finfo(torch.float32).min),
    "f32_-1e38": (torch.float32, torch.float32, -1e38),
    "f16_finfo_min": (torch.float16, torch.float16, torch.finfo(torch.float16).min),
    "bf16_finfo_min": (torch.bfloat16, torch.bfloat16, torch.finfo(torch.bfloat16).min),
    "bf16_f32_finfo_min": (torch.bfloat16, torch.float32, torch.finfo(torch.float32).min),
}


def huge_bias_mask(generator, n, h, L, S, fill, full_rows=True):
    """An ordinary float bias with `fill` (finite) where models pad: keys past 64 of batch 1 (a
    mix of `fill` and ordinary entries in every row), every other key of one row, a row of `fill`
    beside one -inf; with full_rows, rows whose every key is `fill`. Row 21 of (0, 0) is -inf."""
    mask = torch.randn(n, h, L, S, generator=generator)
    mask[1, :, :, 64:] = fill
    mask[0, 1, 17, ::2] = fill
    mask[0, 0, 21, :] = float("-inf")  # saw no key: zeros, as torch
    if full_rows:
        mask[0, :, 3, :] = fill
        mask[1, 0, 9, :] = fill
        mask[0, 0, 22, :] = fill
        mask[0, 0, 22, 5] = float("-inf")
    return mask


@pytest.mark.parametrize("case", sorted(HUGE_BIASES))
def test_rows_of_huge_finite_bias_as_in_torch(fa, device, generator, case):
    """A finite bias is a score, never a removal, however large: in torch a row whose every key
    has torch.finfo(float32).min has all its scores rounded to one value, so its softmax is
    uniform (the mean of V), not the zeros of a row that saw no key; in a row with ordinary
    scores such a key gets probability 0 (fp16's finfo.min, -65504, keeps the scores apart)."""
    dtype, mask_dtype, fill = HUGE_BIASES[case]
    n, h, L, S, e = 2, 2, 40, 90, 32
    q, k, v = (randn(generator, n, h, m, e, dtype=dtype, device=device) for m in (L, S, S))
    mask = huge_bias_mask(generator, n, h, L, S, fill).to(mask_dtype).to(device)
    out = fa.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    want = reference(q, k, v, mask)
    assert_close(out, want, dtype)
    assert torch.equal(out[0, 0, 21].cpu(), torch.zeros(e, dtype=dtype))
    if fill < -1e30:  # the mean of V, as torch
        assert_close(out[0, :, 3], v[0].double().mean(-2), dtype)


@pytest.mark.parametrize("case", sorted(HUGE_BIASES))
def test_gradients_through_huge_finite_bias_as_in_torch(fa, device, generator, case):
    """The backward through rows mixing huge finite and ordinary biases (the mask's gradient
    included) against the float64 math path; and through rows whose every key has the huge
    bias against torch's own default (fused, lse-based) CPU kernel, which is what both builds
    compute there: docs/API.md, "attn_mask"."""
    dtype, mask_dtype, fill = HUGE_BIASES[case]
    n, h, L, S, e = 2, 2, 40, 90, 32
    q, k, v = (randn(generator, n, h, m, e, dtype=dtype, device=device).requires_grad_(True)
               for m in (L, S, S))
    mask = huge_bias_mask(generator, n, h, L, S, fill, full_rows=False).to(mask_dtype)
    check_gradients(fa.scaled_dot_product_attention,
                    (q, k, v, mask.to(device).requires_grad_(True), {}), dtype)
    if dtype != torch.float32:
        return
    mask = huge_bias_mask(generator, n, h, L, S, fill).to(device)
    out = fa.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    dout = torch.randn(out.shape, generator=generator).to(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    base_in = [leaf(t.cpu()) for t in (q, k, v)]
    base_out = F.scaled_dot_product_attention(*base_in, attn_mask=mask.cpu())
    assert "Flash" in type(base_out.grad_fn).__name__  # torch's fused kernel, not its math path
    for name, g, w in zip("qkv", got, torch.autograd.grad(base_out, base_in, dout.cpu())):
        assert_close(g, w, dtype, what=f"d{name}")


@pytest.mark.parametrize("where", ["q", "k"])
def test_nan_score_at_a_removed_key_as_in_torch(fa, device, generator, where):
    """torch's math path adds a boolean mask's -inf to the scores: a NaN score at a key the mask
    removes is NaN + -inf = NaN, and its row is NaN. The forward (every instruction set: the
    mask's fast path) and the backward agree with it. Every key tile here is mixed (closed tiles
    are skipped unread)."""
    L, S, e = 70, 130, 32
    q, k, v = (randn(generator, 1, 2, n, e, device=device) for n in (L, S, S))
    mask = torch.rand(1, 2, L, S, generator=generator) > 0.5
    for key in (0, 64, 128):  # a kept and a removed key in each 64-key tile of every row
        mask[..., key], mask[..., key + 1] = True, False
    if where == "q":  # every score of row 5 of head 1 is NaN (removed keys included)
        q[0, 1, 5, 3] = float("nan")
    else:  # key 1, removed for every row: only the removed keys' scores are NaN
        k[0, 0, 1, 7] = float("nan")
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    out = fa.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(device))
    want = reference(q.detach(), k.detach(), v.detach(), mask)
    assert torch.equal(out.detach().cpu().isnan(), want.isnan()), "NaN rows differ from torch's"
    assert want.isnan().any() and not want.isnan().all()
    finite = ~want.isnan()
    assert_close(out.detach().cpu()[finite], want[finite], torch.float32)
    dq, = torch.autograd.grad(out, q, torch.randn(out.shape, generator=generator))
    rows_nan = want.isnan().any(-1)
    # The backward reads the same scores: dq is NaN in the NaN rows, finite in the others.
    assert torch.equal(dq.cpu().isnan().any(-1), rows_nan)
    assert torch.isfinite(dq.cpu()[~rows_nan]).all()


@pytest.mark.parametrize("L,S", [(50, 130), (130, 130), (130, 50), (1, 70), (70, 1)])
@pytest.mark.parametrize("enable_gqa", [False, True])
def test_causal_is_top_left(fa, device, generator, L, S, enable_gqa):
    hk = 2 if enable_gqa else 4
    q = randn(generator, 2, 4, L, 32, device=device)
    k = randn(generator, 2, hk, S, 32, device=device)
    v = randn(generator, 2, hk, S, 16, device=device)  # Ev != E
    out = fa.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
    assert_close(out, reference(q, k, v, is_causal=True, enable_gqa=enable_gqa), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [
    ((70, 32), (90, 32), (90, 24)),                      # no batch dims
    ((3, 70, 32), (3, 90, 32), (3, 90, 32)),             # heads only
    ((2, 3, 2, 40, 64), (2, 3, 2, 50, 64), (2, 3, 2, 50, 64)),  # two batch dims and heads
    ((2, 4, 40, 64), (1, 4, 50, 64), (1, 4, 50, 64)),    # K/V broadcast over the batch
    ((2, 4, 40, 64), (2, 1, 50, 64), (2, 1, 50, 64)),    # one K/V head broadcast (no enable_gqa)
])
def test_batch_dims_and_broadcast(fa, device, generator, dtype, shapes):
    q, k, v = (randn(generator, *s, dtype=dtype, device=device) for s in shapes)
    out = fa.scaled_dot_product_attention(q, k, v, scale=0.3)
    want = reference(q, k, v, scale=0.3)
    assert out.shape == want.shape
    assert_close(out, want, dtype)


def test_transposed_and_sliced_views(fa, device, generator):
    # [N, L, H, E] tensors seen as [N, H, L, E] (how models call SDPA), slices of a packed qkv
    qkv = randn(generator, 2, 90, 3, 4, 64, device=device)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    q = q[:, :, 10:80]
    out = fa.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert_close(out, reference(q, k, v, is_causal=True), torch.float32)
    vt = randn(generator, 2, 4, 64, 90, device=device).transpose(-1, -2)  # last dim strided
    out = fa.scaled_dot_product_attention(q, k, vt)
    assert_close(out, reference(q, k, vt), torch.float32)


def test_gqa_different_key_and_value_heads(fa, device, generator):
    q = randn(generator, 2, 8, 30, 32, device=device)
    k = randn(generator, 2, 4, 40, 32, device=device)
    v = randn(generator, 2, 2, 40, 32, device=device)
    out = fa.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert_close(out, reference(q, k, v, enable_gqa=True), torch.float32)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def check_gradients(ours, inputs, dtype):
    """Gradients of ours vs the float64 reference, each within ERROR_FACTOR of torch's own
    (default backend, input dtype) error plus MARGIN; dtype and shape of every input."""
    q, k, v, mask, kwargs = inputs
    tensors = [t for t in (q, k, v, mask) if t is not None and t.is_floating_point()]
    out = ours(q, k, v, mask, **kwargs)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out)
    got = torch.autograd.grad(out, tensors, dout)
    ref_in = [leaf(t.cpu().double()) if t is not None and t.is_floating_point() else t
              for t in (q, k, v, mask)]
    ref_out = reference(*ref_in[:3], ref_in[3], **kwargs)
    want = torch.autograd.grad(ref_out, [t for t in ref_in if t is not None and t.is_floating_point()],
                               dout.cpu().double())
    base_in = [leaf(t) if t is not None and t.is_floating_point() else t for t in (q, k, v, mask)]
    base_out = F.scaled_dot_product_attention(*base_in[:3], attn_mask=base_in[3], **kwargs)
    base = torch.autograd.grad(base_out, [t for t in base_in if t is not None and t.is_floating_point()],
                               dout)
    for name, t, g, w, b in zip("qkvm", tensors, got, want, base):
        assert g.dtype == t.dtype and g.shape == t.shape, f"d{name}: {g.dtype} {g.shape}"
        assert torch.isfinite(g).all(), f"d{name} is not finite"
        err = (g.cpu().double() - w).abs().max().item()
        torch_err = (b.cpu().double() - w).abs().max().item()
        bound = ERROR_FACTOR * torch_err + MARGIN[dtype] * max(1.0, w.abs().max().item())
        assert err <= bound, f"d{name} ({dtype}): error {err:.3g} vs torch's {torch_err:.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [None, "key_padding", "tiles_bool", "position_bias",
                                  "padding_float", "full_float", "shared_float"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_backward(fa, device, generator, dtype, kind, is_causal):
    n, h, hk, L, S = 2, 4, 2, 140, 190
    q = randn(generator, n, h, L, 64, dtype=dtype, device=device).requires_grad_(True)
    k = randn(generator, n, hk, S, 64, dtype=dtype, device=device).requires_grad_(True)
    # Ev != E, except where torch 2.13 would refuse attn_mask with is_causal for it (math path)
    ev = 64 if is_causal and kind is not None else 32
    v = randn(generator, n, hk, S, ev, dtype=dtype, device=device).requires_grad_(True)
    mask = None
    if kind == "shared_float":  # [L, S] learned bias
        mask = randn(generator, L, S, device=device)
    elif kind is not None:
        mask = mask_of(kind, generator, n, h, L, S, dtype, device)
    if mask is not None and mask.is_floating_point():
        mask.requires_grad_(True)
    if is_causal and mask is not None and mask.requires_grad:  # torch 2.13 refuses the pair
        expect_same_error(fa, q, k, v, attn_mask=mask, is_causal=True, enable_gqa=True)
        return
    check_gradients(fa.scaled_dot_product_attention,
                    (q, k, v, mask, dict(is_causal=is_causal, enable_gqa=True)), dtype)


def test_mask_gradient_is_bitwise_repeatable(fa, device, generator):
    q, k, v = (randn(generator, 3, 4, 130, 32, device=device).requires_grad_(True) for _ in range(3))
    bias = randn(generator, 1, 4, 130, 130, device=device).requires_grad_(True)
    runs = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        out = fa.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        runs.append(torch.autograd.grad(out.sum(), (q, k, v, bias)))
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


def expect_same_error(fa, *args, **kwargs):
    with pytest.raises(Exception) as theirs:
        F.scaled_dot_product_attention(*args, **kwargs)
    with pytest.raises(type(theirs.value)) as ours:
        fa.scaled_dot_product_attention(*args, **kwargs)
    # torch's message (up to its first parenthesis; ours may complete a truncated one)
    assert str(ours.value).startswith(str(theirs.value).split("(")[0].strip()), (ours, theirs)


def test_same_errors_as_torch(fa, device, generator):
    q, k, v = (randn(generator, 2, 4, 6, 8, device=device) for _ in range(3))
    expect_same_error(fa, q, k, v, attn_mask=torch.ones(6, 6, dtype=torch.int32, device=device))
    expect_same_error(fa, q, k, v, attn_mask=torch.ones(6, 6, dtype=torch.float64, device=device))
    expect_same_error(fa, q, k, v, attn_mask=torch.ones(5, 6, dtype=torch.bool, device=device))
    expect_same_error(fa, q, k, v, attn_mask=torch.ones(1, 2, 4, 6, 6, dtype=torch.bool, device=device))
    expect_same_error(fa, q, k, v, attn_mask=torch.ones(6, dtype=torch.bool, device=device))
    expect_same_error(fa, q[0, 0, 0], k, v)
    expect_same_error(fa, q, k.half(), v)
    expect_same_error(fa, q, k[:, :3], v[:, :3], enable_gqa=True)
    # attn_mask with is_causal where torch 2.13 falls back to its math path (not 4-D, a mask
    # that requires grad or is 3-D): it raises
    expect_same_error(fa, q[0], k[0], v[0], is_causal=True,
                      attn_mask=torch.ones(6, 6, dtype=torch.bool, device=device))
    expect_same_error(fa, q, k, v, is_causal=True,
                      attn_mask=torch.zeros(6, 6, device=device, requires_grad=True))
    expect_same_error(fa, q, k, v, is_causal=True,
                      attn_mask=torch.ones(4, 6, 6, dtype=torch.bool, device=device))


@pytest.mark.parametrize("bad", [-0.1, -1.0, 1.5, float("nan"), float("inf"), float("-inf"), "0.1"],
                         ids=str)
def test_bad_dropout_p_raises_as_torch(fa, device, generator, bad):
    """torch 2.13 raises for a dropout_p below 0 or above 1, NaN (RuntimeError) or not a number
    (TypeError); so do we, naming dropout_p. (Only torch's math backend, picked by hand, ignores a
    negative one.) Dropout itself: test_dropout.py::test_sdpa_dropout, routed:
    ::test_routed_training_step_with_dropout."""
    q = randn(generator, 1, 2, 4, 8, device=device)
    with pytest.raises(Exception) as theirs:
        F.scaled_dot_product_attention(q, q, q, dropout_p=bad)
    assert type(theirs.value) in (RuntimeError, TypeError)
    with pytest.raises(type(theirs.value), match="dropout_p"):
        fa.scaled_dot_product_attention(q, q, q, dropout_p=bad)


@pytest.mark.parametrize("one", [1.0, 1, True], ids=repr)
def test_dropout_p_one_is_refused_by_name(fa, device, generator, one):
    """torch drops every probability (zeros); the kernels do not take it: refused by name."""
    q = randn(generator, 1, 2, 4, 8, device=device)
    assert torch.equal(F.scaled_dot_product_attention(q, q, q, dropout_p=one), torch.zeros_like(q))
    with pytest.raises(NotImplementedError, match="dropout_p"):
        fa.scaled_dot_product_attention(q, q, q, dropout_p=one)


def test_routing(fa, variant, device, generator, monkeypatch):
    q, k, v = (randn(generator, 2, 4, 33, 64, device=device) for _ in range(3))
    calls = []
    kernel = fa._routing.scaled_dot_product_attention
    monkeypatch.setattr(fa._routing, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    original = F.scaled_dot_product_attention
    with fa.routed_sdpa():
        routed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch_only = F.scaled_dot_product_attention(q[..., :3], k[..., :3], v[..., :3])  # head dim 3
        dropout = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)  # the kernels' dropout
        try:  # a dropout_p outside [0, 1) is torch's to judge: what torch does, here too
            negative = F.scaled_dot_product_attention(q, k, v, dropout_p=-0.5)
        except RuntimeError as e:
            negative = str(e)
    assert F.scaled_dot_product_attention is original
    assert len(calls) == 2  # only the calls the kernels take (dropout: test_dropout.py)
    try:
        torch_negative = F.scaled_dot_product_attention(q, k, v, dropout_p=-0.5)
    except RuntimeError as e:
        torch_negative = str(e)
    assert type(negative) is type(torch_negative)
    assert negative == torch_negative if isinstance(negative, str) else \
        torch.equal(negative, torch_negative)
    assert_close(routed, reference(q, k, v, is_causal=True), torch.float32)
    assert_close(torch_only, reference(q[..., :3], k[..., :3], v[..., :3]), torch.float32)
    assert dropout.shape == routed.shape
    fa.route_sdpa()
    try:
        assert F.scaled_dot_product_attention is fa.sdpa_or_torch
        mask = torch.ones(33, 33, dtype=torch.bool, device=device).tril()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert_close(out, reference(q, k, v, mask), torch.float32)
    finally:
        fa.route_sdpa(False)
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention


def test_compile_fullgraph_routed(fa, device, generator):
    torch._dynamo.reset()
    q, k, v = (randn(generator, 2, 4, 40, 32, device=device).requires_grad_(True) for _ in range(3))
    bias = randn(generator, 1, 4, 40, 40, device=device).requires_grad_(True)

    def step(q, k, v, bias):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).square().sum()

    with fa.routed_sdpa():
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        loss = compiled(q, k, v, bias)
        grads = torch.autograd.grad(loss, [t for t in (q, k, v, bias) if t is not None])
    eager = torch.autograd.grad(step(q, k, v, bias), [t for t in (q, k, v, bias) if t is not None])
    for a, b in zip(grads, eager):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
