"""Every bad input of docs/API.md raises a clear error naming the argument, before anything is
written, leaving the inputs unchanged. The inputs are on the variant's device (conftest.py)."""

from __future__ import annotations

import math

import pytest
import torch

from batches import random_tensor, varlen_batch

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's
# Offset values that only the host can check: on a GPU they are not read back (that would stall
# every call); the kernels clamp to the tensors instead (docs/API.md, "Bad input"). These cases
# are refused on the CPU builds only.
VALUES_CHECKED_ON_HOST_ONLY = {"cu_seqlens_decreasing", "cu_seqlens_not_from_zero",
                               "cu_seqlens_past_tensor", "max_seqlen_too_small",
                               "block_table_page_out_of_range"}


def good_call(generator, device, dtype=torch.float16):
    batch = varlen_batch([3, 5], [4, 6], heads=4, heads_kv=2, head_dim=64, dtype=dtype,
                         generator=generator, device=device)
    return dict(q=batch.q, k=batch.k, v=batch.v, cu_seqlens_q=batch.cu_seqlens_q,
                cu_seqlens_k=batch.cu_seqlens_k, max_seqlen_q=batch.max_seqlen_q,
                max_seqlen_k=batch.max_seqlen_k)


def wrong(args, **changes):
    return {**args, **changes}


def on_q(a, values, dtype=torch.int32):
    """A tensor of `values` on the device of the call's q."""
    return torch.tensor(values, dtype=dtype, device=a["q"].device)


