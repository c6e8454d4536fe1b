"""flash_attn_with_kvcache: decode and chunked prefill against a KV cache, over the same forward
op (a contiguous cache is a paged cache whose pages are whole batch rows). The append of new
tokens is an op of its own (append_kv) that checks everything before it writes: under
torch.compile too, where the Python around it is traced and its data-dependent checks could not
run."""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch

from . import _arguments as A
from ._ops import add_op_namespace_prefix
from ._leftpad import check_leftpad, leftpad_table, token_rows
from ._ops_backward import needs_grad
from ._ops_forward import forward
from ._rotary import check_rotary, rotary_positions, rotate


def _cache_lengths(cache_seqlens, batch: int, capacity: int, device) -> torch.Tensor:
    if cache_seqlens is None:  # flash-attn: the whole cache is valid
        return torch.full((batch,), capacity, dtype=torch.int32, device=device)
    if isinstance(cache_seqlens, numbers.Integral) and not isinstance(cache_seqlens, bool):
        return torch.full((batch,), int(cache_seqlens), dtype=torch.int32, device=device)
    A.check_per_sequence_int32(cache_seqlens, "cache_seqlens", batch, device,
                               "an int or an int32 tensor")
    return cache_seqlens


def _check_new_tokens(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, batch: int) -> None:
    """k and v [batch, S_new, Hkv, D(v)] as the caches hold them, both checked before either is
    written."""
    for name, new, cache in (("k", k, k_cache), ("v", v, v_cache)):
        if new.device != cache.device:
            raise RuntimeError(f"{name} must be on the device of {name}_cache ({cache.device}), "
                               f"got {new.device}")
        if (new.dim() != 4 or new.shape[0] != batch or new.shape[2:] != cache.shape[2:]
                or new.dtype != cache.dtype):
            raise ValueError(f"{name} must be [batch={batch}, seqlen_new, {cache.shape[2]}, "
                             f"{cache.shape[3]}] of {name}_cache's dtype {cache.dtype}, got "
                             f"{tuple(new.shape)} {new.dtype}")
    if k.shape[1] != v.shape[1]:
        raise ValueError(f"k and v must hold the same number of new tokens, got {k.shape[1]} "
                         f"and {v.shape[1]}")


def _check_room(lengths: torch.Tensor, s_new: int, capacity: int) -> None:
    """cache_seqlens + seqlen_new within the cache. Checked where the lengths are readable without
    a sync (CPU tensors), inside append_kv, so under torch.compile as well."""
    if lengths.device.type != "cpu" or not lengths.numel():
        return
    low, high = int(lengths.min()), int(lengths.max())
    if low < 0 or high + s_new > capacity:
        raise ValueError(f"cache_seqlens must lie in [0, {capacity} - seqlen_new={s_new}] "
                         f"(appending {s_new} new tokens must stay within the cache's "
                         f"{capacity} slots), got values in [{low}, {high}]")


