"""softcap over its whole range, forward and backward, against the float64 reference.

softcap divides the scaled scores before tanh: a large softcap (1e6 .. 1e30: effectively off)
gives tanh tiny arguments, where tanh(x) = 1 - 2 / (e^{2x} + 1) cancels to 0 (uniform attention);
a tiny one (1e-3) saturates every score. Every kernel is held to the same per-dtype bound as
without softcap, on scores of O(1-10) (scale 1) so that a wrong cap shows. The cpu kernels of
every instruction set run this module (tests/test_cpu_instruction_sets.py): the row-vectorised
tiles (many rows per sequence) and the few-rows (decode) tiles both run here."""

from __future__ import annotations

import pytest
import torch

from batches import varlen_batch
from reference import Semantics, assert_close, assert_lse_close, attention_varlen
from test_backward import varlen_case

SOFTCAPS = [1e-3, 0.1, 1.0, 30.0, 1e3, 1e6, 1e8, 1e30]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", SOFTCAPS)
def test_forward_over_the_range_of_softcap(fa, device, generator, dtype, softcap):
    # Sequence 0 fills the row-vectorised tiles, sequence 1 (one query, 2 heads per kv head) the
    # few-rows tiles; causal so that both masked and unmasked tiles run.
    lengths_q, lengths_k = [37, 1], [50, 70]
    batch = varlen_batch(lengths_q, lengths_k, heads=4, heads_kv=2, head_dim=64, dtype=dtype,
                         generator=generator, device=device)
    scale = 1.0 / 3.0  # q.k/3 of ~N(0, 64): scores of std ~2.7
    sem = Semantics(scale=scale, causal=True, softcap=softcap)
    want_out, want_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                          batch.cu_seqlens_k, sem)
    scores = torch.einsum("qhd,khd->hqk", batch.q[:37].double().cpu(),
                          batch.k[:50].double().cpu().repeat_interleave(2, dim=1)) * scale
    assert scores.std() > 2.0, "scores must spread for a wrong cap to show"
    out, lse, _ = fa.flash_attn_varlen_func(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                            batch.cu_seqlens_k, max(lengths_q), max(lengths_k),
                                            softmax_scale=scale, causal=True, softcap=softcap,
                                            return_attn_probs=True)
    assert_close(out, want_out, dtype)
    assert_lse_close(lse, want_lse)


@pytest.mark.parametrize("softcap", SOFTCAPS)
def test_backward_over_the_range_of_softcap(fa, device, generator, softcap):
    # Gradients through the cap (its derivative 1 - tanh^2 included) against float64 autograd,
    # within test_backward's bound; scale 1 on head dim 32: scores of std ~5.7.
    varlen_case(fa, device, generator, torch.float32, [21, 1], [30, 9], heads=4, heads_kv=2,
                softcap=softcap, causal=True, scale=1.0)
