"""Errors say what is wrong: each names the argument and the rule (docs/API.md, "Bad input"),
where a torch or Python error (ZeroDivisionError, IndexError, a device message about a numpy
scalar) used to come out; and numpy integers are accepted wherever a Python int is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batches import random_tensor, varlen_batch
from reference import Semantics, assert_close, attention_one_sequence, attention_varlen

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's


def cache_call(generator, device, **changes):
    q = random_tensor((2, 1, 4, 16), torch.float32, generator, device=device)
    k_cache = random_tensor((3, 8, 2, 16), torch.float32, generator, device=device)
    v_cache = random_tensor((3, 8, 2, 16), torch.float32, generator, device=device)
    return {**dict(q=q, k_cache=k_cache, v_cache=v_cache, cache_seqlens=3), **changes}


# name -> (the call's keyword changes, exception, words the message must contain)
KVCACHE_ERRORS = {
    "head_dim_0": (lambda a: dict(q=a["q"][..., :0], k_cache=a["k_cache"][..., :0],
                                  v_cache=a["v_cache"][..., :0]), ValueError, ["head_dim"]),
    "block_table_1d": (lambda a: dict(block_table=torch.zeros(2, dtype=torch.int32,
                                                              device=a["q"].device)),
                       ValueError, ["block_table", "[batch=2, max_pages]"]),
    "cache_seqlens_float": (lambda a: dict(cache_seqlens=3.0), ValueError, ["cache_seqlens"]),
    "cache_seqlens_list": (lambda a: dict(cache_seqlens=[3, 3]), ValueError, ["cache_seqlens"]),
    "cache_batch_idx_past_cache": (
        lambda a: dict(cache_batch_idx=torch.tensor([0, 3], dtype=torch.int32,
                                                    device=a["q"].device)),
        ValueError, ["cache_batch_idx", "[0, 3)"]),
    "cache_batch_idx_negative": (
        lambda a: dict(cache_batch_idx=torch.tensor([-1, 0], dtype=torch.int32,
                                                    device=a["q"].device)),
        ValueError, ["cache_batch_idx"]),
}


@pytest.mark.parametrize("name", sorted(KVCACHE_ERRORS))
def test_kvcache_errors_name_the_argument(fa, device, generator, name):
    change, error, words = KVCACHE_ERRORS[name]
    args = cache_call(generator, device)
    k_new = random_tensor((2, 1, 2, 16), torch.float32, generator, device=device)
    args = {**args, **change(args)}
    before = (args["k_cache"].clone(), args["v_cache"].clone())
    with pytest.raises(error) as caught:
        fa.flash_attn_with_kvcache(k=k_new[..., :args["k_cache"].shape[-1]],
                                   v=k_new[..., :args["k_cache"].shape[-1]], **args)
    for word in words:
        assert word in str(caught.value), f"{word!r} not in {caught.value}"
    assert torch.equal(args["k_cache"], before[0]) and torch.equal(args["v_cache"], before[1])


@pytest.mark.parametrize("entry", ["fixed", "varlen", "legacy"])
def test_head_dim_0_names_head_dim(fa, device, entry):
    q = torch.randn(2, 3, 4, 0, device=device)
    cu = torch.tensor([0, 3, 6], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="head_dim"):
        if entry == "fixed":
            fa.flash_attn_func(q, q, q)
        elif entry == "varlen":
            fa.flash_attn_varlen_func(q.flatten(0, 1), q.flatten(0, 1), q.flatten(0, 1), cu, cu,
                                      3, 3)
        else:
            fa.flash_attention_varlen(torch.empty(6, 4, 0, device=device), q.flatten(0, 1),
                                      q.flatten(0, 1), q.flatten(0, 1), cu, cu, 3, 3)


@pytest.mark.parametrize("kind", [np.int32, np.int64, np.uint16])
def test_numpy_integers_are_ints(fa, device, generator, kind):
    """max_seqlen_* and cache_seqlens accept numpy integers as flash-attn's callers pass them."""
    batch = varlen_batch([3, 5], [4, 6], heads=4, heads_kv=2, head_dim=16, dtype=torch.float32,
                         generator=generator, device=device)
    out = fa.flash_attn_varlen_func(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                    batch.cu_seqlens_k, kind(batch.max_seqlen_q),
                                    kind(batch.max_seqlen_k), causal=True)
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q.cpu(),
                              batch.cu_seqlens_k.cpu(), Semantics(scale=0.25, causal=True))
    assert_close(out, ref, torch.float32)

    args = cache_call(generator, device, cache_seqlens=kind(3))
    out = fa.flash_attn_with_kvcache(**args)
    for b in range(2):
        ref, _ = attention_one_sequence(args["q"][b], args["k_cache"][b, :3],
                                        args["v_cache"][b, :3], Semantics(scale=0.25), b)
        assert_close(out[b], ref, torch.float32)
