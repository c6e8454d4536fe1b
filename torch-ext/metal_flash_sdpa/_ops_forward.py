"""The forward ops as Python sees them: one call shape for every entry point, and their fake
implementations (so torch.compile traces them with fullgraph=True)."""

from __future__ import annotations

from typing import Optional

import torch

from ._ops import add_op_namespace_prefix, ops
from ._ops_backward import check_first_order_autograd


def _out_shape(q: torch.Tensor, v: torch.Tensor) -> list[int]:
    return [*q.shape[:-1], v.shape[-1]]


def _lse_shape(q: torch.Tensor, return_lse: bool) -> list[int]:
    if not return_lse:
        return [0]
    if q.dim() == 3:  # varlen: [heads, total_q]
        return [q.shape[1], q.shape[0]]
    return [q.shape[0], q.shape[2], q.shape[1]]  # fixed: [batch, heads, seqlen_q]


_TENSOR_ARGS = ("k", "v", "cu_seqlens_q", "cu_seqlens_k", "seqused_k", "block_table",
                "alibi_slopes", "s_aux", "seqused_q")


def _check_same_device(q, *tensors, out=None):
    """The dispatcher sends a call mixing devices to one device's kernel (meta wins over cpu), so
    the fake implementation checks what the real kernels check."""
    for name, t in zip(_TENSOR_ARGS, tensors):
        if t is not None and t.device != q.device:
            raise RuntimeError(f"{name} must be on the same device as q ({q.device}), got {t.device}")
    if out is not None and out.device != q.device:
        raise RuntimeError(f"out must be on the same device as q ({q.device}), got {out.device}")


@torch.library.register_fake(add_op_namespace_prefix("fwd"))
def _fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, s_aux,
              max_seqlen_q, max_seqlen_k, softmax_scale, softcap, window_left, window_right,
              return_lse, seqused_q=None, dropout_p=0.0, dropout_seed=None):
    _check_same_device(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes,
                       s_aux, seqused_q)
    out = q.new_empty(_out_shape(q, v))
    lse = q.new_empty(_lse_shape(q, return_lse), dtype=torch.float32)
    return out, lse


@torch.library.register_fake(add_op_namespace_prefix("fwd_into"))
def _fwd_into_fake(out, q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                   alibi_slopes, s_aux, max_seqlen_q, max_seqlen_k, softmax_scale, softcap,
                   window_left, window_right, return_lse, seqused_q=None, dropout_p=0.0,
                   dropout_seed=None):
    _check_same_device(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes,
                       s_aux, seqused_q, out=out)
    return q.new_empty(_lse_shape(q, return_lse), dtype=torch.float32)


@torch.library.register_fake(add_op_namespace_prefix("dropout_probs"))
def _dropout_probs_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                        alibi_slopes, s_aux, max_seqlen_q, max_seqlen_k, softmax_scale, softcap,
                        window_left, window_right, seqused_q, dropout_p, dropout_seed, lse):
    _check_same_device(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes,
                       s_aux, seqused_q)
    varlen_q = cu_seqlens_q is not None
    batch = cu_seqlens_q.shape[0] - 1 if varlen_q else q.shape[0]
    rows = max_seqlen_q if varlen_q else q.shape[1]
    keys = (max_seqlen_k if (cu_seqlens_k is not None or seqused_k is not None
                             or block_table is not None) else k.shape[1])
    return q.new_empty([batch, q.shape[-2], rows, keys])


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    out: Optional[torch.Tensor] = None,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    seqused_k: Optional[torch.Tensor] = None,
    seqused_q: Optional[torch.Tensor] = None,
    block_table: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    s_aux: Optional[torch.Tensor] = None,
    max_seqlen_q: int = 0,
    max_seqlen_k: int = 0,
    softmax_scale: float,
    softcap: float = 0.0,
    window_size: tuple[int, int] = (-1, -1),
    return_lse: bool = False,
    dropout_p: float = 0.0,
    dropout_seed: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the forward op; returns (out, lse), lse being empty unless return_lse. dropout_seed:
    _dropout.draw_dropout_seed's state, with dropout_p > 0."""
    check_first_order_autograd(q, k, v, s_aux, alibi_slopes)
    args = (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, s_aux,
            max_seqlen_q, max_seqlen_k, softmax_scale, softcap, window_size[0], window_size[1],
            return_lse, seqused_q, dropout_p, dropout_seed)
    if out is None:
        return ops.fwd(*args)
    lse = ops.fwd_into(out, *args)
    return out, lse


def dropout_probs(q, k, v, lse, *, cu_seqlens_q=None, cu_seqlens_k=None, seqused_k=None,
                  seqused_q=None, block_table=None, alibi_slopes=None, s_aux=None,
                  max_seqlen_q=0, max_seqlen_k=0, softmax_scale, softcap=0.0,
                  window_size=(-1, -1), dropout_p, dropout_seed):
    """flash-attn's S_dmask of a forward call with dropout (forward's arguments and its lse):
    [batch, heads, max_seqlen_q, max_seqlen_k] in q's dtype, the probabilities with the dropped
    entries negated. Not differentiable (as flash-attn's)."""
    detached = [None if t is None else t.detach() for t in (q, k, v, alibi_slopes, s_aux)]
    q, k, v, alibi_slopes, s_aux = detached
    return ops.dropout_probs(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                             alibi_slopes, s_aux, max_seqlen_q, max_seqlen_k, softmax_scale,
                             softcap, window_size[0], window_size[1], seqused_q, dropout_p,
                             dropout_seed, lse.detach())