def widen(t, head_dim):
    """t's values repeated along the last dim up to head_dim."""
    return t.repeat(1, 1, -(-head_dim // t.shape[-1]))[..., :head_dim].contiguous()


# name -> (how to break a good call, exception type, words the message must contain)
BAD_INPUTS = {
    "dtype_mismatch_k": (lambda a: wrong(a, k=a["k"].float()), ValueError, ["k", "dtype"]),
    "dtype_mismatch_v": (lambda a: wrong(a, v=a["v"].bfloat16()), ValueError, ["v", "dtype"]),
    "integer_q": (lambda a: wrong(a, q=a["q"].to(torch.int32)), ValueError, ["q"]),
    "cu_seqlens_int64": (lambda a: wrong(a, cu_seqlens_q=a["cu_seqlens_q"].long()), ValueError,
                         ["cu_seqlens_q", "int32"]),
    "cu_seqlens_k_float": (lambda a: wrong(a, cu_seqlens_k=a["cu_seqlens_k"].float()),
                           ValueError, ["cu_seqlens_k", "int32"]),
    "cu_seqlens_decreasing": (
        lambda a: wrong(a, cu_seqlens_q=on_q(a, [0, 5, 3])),
        ValueError, ["cu_seqlens_q", "non-decreasing"]),
    "cu_seqlens_not_from_zero": (
        lambda a: wrong(a, cu_seqlens_k=on_q(a, [1, 4, 10])),
        ValueError, ["cu_seqlens_k", "start at 0"]),
    "cu_seqlens_past_tensor": (
        lambda a: wrong(a, cu_seqlens_k=on_q(a, [0, 4, 11]),
                        max_seqlen_k=7),
        ValueError, ["cu_seqlens_k", "rows"]),
    "cu_seqlens_batch_mismatch": (
        lambda a: wrong(a, cu_seqlens_k=on_q(a, [0, 10])),
        ValueError, ["cu_seqlens_k", "entries"]),
    "max_seqlen_too_small": (lambda a: wrong(a, max_seqlen_q=2), ValueError, ["max_seqlen_q"]),
    "max_seqlen_float": (lambda a: wrong(a, max_seqlen_k=6.0), ValueError, ["max_seqlen_k"]),
    "heads_not_divisible": (lambda a: wrong(a, k=a["k"].repeat(1, 2, 1)[:, :3],
                                            v=a["v"].repeat(1, 2, 1)[:, :3]),
                            ValueError, ["heads"]),
    "kv_heads_differ": (lambda a: wrong(a, v=a["v"][:, :1]), ValueError, ["v"]),
    "head_dim_not_multiple_of_8": (lambda a: wrong(a, q=a["q"][..., :60], k=a["k"][..., :60],
                                                   v=a["v"][..., :60]),
                                   ValueError, ["head_dim", "multiple of 8"]),
    "head_dim_too_large": (lambda a: wrong(a, q=a["q"].repeat(1, 1, 9), k=a["k"].repeat(1, 1, 9),
                                           v=a["v"].repeat(1, 1, 9)),
                           ValueError, ["head_dim", "512"]),
    # One step past the widest head dim (512), for q/k and for v alone.
    "head_dim_520": (lambda a: wrong(a, q=widen(a["q"], 520), k=widen(a["k"], 520),
                                     v=widen(a["v"], 520)),
                     ValueError, ["head_dim of q", "512", "520"]),
    "v_head_dim_520": (lambda a: wrong(a, v=widen(a["v"], 520)), ValueError,
                       ["head_dim of v", "512", "520"]),
    "k_head_dim_differs": (lambda a: wrong(a, k=a["k"][..., :32]), ValueError, ["k", "head_dim"]),
    "last_dim_not_contiguous": (lambda a: wrong(a, q=a["q"].transpose(0, 2).contiguous()
                                                .transpose(0, 2)),
                                ValueError, ["q", "contiguous"]),
    "q_wrong_rank": (lambda a: wrong(a, q=a["q"][None]), ValueError, ["q"]),
    "alibi_wrong_shape": (lambda a: wrong(a, alibi_slopes=on_q(a, [1.0] * 3, torch.float32)),
                          ValueError,
                          ["alibi_slopes"]),
    "alibi_wrong_dtype": (lambda a: wrong(a, alibi_slopes=on_q(a, [1.0] * 4, torch.float16)),
                          ValueError, ["alibi_slopes", "float32"]),
    "s_aux_wrong_shape": (lambda a: wrong(a, s_aux=on_q(a, [[1.0] * 2] * 2, torch.float32)),
                          ValueError, ["s_aux"]),
    "window_below_minus_one": (lambda a: wrong(a, window_size=(-2, 0)), ValueError,
                               ["window_size"]),
    "negative_softcap": (lambda a: wrong(a, softcap=-1.0), ValueError, ["softcap"]),
    # Numbers the op cannot represent (float32 scores, int32 windows) are refused, not rounded.
    "window_past_int32": (lambda a: wrong(a, window_size=(2**32 + 5, -1)), ValueError,
                          ["window_size", "int32"]),
    "window_right_past_int32": (lambda a: wrong(a, window_size=(-1, 2**31)), ValueError,
                                ["window_size", "int32"]),
    "window_float": (lambda a: wrong(a, window_size=(2.5, -1)), ValueError, ["window_size"]),
    "softcap_past_float32": (lambda a: wrong(a, softcap=1e300), ValueError,
                             ["softcap", "float32"]),
    "softcap_inf": (lambda a: wrong(a, softcap=math.inf), ValueError, ["softcap", "float32"]),
    "softcap_below_float32": (lambda a: wrong(a, softcap=1e-300), ValueError,
                              ["softcap", "float32"]),
    "softmax_scale_past_float32": (lambda a: wrong(a, softmax_scale=1e300), ValueError,
                                   ["softmax_scale", "float32"]),
    "softmax_scale_negative_past_float32": (lambda a: wrong(a, softmax_scale=-1e39), ValueError,
                                            ["softmax_scale", "float32"]),
    "softmax_scale_nan": (lambda a: wrong(a, softmax_scale=math.nan), ValueError,
                          ["softmax_scale", "float32"]),
    "dropout_past_one": (lambda a: wrong(a, dropout_p=1.5), ValueError, ["dropout_p"]),
    "dropout_nan": (lambda a: wrong(a, dropout_p=math.nan), ValueError, ["dropout_p"]),
    "block_table_int64": (lambda a: wrong(a, k=a["k"].view(2, 5, 2, 64), v=a["v"].view(2, 5, 2, 64),
                                          block_table=on_q(a, [[0, 0], [0, 0]], torch.int64)),
                          ValueError, ["block_table", "int32"]),
    "block_table_page_out_of_range": (
        lambda a: wrong(a, k=a["k"].view(2, 5, 2, 64), v=a["v"].view(2, 5, 2, 64),
                        block_table=on_q(a, [[0, 1], [2, 0]])),
        ValueError, ["block_table", "num_pages"]),
    "wrong_device": (lambda a: wrong(a, k=a["k"].to("meta")), RuntimeError, ["k", "device"]),
}


@pytest.mark.kernels_ci
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_naming_the_argument(fa, device, generator, case):
    if device.type != "cpu" and case in VALUES_CHECKED_ON_HOST_ONLY:
        pytest.skip(f"{case}: offset values are checked only where the host reads them (cpu)")
    make_bad, error, words = BAD_INPUTS[case]
    args = make_bad(good_call(generator, device))
    snapshot = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)
                and v.device.type != "meta"}
    with pytest.raises(error) as info:
        fa.flash_attn_varlen_func(**args)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in error message: {message}"
    for name, before in snapshot.items():  # bit for bit, a NaN equal only to a NaN in its place
        torch.testing.assert_close(args[name], before, rtol=0, atol=0, equal_nan=True,
                                   msg=lambda m: f"{name} was modified: {m}")


