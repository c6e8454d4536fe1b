"""A refused flash_attn_with_kvcache call writes nothing into the caches under torch.compile as in
eager mode: every check runs before the append (inside the append op, which runs as a unit in the
compiled graph), and the error names the argument."""

from __future__ import annotations

import pytest
import torch

from batches import random_tensor

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's


def tensors(generator, device, paged):
    q = random_tensor((2, 1, 4, 16), torch.float32, generator, device=device)
    cache_shape = (6, 4, 2, 16) if paged else (2, 8, 2, 16)
    k_cache, v_cache = (random_tensor(cache_shape, torch.float32, generator, device=device)
                        for _ in range(2))
    k, v = (random_tensor((2, 3, 2, 16), torch.float32, generator, device=device)
            for _ in range(2))
    table = (torch.tensor([[4, 1], [0, 5]], dtype=torch.int32, device=device) if paged
             else None)
    return q, k_cache, v_cache, k, v, table


# name -> (cache_seqlens, extra keyword arguments, words the error must contain)
REFUSALS = {
    "cache_seqlens_past_the_cache": ([2, 6], {}, ["cache_seqlens"]),
    "cache_seqlens_negative": ([-1, 2], {}, ["cache_seqlens"]),
    "alibi_slopes_wrong_shape": ([2, 3], {"alibi_slopes": torch.ones(3)}, ["alibi_slopes"]),
}


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refused_compiled_call_leaves_the_cache(fa, device, generator, paged, name):
    lengths, extra, words = REFUSALS[name]
    q, k_cache, v_cache, k, v, table = tensors(generator, device, paged)
    extra = {key: value.to(device) for key, value in extra.items()}
    before = (k_cache.clone(), v_cache.clone())
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def step(q, k_cache, v_cache, k, v, lengths):
        return fa.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, cache_seqlens=lengths,
                                          block_table=table, causal=True, **extra)

    with pytest.raises(ValueError) as caught:
        step(q, k_cache, v_cache, k, v, torch.tensor(lengths, dtype=torch.int32, device=device))
    for word in words:
        assert word in str(caught.value), f"{word!r} not in {caught.value}"
    assert torch.equal(k_cache, before[0]) and torch.equal(v_cache, before[1])
