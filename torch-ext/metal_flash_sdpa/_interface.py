"""The public entry points: flash-attn's signatures over the one forward op."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from . import _arguments as A
from ._dropout import draw_dropout_seed, resolve_dropout
from ._ops_backward import needs_grad
from ._ops_forward import dropout_probs, forward

IntOrTensor = Union[int, torch.Tensor]


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: IntOrTensor,
    max_seqlen_k: IntOrTensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Optional[torch.Tensor] = None,
    s_aux: Optional[torch.Tensor] = None,
    seqused_q: Optional[torch.Tensor] = None,
    seqused_k: Optional[torch.Tensor] = None,
):
    """Attention over packed variable-length sequences.

    q: [total_q, heads, head_dim]; k, v: [total_k, heads_kv, head_dim(_v)], or paged caches
    [num_pages, page_size, heads_kv, head_dim] with `block_table` [batch, max_pages] (then
    `cu_seqlens_k` gives each sequence's length). Returns out [total_q, heads, head_dim_v]; with
    `return_attn_probs` the tuple (out, lse [heads, total_q] fp32, S_dmask), S_dmask being None
    without dropout (as flash-attn's).

    `seqused_q` / `seqused_k` (flash-attn 3, int32 [batch]): only the first seqused tokens of each
    sequence's slot in cu_seqlens_q / cu_seqlens_k count; the other rows of a slot belong to no
    sequence (their out rows are zeros, lse -inf, gradients zero).

    Differentiable (q, k, v, s_aux) with contiguous K/V; with `block_table` a call that needs a
    gradient raises.

    `dropout_p` > 0 drops each attention probability with that probability and scales the kept
    ones by 1 / (1 - dropout_p) (docs/API.md, "Dropout"; the mask is drawn from torch's default
    generator, so torch.manual_seed reproduces it). With `return_attn_probs` its third item is
    flash-attn's S_dmask: the probabilities [batch, heads, max_seqlen_q, max_seqlen_k], the
    dropped ones negated.
    """
    call = dict(
        cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k,
        seqused_q=seqused_q,
        seqused_k=seqused_k,
        block_table=block_table,
        alibi_slopes=alibi_slopes,
        s_aux=s_aux,
        max_seqlen_q=A.resolve_max_seqlen(max_seqlen_q, "max_seqlen_q"),
        max_seqlen_k=A.resolve_max_seqlen(max_seqlen_k, "max_seqlen_k"),
        softmax_scale=A.resolve_scale(softmax_scale, q),
        softcap=A.resolve_softcap(softcap),
        window_size=A.resolve_window(window_size, causal),
        dropout_p=resolve_dropout(dropout_p),
    )
    return _attend(q, k, v, call, return_attn_probs)


def _attend(q, k, v, call: dict, return_attn_probs: bool):
    """The forward of both functional entry points; with return_attn_probs, flash-attn's
    (out, lse, S_dmask), S_dmask None without dropout."""
    call["dropout_seed"] = draw_dropout_seed(call["dropout_p"])
    out, lse = forward(
        q, k, v, **call,
        # The backward needs the lse: computed whenever autograd records the call.
        return_lse=return_attn_probs or needs_grad(q, k, v, call.get("s_aux"),
                                                    call.get("alibi_slopes")),
    )
    if not return_attn_probs:
        return out
    return out, lse, dropout_probs(q, k, v, lse, **call) if call["dropout_p"] > 0 else None


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    s_aux: Optional[torch.Tensor] = None,
):
    """Attention over a fixed-length batch: q [batch, seqlen_q, heads, head_dim], k/v
    [batch, seqlen_k, heads_kv, head_dim(_v)]. Returns out [batch, seqlen_q, heads, head_dim_v];
    with `return_attn_probs` the tuple (out, lse [batch, heads, seqlen_q] fp32, S_dmask).
    Differentiable (q, k, v, s_aux). `dropout_p` and S_dmask as in flash_attn_varlen_func."""
    call = dict(
        alibi_slopes=alibi_slopes,
        s_aux=s_aux,
        softmax_scale=A.resolve_scale(softmax_scale, q),
        softcap=A.resolve_softcap(softcap),
        window_size=A.resolve_window(window_size, causal),
        dropout_p=resolve_dropout(dropout_p),
    )
    return _attend(q, k, v, call, return_attn_probs)


def flash_attention_varlen(
    out: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: IntOrTensor,
    max_seqlen_k: IntOrTensor,
    do_causal: bool = False,
    scale: Optional[float] = None,
    softcapping: float = 1.0,
) -> None:
    """The package's original entry point, unchanged: writes `out` in place. Its softcap
    convention is its own: `softcapping = 1.0` means off. Not differentiable: a call that would
    need a gradient (grad mode on and an input requiring grad) raises rather than leaving the
    gradient silently missing; use flash_attn_varlen_func for training. `out` must be a tensor of
    its own: one that overlaps query, key or value is refused (the op checks it)."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be a tensor [total_q, heads, head_dim_v] that "
                         f"flash_attention_varlen writes in place, got {out!r}")
    if needs_grad(query, key, value):
        raise NotImplementedError(
            "flash_attention_varlen (the in-place legacy entry point) is not differentiable: use "
            "flash_attn_varlen_func for training, or call it under torch.no_grad()")
    forward(
        query, key, value,
        out=out,
        cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=A.resolve_max_seqlen(max_seqlen_q, "max_seqlen_q"),
        max_seqlen_k=A.resolve_max_seqlen(max_seqlen_k, "max_seqlen_k"),
        softmax_scale=A.resolve_scale(scale, query, "scale"),
        softcap=0.0 if softcapping == 1.0 else A.resolve_softcap(softcapping, "softcapping"),
        window_size=A.resolve_window((-1, -1), do_causal),
    )