@pytest.mark.kernels_ci
def test_bad_out_is_rejected_before_writing(fa, device, generator):
    args = good_call(generator, device)
    for out, words in [
        (torch.full((8, 4, 32), math.nan, dtype=torch.float16, device=device), ["out", "shape"]),
        (torch.full((8, 4, 64), math.nan, dtype=torch.float32, device=device), ["out", "dtype"]),
        (torch.full((64, 4, 8), math.nan, dtype=torch.float16, device=device).transpose(0, 2),
         ["out"]),
    ]:
        with pytest.raises(ValueError) as info:
            fa.flash_attention_varlen(out, args["q"], args["k"], args["v"], args["cu_seqlens_q"],
                                      args["cu_seqlens_k"], args["max_seqlen_q"],
                                      args["max_seqlen_k"])
        for word in words:
            assert word in str(info.value)
        assert out.isnan().all(), "out was written before the error"


@pytest.mark.kernels_ci
def test_fixed_length_batch_mismatch(fa, device, generator):
    q = random_tensor((2, 5, 4, 64), torch.float32, generator, device=device)
    k = random_tensor((3, 5, 4, 64), torch.float32, generator, device=device)
    with pytest.raises(ValueError, match="batch"):
        fa.flash_attn_func(q, k, k)


def fixed_call(generator, device):
    return {name: random_tensor(shape, torch.float32, generator, device=device)
            for name, shape in (("q", (2, 5, 4, 64)), ("k", (2, 7, 2, 64)), ("v", (2, 7, 2, 64)))}


# The same numbers through every other entry point: (changes, words).
BAD_NUMBERS = {
    "window": (dict(window_size=(2**32 + 5, -1)), ["window_size"]),
    "softcap": (dict(softcap=1e300), ["softcap"]),
    "softmax_scale": (dict(softmax_scale=1e300), ["softmax_scale"]),
}


@pytest.mark.kernels_ci
@pytest.mark.parametrize("case", sorted(BAD_NUMBERS))
def test_bad_numbers_fixed_length(fa, device, generator, case):
    changes, words = BAD_NUMBERS[case]
    with pytest.raises(ValueError, match=words[0]):
        fa.flash_attn_func(**fixed_call(generator, device), **changes)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("case", sorted(BAD_NUMBERS))
def test_bad_numbers_kvcache_leave_the_cache_unchanged(fa, device, generator, case):
    changes, words = BAD_NUMBERS[case]
    args = fixed_call(generator, device)
    k_cache = torch.zeros(2, 9, 2, 64, device=device)
    v_cache = torch.zeros(2, 9, 2, 64, device=device)
    with pytest.raises(ValueError, match=words[0]):
        fa.flash_attn_with_kvcache(args["q"], k_cache, v_cache, args["k"][:, :2], args["v"][:, :2],
                                   cache_seqlens=3, **changes)
    assert not k_cache.any() and not v_cache.any(), "the cache was written before the error"


@pytest.mark.kernels_ci
@pytest.mark.parametrize("name,value", [("scale", 1e300), ("softcapping", 1e300),
                                        ("softcapping", math.nan), ("scale", -math.inf)])
def test_bad_numbers_legacy(fa, device, generator, name, value):
    a = good_call(generator, device)
    out = torch.full((8, 4, 64), math.nan, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match=name):
        fa.flash_attention_varlen(out, a["q"], a["k"], a["v"], a["cu_seqlens_q"], a["cu_seqlens_k"],
                                  a["max_seqlen_q"], a["max_seqlen_k"], **{name: value})
    assert out.isnan().all(), "out was written before the error"


