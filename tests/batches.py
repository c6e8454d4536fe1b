"""Random inputs for the tests: packed varlen batches, paged caches, strided views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass
class VarlenBatch:
    q: torch.Tensor  # [total_q, H, D]
    k: torch.Tensor  # [total_k, Hkv, D]
    v: torch.Tensor  # [total_k, Hkv, Dv]
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int


def cumulative(lengths: Sequence[int], extra: int = 0, device="cpu") -> torch.Tensor:
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def random_tensor(shape, dtype, generator, strided: bool = False, device="cpu") -> torch.Tensor:
    """Values ~N(0,1) in `dtype` on `device` (drawn on the CPU, so every device sees the same
    values); `strided` makes a view whose rows and heads are not packed (as a slice of a packed
    qkv tensor would be), only the last dim contiguous."""
    if not strided:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype).to(device)
    *lead, heads, dim = shape
    wide = torch.randn((*lead, heads + 3, dim + 16), generator=generator).to(dtype).to(device)
    return wide[..., 1 : heads + 1, 8 : 8 + dim]


def varlen_batch(
    lengths_q: Sequence[int],
    lengths_k: Sequence[int],
    heads: int,
    heads_kv: int,
    head_dim: int,
    dtype: torch.dtype,
    generator: torch.Generator,
    head_dim_v: Optional[int] = None,
    strided: bool = False,
    padding_rows: int = 0,
    device="cpu",
) -> VarlenBatch:
    """`padding_rows` extra rows after the last sequence belong to no sequence. Every tensor is
    on `device` (the variant's, see conftest.py)."""
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    total_q = sum(lengths_q) + padding_rows
    total_k = sum(lengths_k)
    return VarlenBatch(
        q=random_tensor((total_q, heads, head_dim), dtype, generator, strided, device),
        k=random_tensor((total_k, heads_kv, head_dim), dtype, generator, strided, device),
        v=random_tensor((total_k, heads_kv, head_dim_v), dtype, generator, strided, device),
        cu_seqlens_q=cumulative(lengths_q, device=device),
        cu_seqlens_k=cumulative(lengths_k, device=device),
        max_seqlen_q=max(lengths_q, default=0),
        max_seqlen_k=max(lengths_k, default=0),
    )


def paged_cache(k: torch.Tensor, v: torch.Tensor, cu_seqlens_k: torch.Tensor, page_size: int,
                generator: torch.Generator):
    """Scatter packed keys and values [total_k, Hkv, D] into shuffled paged caches
    [num_pages, page_size, Hkv, D] with one block table [batch, max_pages]; unused slots hold NaN,
    so a kernel reading a slot past a sequence's length shows up. On k's device."""
    batch = len(cu_seqlens_k) - 1
    lengths = [int(cu_seqlens_k[b + 1] - cu_seqlens_k[b]) for b in range(batch)]
    pages_per_seq = [max(1, -(-n // page_size)) for n in lengths]
    max_pages = max(pages_per_seq, default=1) + 1  # one unused column, filled with page 0
    num_pages = sum(pages_per_seq) + 2
    order = torch.randperm(num_pages, generator=generator).tolist()
    k_cache = torch.full((num_pages, page_size, *k.shape[1:]), float("nan"), dtype=k.dtype,
                         device=k.device)
    v_cache = torch.full((num_pages, page_size, *v.shape[1:]), float("nan"), dtype=v.dtype,
                         device=k.device)
    table = torch.zeros(batch, max_pages, dtype=torch.int32, device=k.device)
    next_page = 0
    for b in range(batch):
        for p in range(pages_per_seq[b]):
            page = order[next_page]
            next_page += 1
            table[b, p] = page
            start = int(cu_seqlens_k[b]) + p * page_size
            stop = min(start + page_size, int(cu_seqlens_k[b + 1]))
            if stop > start:
                k_cache[page, : stop - start] = k[start:stop]
                v_cache[page, : stop - start] = v[start:stop]
    return k_cache, v_cache, table


WIDE_DRAWS = 0.12  # share of random configurations with head dims above 256


def widen_head_dims(rng, head_dim: int, head_dim_v: Optional[int]):
    """The head dims of a random configuration, redrawn above 256 (up to 512, Gemma 4's global
    layers) in about one configuration of eight: the simulator is slowest at the widest tiles.
    Called after every other draw, so the configurations it leaves narrow are unchanged. A V head
    dim that followed q's (equal, or None) still does; one drawn on its own is redrawn up to 512."""
    if rng.random() >= WIDE_DRAWS:
        return head_dim, head_dim_v
    wide = 8 * rng.randint(33, 64)
    if head_dim_v is None or head_dim_v == head_dim:
        return wide, None if head_dim_v is None else wide
    return wide, 8 * rng.randint(1, 64)