def _slots(lengths: torch.Tensor, s_new: int, block_table: torch.Tensor,
           page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(page, slot in page) of every new token, [batch * S_new] each: position lengths[b] + t."""
    batch = lengths.shape[0]
    positions = lengths.reshape(batch, 1).long() + torch.arange(s_new, device=lengths.device)
    pages = torch.gather(block_table.long(), 1, positions // page_size)
    return pages.reshape(-1), (positions % page_size).reshape(-1)


def _check_cache_rows(cache_batch_idx: torch.Tensor, rows: int) -> None:
    """cache_batch_idx within k_cache's rows, where readable (CPU, eager); otherwise the op's own
    block_table check, which names cache_batch_idx too."""
    if (cache_batch_idx.device.type != "cpu" or torch.compiler.is_compiling()
            or not cache_batch_idx.numel()):
        return
    low, high = int(cache_batch_idx.min()), int(cache_batch_idx.max())
    if low < 0 or high >= rows:
        raise ValueError(f"cache_batch_idx entries must lie in [0, {rows}) (the batch rows of "
                         f"k_cache), got values in [{low}, {high}]")


@torch.library.custom_op(
    add_op_namespace_prefix("append_kv"), mutates_args=("k_cache", "v_cache"),
    schema="(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor k, Tensor v, "
           "Tensor lengths, Tensor block_table, Tensor? alibi_slopes, Tensor? s_aux, "
           "float softmax_scale, float softcap, int window_left, int window_right) -> ()")
def _append_kv(q, k_cache, v_cache, k, v, lengths, block_table, alibi_slopes, s_aux,
               softmax_scale, softcap, window_left, window_right):
    """Writes the new tokens k, v [batch, S_new, ...] at positions lengths[b] + t, after every
    check, so that a refused call leaves the caches as they were: the room in the cache, then the
    op's own checks (dtypes, head dims, alibi_slopes, s_aux, block_table...) on no queries, which
    read the cache and launch no kernel."""
    capacity = k_cache.shape[1] * block_table.shape[1]
    _check_room(lengths, k.shape[1], capacity)
    forward(q[:, :0], k_cache, v_cache, seqused_k=lengths, block_table=block_table,
            alibi_slopes=alibi_slopes, s_aux=s_aux, max_seqlen_q=0, max_seqlen_k=capacity,
            softmax_scale=softmax_scale, softcap=softcap, window_size=(window_left, window_right))
    pages, slots = _slots(lengths, k.shape[1], block_table, k_cache.shape[1])
    k_cache.index_put_((pages, slots), k.reshape(-1, *k.shape[2:]))
    v_cache.index_put_((pages, slots), v.reshape(-1, *v.shape[2:]))


@_append_kv.register_fake
def _append_kv_fake(q, k_cache, v_cache, k, v, lengths, block_table, alibi_slopes, s_aux,
                    softmax_scale, softcap, window_left, window_right):
    return None


def _check_num_splits(num_splits) -> None:
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 0:
        raise ValueError(f"num_splits must be an int >= 0 (0 = the kernels' own choice), got "
                         f"{num_splits!r}")


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: Optional[torch.Tensor] = None,
    v: Optional[torch.Tensor] = None,
    rotary_cos: Optional[torch.Tensor] = None,
    rotary_sin: Optional[torch.Tensor] = None,
    cache_seqlens: Union[int, torch.Tensor, None] = None,
    cache_batch_idx: Optional[torch.Tensor] = None,
    cache_leftpad: Optional[torch.Tensor] = None,
    block_table: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),
    softcap: float = 0.0,
    rotary_interleaved: bool = True,
    alibi_slopes: Optional[torch.Tensor] = None,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
    s_aux: Optional[torch.Tensor] = None,
):
    """flash-attn's signature (s_aux added last). q [B, Sq, H, D] against a cache
    [B_cache, Sk_max, Hkv, D], or paged [num_pages, page_size, Hkv, D] with block_table
    [B, max_pages]. New tokens k/v [B, S_new, Hkv, D] are first written into the cache in place at
    cache_seqlens, rotated first with rotary_cos / rotary_sin [seqlen_ro, rotary_dim / 2] when
    given (q too; see _rotary.py for the positions). cache_leftpad [B]: sequence b's keys start at
    slot cache_leftpad[b] (_leftpad.py). num_splits is accepted and changes nothing: the kernels
    choose their own key split. Returns out [B, Sq, H, Dv], and lse [B, H, Sq] with
    return_softmax_lse. Inference only: a call that would need a gradient raises (before the
    cache is touched)."""
    if needs_grad(q, k_cache, v_cache, k, v, s_aux):
        raise NotImplementedError(
            "flash_attn_with_kvcache has no backward (inference only): call it under "
            "torch.no_grad() or with tensors that do not require grad")
    if q.dim() != 4:
        raise ValueError(f"q must be [batch, seqlen_q, heads, head_dim], got shape {tuple(q.shape)}")
    if k_cache.dim() != 4 or v_cache.dim() != 4:
        raise ValueError("k_cache and v_cache must be 4-dimensional caches")
    if (k is None) != (v is None):
        raise ValueError("k and v (the new tokens) must be given together")
    batch = q.shape[0]
    if k_cache.shape[1] == 0:
        unit = "row" if block_table is None else "page"
        raise ValueError(f"k_cache must hold at least one slot per {unit} (k_cache.shape[1] >= "
                         f"1), got shape {tuple(k_cache.shape)}")
    if block_table is None:
        # One page per sequence: the batch row of the cache (cache_batch_idx picks it).
        if cache_batch_idx is None:
            cache_batch_idx = torch.arange(batch, dtype=torch.int32, device=q.device)
        elif (not isinstance(cache_batch_idx, torch.Tensor)
              or cache_batch_idx.dtype != torch.int32 or cache_batch_idx.shape != (batch,)):
            raise ValueError(f"cache_batch_idx must be an int32 tensor [batch={batch}], got "
                             f"{getattr(cache_batch_idx, 'dtype', cache_batch_idx)!r} of shape "
                             f"{tuple(getattr(cache_batch_idx, 'shape', ()))}")
        else:
            _check_cache_rows(cache_batch_idx, k_cache.shape[0])
        block_table = cache_batch_idx.reshape(batch, 1)
    elif cache_batch_idx is not None:
        raise ValueError("cache_batch_idx cannot be combined with block_table")
    if (not isinstance(block_table, torch.Tensor) or block_table.dtype != torch.int32
            or block_table.dim() != 2):
        raise ValueError(f"block_table must be an int32 tensor [batch={batch}, max_pages], got "
                         f"{getattr(block_table, 'dtype', block_table)!r} of shape "
                         f"{tuple(getattr(block_table, 'shape', ()))}")
    scale = A.resolve_scale(softmax_scale, q)
    softcap = A.resolve_softcap(softcap)
    window = A.resolve_window(window_size, causal)
    _check_num_splits(num_splits)
    capacity = k_cache.shape[1] * block_table.shape[1]
    lengths = _cache_lengths(cache_seqlens, batch, capacity, q.device)
    # flash-attn rotates the queries token by token when the call is causal or windowed.
    queries_per_token = window != (-1, -1)
    check_rotary(rotary_cos, rotary_sin, q, None if k is None else k.shape[1], capacity,
                 queries_per_token)
    if cache_leftpad is not None:
        check_leftpad(cache_leftpad, lengths, batch, q.device)
        token_rows(k_cache, "k_cache"), token_rows(v_cache, "v_cache")  # refused before writing
    if k is not None:
        _check_new_tokens(k, v, k_cache, v_cache, batch)  # shapes: traced under torch.compile
        if rotary_cos is not None:  # the fused pre-pass: new keys and queries, whole batch
            k = rotate(k, rotary_cos, rotary_sin, rotary_positions(lengths, k.shape[1], True),
                       rotary_interleaved)
            q = rotate(q, rotary_cos, rotary_sin,
                       rotary_positions(lengths, q.shape[1], queries_per_token),
                       rotary_interleaved)
        # Every check, then the write, in one op (a refused call leaves the caches as they were,
        # compiled or eager).
        _append_kv(q, k_cache, v_cache, k, v, lengths, block_table, alibi_slopes, s_aux, scale,
                   softcap, window[0], window[1])
        lengths = lengths + k.shape[1]
    if cache_leftpad is not None:
        block_table = leftpad_table(cache_leftpad, block_table, k_cache.shape[1], capacity)
        k_cache, v_cache = token_rows(k_cache, "k_cache"), token_rows(v_cache, "v_cache")
        lengths = lengths - cache_leftpad
    out, lse = forward(
        q, k_cache, v_cache,
        seqused_k=lengths,
        block_table=block_table,
        alibi_slopes=alibi_slopes,
        s_aux=s_aux,
        max_seqlen_q=q.shape[1],
        max_seqlen_k=capacity,
        softmax_scale=scale,
        softcap=softcap,
        window_size=window,
        return_lse=return_softmax_lse,
    )
    return (out, lse) if return_softmax_lse else out
