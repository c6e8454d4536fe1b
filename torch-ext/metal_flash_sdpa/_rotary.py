"""Rotary embeddings for flash_attn_with_kvcache (flash-attn's rotary_cos / rotary_sin /
rotary_interleaved): the new keys and the queries are rotated at their positions in the cache
before the keys are appended. One vectorised pass over the whole batch (a gather of cos/sin at
every token's position, then the rotation in float32), no Python loop over tokens or sequences.

flash-attn's positions: new key i of sequence b sits at cache_seqlens[b] + i, its slot in the
cache (cache_leftpad does not move it: the padding slots count, as in flash-attn's kernel). The
queries take the same positions when the call is causal or windowed; otherwise every query of
sequence b is at cache_seqlens[b] (flash-attn treats them as one position)."""

from __future__ import annotations

import torch


def check_rotary(rotary_cos, rotary_sin, q: torch.Tensor, s_new: int | None, capacity: int,
                 queries_per_token: bool) -> None:
    """flash-attn's rules, each refused by name: both tables or neither, [seqlen_ro, rotary_dim / 2]
    floating tensors on q's device, rotary_dim <= head_dim, new tokens (s_new, None without k/v)
    to rotate, and a table row for every position a token can take: the cache's positions, and
    with per-token query positions the queries past the new tokens (cache_seqlens + s_new <=
    capacity bounds every position by capacity - s_new + seqlen_q - 1; no value is read back)."""
    if rotary_cos is None and rotary_sin is None:
        return
    if rotary_cos is None or rotary_sin is None:
        raise ValueError("rotary_cos and rotary_sin must be given together")
    if s_new is None:
        raise ValueError("rotary_cos / rotary_sin rotate the new tokens: they need k and v")
    for name, t in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor [seqlen_ro, rotary_dim / 2]")
        if t.device != q.device:
            raise RuntimeError(f"{name} must be on the same device as q ({q.device}), got "
                               f"{t.device}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.dim() != 2 or t.shape[1] == 0:
            raise ValueError(f"{name} must be [seqlen_ro, rotary_dim / 2], got shape "
                             f"{tuple(t.shape)}")
    if rotary_cos.shape != rotary_sin.shape:
        raise ValueError(f"rotary_cos and rotary_sin must have the same shape, got "
                         f"{tuple(rotary_cos.shape)} and {tuple(rotary_sin.shape)}")
    rotary_dim = 2 * rotary_cos.shape[1]
    if rotary_dim > q.shape[-1]:
        raise ValueError(f"rotary_cos / rotary_sin: rotary_dim (2 * {rotary_cos.shape[1]}) must "
                         f"be <= head_dim ({q.shape[-1]})")
    rows = capacity + (max(0, q.shape[1] - s_new) if queries_per_token else 0)
    if rotary_cos.shape[0] < rows:
        raise ValueError(f"rotary_cos / rotary_sin must have a row for every position a token can "
                         f"take ({rows}: the cache's {capacity} positions"
                         f"{' and the queries past the new tokens' if rows > capacity else ''}), "
                         f"got seqlen_ro = {rotary_cos.shape[0]}")


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
           interleaved: bool) -> torch.Tensor:
    """x [batch, seqlen, heads, head_dim] rotated in its first rotary_dim = 2 * cos.shape[1]
    dimensions at `positions` [batch, seqlen] (rows of cos/sin); the rest of x is kept. Pairs are
    (0, 1), (2, 3), ... when interleaved (GPT-J), else (i, i + rotary_dim / 2) (GPT-NeoX).
    Computed in float32, rounded once to x's dtype."""
    half = cos.shape[1]
    rotary_dim = 2 * half
    # check_rotary sized the table for every valid position; the clamp only keeps a gather of
    # unchecked GPU lengths inside the table.
    index = positions.long().clamp(0, cos.shape[0] - 1)
    c = cos.float()[index].unsqueeze(2)  # [batch, seqlen, 1, half]
    s = sin.float()[index].unsqueeze(2)
    head = x[..., :rotary_dim].float()
    if interleaved:
        x1, x2 = head[..., 0::2], head[..., 1::2]
    else:
        x1, x2 = head[..., :half], head[..., half:]
    r1, r2 = x1 * c - x2 * s, x1 * s + x2 * c
    rotated = torch.stack((r1, r2), dim=-1).flatten(-2) if interleaved else torch.cat((r1, r2), -1)
    return torch.cat((rotated.to(x.dtype), x[..., rotary_dim:]), dim=-1)


def rotary_positions(lengths: torch.Tensor, count: int, per_token: bool) -> torch.Tensor:
    """[batch, count]: lengths[b] + i (per_token) or lengths[b] for every i."""
    steps = torch.arange(count, device=lengths.device) if per_token else \
        torch.zeros(count, dtype=torch.long, device=lengths.device)
    return lengths.view(-1, 1).long() + steps
