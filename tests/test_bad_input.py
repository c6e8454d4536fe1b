"""Every bad input of API.md raises a clear error naming the argument, before anything is
written, leaving the inputs unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from batches import varlen_batch


def good_call(generator, dtype=torch.float16):
    batch = varlen_batch([3, 5], [4, 6], heads=4, heads_kv=2, head_dim=64, dtype=dtype,
                         generator=generator)
    return dict(q=batch.q, k=batch.k, v=batch.v, cu_seqlens_q=batch.cu_seqlens_q,
                cu_seqlens_k=batch.cu_seqlens_k, max_seqlen_q=batch.max_seqlen_q,
                max_seqlen_k=batch.max_seqlen_k)


def wrong(args, **changes):
    return {**args, **changes}


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
        lambda a: wrong(a, cu_seqlens_q=torch.tensor([0, 5, 3], dtype=torch.int32)),
        ValueError, ["cu_seqlens_q", "non-decreasing"]),
    "cu_seqlens_not_from_zero": (
        lambda a: wrong(a, cu_seqlens_k=torch.tensor([1, 4, 10], dtype=torch.int32)),
        ValueError, ["cu_seqlens_k", "start at 0"]),
    "cu_seqlens_past_tensor": (
        lambda a: wrong(a, cu_seqlens_k=torch.tensor([0, 4, 11], dtype=torch.int32),
                        max_seqlen_k=7),
        ValueError, ["cu_seqlens_k", "rows"]),
    "cu_seqlens_batch_mismatch": (
        lambda a: wrong(a, cu_seqlens_k=torch.tensor([0, 10], dtype=torch.int32)),
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
    "head_dim_too_large": (lambda a: wrong(a, q=a["q"].repeat(1, 1, 5), k=a["k"].repeat(1, 1, 5),
                                           v=a["v"].repeat(1, 1, 5)),
                           ValueError, ["head_dim", "256"]),
    "k_head_dim_differs": (lambda a: wrong(a, k=a["k"][..., :32]), ValueError, ["k", "head_dim"]),
    "last_dim_not_contiguous": (lambda a: wrong(a, q=a["q"].transpose(0, 2).contiguous()
                                                .transpose(0, 2)),
                                ValueError, ["q", "contiguous"]),
    "q_wrong_rank": (lambda a: wrong(a, q=a["q"][None]), ValueError, ["q"]),
    "alibi_wrong_shape": (lambda a: wrong(a, alibi_slopes=torch.ones(3)), ValueError,
                          ["alibi_slopes"]),
    "alibi_wrong_dtype": (lambda a: wrong(a, alibi_slopes=torch.ones(4, dtype=torch.float16)),
                          ValueError, ["alibi_slopes", "float32"]),
    "s_aux_wrong_shape": (lambda a: wrong(a, s_aux=torch.ones(2, 2)), ValueError, ["s_aux"]),
    "window_below_minus_one": (lambda a: wrong(a, window_size=(-2, 0)), ValueError,
                               ["window_size"]),
    "negative_softcap": (lambda a: wrong(a, softcap=-1.0), ValueError, ["softcap"]),
    "dropout": (lambda a: wrong(a, dropout_p=0.1), NotImplementedError, ["dropout_p"]),
    "block_table_int64": (lambda a: wrong(a, k=a["k"].view(2, 5, 2, 64), v=a["v"].view(2, 5, 2, 64),
                                          block_table=torch.zeros(2, 2, dtype=torch.int64)),
                          ValueError, ["block_table", "int32"]),
    "block_table_page_out_of_range": (
        lambda a: wrong(a, k=a["k"].view(2, 5, 2, 64), v=a["v"].view(2, 5, 2, 64),
                        block_table=torch.tensor([[0, 1], [2, 0]], dtype=torch.int32)),
        ValueError, ["block_table", "num_pages"]),
    "wrong_device": (lambda a: wrong(a, k=a["k"].to("meta")), RuntimeError, ["k", "device"]),
}


@pytest.mark.kernels_ci
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_naming_the_argument(fa, generator, case):
    make_bad, error, words = BAD_INPUTS[case]
    args = make_bad(good_call(generator))
    snapshot = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)
                and v.device.type != "meta"}
    with pytest.raises(error) as info:
        fa.flash_attn_varlen_func(**args)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in error message: {message}"
    for name, before in snapshot.items():
        assert torch.equal(args[name], before, ) or (before.isnan() & args[name].isnan()).any(), \
            f"{name} was modified"


@pytest.mark.kernels_ci
def test_bad_out_is_rejected_before_writing(fa, generator):
    args = good_call(generator)
    for out, words in [
        (torch.full((8, 4, 32), math.nan, dtype=torch.float16), ["out", "shape"]),
        (torch.full((8, 4, 64), math.nan, dtype=torch.float32), ["out", "dtype"]),
        (torch.full((64, 4, 8), math.nan, dtype=torch.float16).transpose(0, 2), ["out"]),
    ]:
        with pytest.raises(ValueError) as info:
            fa.flash_attention_varlen(out, args["q"], args["k"], args["v"], args["cu_seqlens_q"],
                                      args["cu_seqlens_k"], args["max_seqlen_q"],
                                      args["max_seqlen_k"])
        for word in words:
            assert word in str(info.value)
        assert out.isnan().all(), "out was written before the error"


@pytest.mark.kernels_ci
def test_fixed_length_batch_mismatch(fa, generator):
    q = torch.randn(2, 5, 4, 64, generator=generator)
    k = torch.randn(3, 5, 4, 64, generator=generator)
    with pytest.raises(ValueError, match="batch"):
        fa.flash_attn_func(q, k, k)
