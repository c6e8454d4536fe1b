"""flash-attn's packed entry points: q, k and v (or k and v) stacked in one tensor, as the
projections of many training scripts and 3-D/vision repos produce them.

Each is a thin layer over flash_attn_func / flash_attn_varlen_func: the packed tensor is split with
`unbind`, whose pieces are views (no copy; the kernels take any strides but the last), and whose
backward stacks the pieces' gradients into one tensor of the packed shape (one allocation, no
zero-filled copy per piece)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._interface import IntOrTensor, flash_attn_func, flash_attn_varlen_func


def _unpack(packed: torch.Tensor, name: str, parts: int, layout: str) -> tuple[torch.Tensor, ...]:
    """The `parts` views of `packed` along its "3" (or "2") dimension, the third from the end."""
    if not isinstance(packed, torch.Tensor):
        raise ValueError(f"{name} must be a tensor {layout}, got {type(packed).__name__}")
    rank = len(layout.split(","))
    if packed.dim() != rank or packed.shape[-3] != parts:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(packed.shape)}")
    return packed.unbind(dim=-3)


def _forward(entry, tensors: tuple, dropout_p, softmax_scale, causal, window_size, softcap,
             alibi_slopes, deterministic, return_attn_probs):
    """The one place the packed variants hand their shared tail (flash-attn's order, dropout_p
    first) to `entry`: by name, so dropout and the rest reach flash_attn_func and
    flash_attn_varlen_func whatever their positional order."""
    return entry(*tensors, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal,
                 window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes,
                 deterministic=deterministic, return_attn_probs=return_attn_probs)


def flash_attn_qkvpacked_func(
    qkv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
):
    """qkv [batch, seqlen, 3, heads, head_dim] -> out [batch, seqlen, heads, head_dim]; with
    `return_attn_probs` (out, lse [batch, heads, seqlen], S_dmask) as flash_attn_func.
    Differentiable: qkv.grad has qkv's shape."""
    q, k, v = _unpack(qkv, "qkv", 3, "[batch, seqlen, 3, heads, head_dim]")
    return _forward(flash_attn_func, (q, k, v), dropout_p, softmax_scale, causal, window_size,
                    softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
):
    """q [batch, seqlen_q, heads, head_dim], kv [batch, seqlen_k, 2, heads_kv, head_dim] (GQA:
    heads % heads_kv == 0) -> out [batch, seqlen_q, heads, head_dim]. Differentiable: q.grad and
    kv.grad (kv's shape)."""
    k, v = _unpack(kv, "kv", 2, "[batch, seqlen_k, 2, heads_kv, head_dim]")
    return _forward(flash_attn_func, (q, k, v), dropout_p, softmax_scale, causal, window_size,
                    softcap, alibi_slopes, deterministic, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: IntOrTensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Sequence[int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
):
    """qkv [total, 3, heads, head_dim] with cu_seqlens int32 [batch + 1] (queries and keys share
    the offsets) -> out [total, heads, head_dim]; with `return_attn_probs`
    (out, lse [heads, total], S_dmask) as flash_attn_varlen_func. Differentiable: qkv.grad has
    qkv's shape."""
    q, k, v = _unpack(qkv, "qkv", 3, "[total, 3, heads, head_dim]")
    return _forward(flash_attn_varlen_func,
                    (q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen), dropout_p,
                    softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                    return_attn_probs)


def flash_attn_varlen_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
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
):
    """q [total_q, heads, head_dim], kv [total_k, 2, heads_kv, head_dim] -> out
    [total_q, heads, head_dim]. Differentiable: q.grad and kv.grad (kv's shape)."""
    k, v = _unpack(kv, "kv", 2, "[total_k, 2, heads_kv, head_dim]")
    return _forward(flash_attn_varlen_func,
                    (q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k), dropout_p,
                    softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                    return_attn_probs)