def op_args(a, **changes):
    """The op schema's arguments (torch_binding.cpp) for a good varlen call."""
    args = dict(q=a["q"], k=a["k"], v=a["v"], cu_seqlens_q=a["cu_seqlens_q"],
                cu_seqlens_k=a["cu_seqlens_k"], seqused_k=None, block_table=None,
                alibi_slopes=None, s_aux=None, max_seqlen_q=a["max_seqlen_q"],
                max_seqlen_k=a["max_seqlen_k"], softmax_scale=0.125, softcap=0.0, window_left=-1,
                window_right=-1, return_lse=False)
    return list({**args, **changes}.values())


@pytest.mark.kernels_ci
@pytest.mark.parametrize("changes,word", [
    (dict(window_left=2**32 + 5), "window_size"),
    (dict(window_right=-2), "window_size"),
    (dict(softmax_scale=1e300), "softmax_scale"),
    (dict(softcap=1e300), "softcap"),
    (dict(softcap=1e-300), "softcap"),
], ids=["window_past_int32", "window_below_minus_one", "scale_past_float32",
        "softcap_past_float32", "softcap_below_float32"])
def test_the_op_itself_refuses_bad_numbers(fa, device, generator, changes, word):
    """The shared C++ checks hold without the Python entry points (a direct op call)."""
    a = good_call(generator, device)
    with pytest.raises(ValueError, match=word):
        fa._ops.ops.fwd(*op_args(a, **changes))
    out = torch.full((8, 4, 64), math.nan, dtype=torch.float16, device=device)
    with pytest.raises(ValueError, match=word):
        fa._ops.ops.fwd_into(out, *op_args(a, **changes))
    assert out.isnan().all(), "out was written before the error"


WIDE_WINDOWS = [(2**31 - 1, 2**31 - 1), (2**31 - 1, -1), (-1, 2**31 - 1), (40, 40), (17, 9)]


@pytest.mark.kernels_ci
@pytest.mark.parametrize("window", WIDE_WINDOWS, ids=str)
@pytest.mark.parametrize("paged", [False, True], ids=["packed", "paged"])
def test_window_wider_than_every_sequence_is_unbounded(fa, device, generator, window, paged):
    """Sequences of at most 17 keys and 9 queries: every window above is at least as wide as
    them, so the result is the unbounded one (exactly), never a truncated window."""
    from batches import paged_cache
    from reference import Semantics, assert_close, assert_lse_close, attention_varlen

    batch = varlen_batch([9, 1, 0, 4], [17, 5, 3, 2], heads=4, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator, device=device)
    k, v, table = batch.k, batch.v, None
    if paged:
        k, v, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, 4, generator)

    def run(window_size, causal=False):
        return fa.flash_attn_varlen_func(batch.q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                                         batch.max_seqlen_q, batch.max_seqlen_k, causal=causal,
                                         window_size=window_size, block_table=table,
                                         return_attn_probs=True)[:2]

    for causal in (False, True):
        out, lse = run(window, causal)
        unbounded_out, unbounded_lse = run((-1, -1), causal)
        assert torch.equal(out, unbounded_out) and torch.equal(lse, unbounded_lse)
        ref_out, ref_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                            batch.cu_seqlens_k,
                                            Semantics(scale=32**-0.5, causal=causal))
        assert_close(out, ref_out, torch.float32)
        assert_lse_close(lse, ref_lse)


@pytest.mark.kernels_ci
def test_widest_window_through_the_op_and_fixed_length(fa, device, generator):
    """2**31 - 1 reaches the C++ checks unchanged; they clamp it to unbounded (the kernels'
    int32 position arithmetic would overflow on it)."""
    from reference import Semantics, assert_close, attention_fixed

    a = fixed_call(generator, device)
    widest = 2**31 - 1
    out = fa.flash_attn_func(**a, window_size=(widest, widest))
    ref, _ = attention_fixed(a["q"], a["k"], a["v"], Semantics(scale=64**-0.5))
    assert_close(out, ref, torch.float32)
    b = good_call(generator, device, dtype=torch.float32)
    direct, _ = fa._ops.ops.fwd(*op_args(b, window_left=widest, window_right=widest))
    unbounded, _ = fa._ops.ops.fwd(*op_args(b))
    assert torch.equal(direct, unbounded)
