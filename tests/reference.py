"""The float64 reference every test compares against: attention written plainly, one sequence and
one head at a time, straight from docs/API.md's definitions (independent of the kernels' code)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class Semantics:
    scale: float
    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0  # flash-attn convention: 0 = off
    alibi_slopes: Optional[torch.Tensor] = None  # [H] or [B, H]
    sinks: Optional[torch.Tensor] = None  # [H]
    # Dropout: (batch_index, sq, sk) -> [H, sq, sk] factors of the probabilities (1 / (1 - p) for
    # a kept entry, 0 for a dropped one), applied after the softmax (lse is the undropped one's).
    dropout_factors: Optional[Callable[[int, int, int], torch.Tensor]] = None


def attention_one_sequence(q, k, v, sem: Semantics, batch_index: int, dtype=torch.float64):
    """q [sq, H, D], k [sk, Hkv, D], v [sk, Hkv, Dv] -> out [sq, H, Dv], lse [H, sq], computed in
    `dtype` (float64: the reference; the inputs' dtype: torch's eager math, as a baseline).
    Differentiable: rows that see no key give zero gradients (no NaN)."""
    sq, heads, _ = q.shape
    sk, heads_kv, dv = v.shape
    group = heads // heads_kv
    q64, k64, v64 = q.cpu().to(dtype), k.cpu().to(dtype), v.cpu().to(dtype)  # any device in
    k64 = k64.repeat_interleave(group, dim=1)  # [sk, H, D]
    v64 = v64.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q64, k64) * sem.scale  # [H, sq, sk]
    if sem.softcap > 0:
        scores = sem.softcap * torch.tanh(scores / sem.softcap)
    rows = torch.arange(sq).view(sq, 1)
    keys = torch.arange(sk).view(1, sk)
    diagonal = rows + sk - sq  # the key position a query row sits at (bottom-right)
    if sem.alibi_slopes is not None:
        slopes = sem.alibi_slopes.cpu().to(dtype)
        slopes = slopes[batch_index] if slopes.dim() == 2 else slopes
        scores = scores - slopes.view(heads, 1, 1) * (diagonal - keys).abs()
    left, right = sem.window
    if sem.causal:
        right = 0
    visible = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        visible &= keys >= diagonal - left
    if right >= 0:
        visible &= keys <= diagonal + right
    scores = scores.masked_fill(~visible, -math.inf)
    if sem.sinks is not None:
        sink = sem.sinks.cpu().to(dtype).view(heads, 1, 1).expand(heads, sq, 1)
        logits = torch.cat([scores, sink], dim=-1)
    else:
        logits = scores
    # Rows with no visible key: zeros, lse -inf (also with a sink). Their logits are replaced
    # before the softmax so that nothing (no NaN) flows back through them. A score of -inf (an
    # infinite input) drops its key as the mask does: without a sink, a row whose every visible
    # score is -inf is such a row too (docs/API.md, "NaN and Inf"); with one, the sink is left.
    empty = (~visible.any(dim=-1)).view(1, sq).expand(heads, sq)  # [H, sq]
    if sem.sinks is None:
        empty = empty | (~(scores > -math.inf).any(dim=-1) & ~scores.isnan().any(dim=-1))
    logits = logits.masked_fill(empty.unsqueeze(-1), 0.0)
    lse = torch.logsumexp(logits, dim=-1)  # [H, sq]
    # softmax, not exp(logits - lse): at scores of ~1e16 and beyond (a softcap of 1e30 on an
    # infinite score) lse cannot hold the log of the sum, and ties would not sum to 1. Where lse
    # is +inf (a +inf score: NaN; a +inf sink: 0 for every key) exp(logits - lse) is the rule.
    infinite = lse.isposinf().unsqueeze(-1)
    probs = torch.where(infinite, torch.exp(logits - lse.unsqueeze(-1)), torch.softmax(logits, dim=-1))
    probs = probs[..., :sk]
    if sem.dropout_factors is not None:
        probs = probs * sem.dropout_factors(batch_index, sq, sk).to(dtype)
    out = torch.einsum("hqk,khd->qhd", probs, v64)
    out = out.masked_fill(empty.transpose(0, 1).unsqueeze(-1), 0.0)
    lse = lse.masked_fill(empty, -math.inf)
    return out, lse


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, sem: Semantics, dtype=torch.float64):
    """Packed varlen reference. Rows of q outside every sequence stay 0 (lse -inf)."""
    total_q, heads, _ = q.shape
    out = torch.zeros(total_q, heads, v.shape[-1], dtype=dtype)
    lse = torch.full((heads, total_q), -math.inf, dtype=dtype)
    for b in range(len(cu_seqlens_q) - 1):
        q0, q1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1])
        k0, k1 = int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])
        if q1 == q0:
            continue
        o, l = attention_one_sequence(q[q0:q1], k[k0:k1], v[k0:k1], sem, b, dtype)
        out[q0:q1] = o
        lse[:, q0:q1] = l
    return out, lse


def attention_fixed(q, k, v, sem: Semantics, dtype=torch.float64):
    """q [B, Sq, H, D], k/v [B, Sk, Hkv, D] -> out [B, Sq, H, Dv], lse [B, H, Sq]."""
    outs, lses = [], []
    for b in range(q.shape[0]):
        o, l = attention_one_sequence(q[b], k[b], v[b], sem, b, dtype)
        outs.append(o)
        lses.append(l)
    return torch.stack(outs), torch.stack(lses)


# Per-dtype tolerances on outputs whose values are O(1): the kernel accumulates in fp32 and rounds
# the output once to the dtype; inputs are identical (rounded) in reference and kernel.
TOLERANCE = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
LSE_TOLERANCE = dict(atol=1e-4, rtol=1e-4)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what="out"):
    actual = actual.cpu()  # the kernel's output, from the variant's device
    assert not actual.isnan().any(), f"{what} contains NaN"
    torch.testing.assert_close(actual.double(), expected.double(), **TOLERANCE[dtype], msg=lambda m: f"{what}: {m}")


def assert_lse_close(actual: torch.Tensor, expected: torch.Tensor):
    actual = actual.cpu()
    assert actual.dtype == torch.float32, "lse must be fp32"
    assert not actual.isnan().any(), "lse contains NaN"
    # -inf where the reference has -inf; close elsewhere.
    assert torch.equal(torch.isneginf(actual), torch.isneginf(expected)), "lse -inf rows differ"
    finite = ~torch.isneginf(expected)
    torch.testing.assert_close(actual.double()[finite], expected[finite], **LSE_TOLERANCE)
