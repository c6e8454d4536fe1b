"""Dropout on the attention probabilities (flash-attn's `dropout_p`, torch SDPA's): the argument's
check and the call's random stream state.

The mask is a pure function of (seed, offset, query token, query head, key position)
(metal-flash-sdpa/common/dropout_stream.h): nothing of it is stored. The state of one call is
drawn from torch's default cpu generator, so `torch.manual_seed(s)` before a call reproduces its
mask; it is saved for the backward, which regenerates the same mask."""

from __future__ import annotations

import numbers
from typing import Optional

import torch


def resolve_dropout(dropout_p, name: str = "dropout_p") -> float:
    """`dropout_p` as a float in [0, 1): anything else (negative, 1 or more, NaN, not a number)
    is refused, naming the argument."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise ValueError(f"{name} must be a float in [0, 1), got {dropout_p!r}")
    p = float(dropout_p)
    if not (0.0 <= p < 1.0):  # false for NaN
        raise ValueError(f"{name} must be in [0, 1) (the probability that an attention "
                         f"probability is dropped), got {dropout_p!r}")
    return p


def draw_dropout_seed(dropout_p: float) -> Optional[torch.Tensor]:
    """The stream state of one call with dropout: int64 cpu tensor [3] = (seed_lo, seed_hi,
    offset), each a 32-bit word drawn by `torch.randint(0, 2**32, (3,))` from torch's default cpu
    generator. None (and nothing drawn) without dropout, so calls with dropout_p = 0 leave the
    generator as they found it."""
    if dropout_p == 0.0:
        return None
    return torch.randint(0, 2**32, (3,), dtype=torch.int64, device="cpu")

