"""A seeded random draw of a few hundred configurations over every axis at once."""

from __future__ import annotations

import random

import pytest
import torch

from batches import paged_cache, varlen_batch, widen_head_dims
from reference import Semantics, assert_close, assert_lse_close, attention_varlen

CONFIGS = 300
INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's


def draw(rng: random.Random):
    n_seq = rng.randint(1, 4)
    lengths_q, lengths_k = [], []
    for _ in range(n_seq):
        kind = rng.choice(["equal", "decode", "prefix", "short_k", "empty_q", "empty_k"])
        n = rng.randint(1, 70)
        lengths_k.append({"empty_k": 0}.get(kind, n))
        lengths_q.append({"equal": n, "decode": rng.randint(1, 4), "prefix": rng.randint(1, n),
                          "short_k": n + rng.randint(1, 10), "empty_q": 0,
                          "empty_k": rng.randint(1, 5)}[kind])
    heads_kv = rng.choice([1, 2, 3])
    window = (rng.choice([-1, -1, 0, 3, 17]), rng.choice([-1, -1, 0, 5]))
    c = dict(
        lengths_q=lengths_q, lengths_k=lengths_k, heads_kv=heads_kv,
        heads=heads_kv * rng.choice([1, 2, 4]),
        head_dim=8 * rng.randint(1, 32), head_dim_v=8 * rng.randint(1, 32) if rng.random() < 0.2 else None,
        dtype=rng.choice([torch.float32, torch.float16, torch.bfloat16]),
        causal=rng.random() < 0.5, window=window,
        softcap=rng.choice([0.0, 0.0, 1.0, 20.0]),
        alibi=rng.choice([None, None, "per_head", "per_batch"]),
        sinks=rng.random() < 0.3, strided=rng.random() < 0.3,
        page_size=rng.choice([None, None, None, 1, 3, 16]),
        scale=rng.choice([None, 0.05, 1.0]),
    )
    c["head_dim"], c["head_dim_v"] = widen_head_dims(rng, c["head_dim"], c["head_dim_v"])
    return c


@pytest.mark.parametrize("index", range(CONFIGS))
def test_random_config(fa, device, index):
    rng = random.Random(f"mfs-{index}")
    c = draw(rng)
    generator = torch.Generator().manual_seed(index)
    batch = varlen_batch(c["lengths_q"], c["lengths_k"], c["heads"], c["heads_kv"], c["head_dim"],
                         c["dtype"], generator, head_dim_v=c["head_dim_v"], strided=c["strided"],
                         device=device)
    n_seq = len(c["lengths_q"])
    alibi = {None: None, "per_head": torch.rand(c["heads"], generator=generator),
             "per_batch": torch.rand(n_seq, c["heads"], generator=generator)}[c["alibi"]]
    sinks = torch.randn(c["heads"], generator=generator) if c["sinks"] else None
    alibi, sinks = [None if t is None else t.to(device) for t in (alibi, sinks)]
    k, v, table = batch.k, batch.v, None
    if c["page_size"]:
        k, v, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, c["page_size"], generator)
    scale = c["scale"] or c["head_dim"] ** -0.5
    out, lse, _ = fa.flash_attn_varlen_func(
        batch.q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k, batch.max_seqlen_q,
        batch.max_seqlen_k, softmax_scale=c["scale"], causal=c["causal"], window_size=c["window"],
        softcap=c["softcap"], alibi_slopes=alibi, s_aux=sinks, block_table=table,
        return_attn_probs=True)
    ref_out, ref_lse = attention_varlen(
        batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
        Semantics(scale=scale, causal=c["causal"], window=c["window"], softcap=c["softcap"],
                  alibi_slopes=alibi, sinks=sinks))
    assert_close(out, ref_out, c["dtype"], what=str(c))
    assert_lse_close(lse, ref_lse)
