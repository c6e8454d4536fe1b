"""cache_leftpad for flash_attn_with_kvcache (flash-attn's left-padded caches): sequence b's keys
are the cache slots [cache_leftpad[b], cache_seqlens[b]) and it attends as if they were its whole
sequence (causal masks, windows and ALiBi aligned to them).

The kernels read a sequence's keys as logical positions 0.. of a paged cache, so a left-padded
cache is run as a paged cache of one-token pages: the cache seen as its token rows (a view, no
copy) and, per sequence, a table of the rows of its slots from cache_leftpad[b] on (one gather for
the whole batch). This works for contiguous caches (with or without cache_batch_idx) and paged
ones alike; the table has batch x capacity int32 entries."""

from __future__ import annotations

import torch

from ._arguments import check_per_sequence_int32


def check_leftpad(cache_leftpad, lengths: torch.Tensor, batch: int, device) -> None:
    """int32 [batch] on q's device; where readable (cpu), 0 <= cache_leftpad <= cache_seqlens."""
    check_per_sequence_int32(cache_leftpad, "cache_leftpad", batch, device)
    if device.type != "cpu" or torch.compiler.is_compiling() or not batch:
        return
    bad = (cache_leftpad < 0) | (cache_leftpad > lengths)
    if bool(bad.any()):
        b = int(bad.nonzero()[0, 0])
        raise ValueError(f"cache_leftpad[{b}] = {int(cache_leftpad[b])} must lie in "
                         f"[0, cache_seqlens[{b}] = {int(lengths[b])}]")


def token_rows(cache: torch.Tensor, name: str) -> torch.Tensor:
    """The cache [pages, page_size, heads, dim] as one-token pages [pages * page_size, 1, heads,
    dim]: a view, which needs each page's rows to follow one another in memory."""
    pages, page_size, heads, dim = cache.shape
    if pages > 1 and cache.stride(0) != page_size * cache.stride(1):
        raise ValueError(f"cache_leftpad needs {name} whose pages (or batch rows) are packed rows "
                         f"(stride(0) == size(1) * stride(1)), got strides {cache.stride()}")
    return cache.as_strided((pages * page_size, 1, heads, dim),
                            (cache.stride(1), cache.stride(1), cache.stride(2), cache.stride(3)),
                            cache.storage_offset())


def leftpad_table(cache_leftpad: torch.Tensor, block_table: torch.Tensor, page_size: int,
                  capacity: int) -> torch.Tensor:
    """[batch, capacity] int32: row (in token_rows) of sequence b's logical key j, the cache slot
    cache_leftpad[b] + j (slots past the capacity, never attended, repeat the last one)."""
    slots = cache_leftpad.view(-1, 1).long() + torch.arange(capacity, device=block_table.device)
    slots = slots.clamp(max=capacity - 1)
    pages = torch.gather(block_table.long(), 1, slots // page_size)
    return (pages * page_size + slots % page_size).to(torch.int32)
