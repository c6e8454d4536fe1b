"""Autograd of the functional forward op: the backward op's fake implementation and the formula
registered with torch.library.register_autograd (FlashAttention-2: the forward saves q, k, v, out
and the fp32 lse, the backward op recomputes the probabilities tile by tile).

First-order reverse mode only. Double backward, forward-mode AD and torch.func's grad transforms
are refused (check_first_order_autograd, and the backward op's own autograd formula), never
answered with zero or missing gradients."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as forward_ad
from torch._C._functorch import TransformType, get_interpreter_stack

from ._ops import add_op_namespace_prefix, ops


@torch.library.register_fake(add_op_namespace_prefix("bwd"))
def _bwd_fake(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, s_aux,
              max_seqlen_q, max_seqlen_k, softmax_scale, softcap, window_left, window_right,
              seqused_q=None, seqused_k=None, dropout_p=0.0, dropout_seed=None):
    ds_aux = (s_aux.new_empty(s_aux.shape) if s_aux is not None
              else q.new_empty([0], dtype=torch.float32))
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), ds_aux


def _setup_context(ctx, inputs, output):
    (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, s_aux,
     max_seqlen_q, max_seqlen_k, softmax_scale, softcap, window_left, window_right,
     return_lse, *rest) = inputs
    # The trailing arguments with defaults (seqused_q, dropout_p, dropout_seed) may be absent.
    seqused_q, dropout_p, dropout_seed = (*rest, *(None, 0.0, None)[len(rest):])
    # Runs only when a gradient is needed (grad mode on, an input requires grad). seqused_k with
    # cu_seqlens_k (flash-attn 3's varlen form) has a backward; without it, it is a kv-cache's.
    if block_table is not None or (seqused_k is not None and cu_seqlens_k is None):
        raise NotImplementedError(
            "metal-flash-sdpa has no backward for paged K/V (block_table) or kv-cache calls "
            "(seqused_k, flash_attn_with_kvcache): run them under torch.no_grad() or pass "
            "tensors that do not require grad")
    if not return_lse:
        raise ValueError("the fwd op is differentiable only with return_lse=True (its backward "
                         "needs the lse); the Python entry points do this")
    out, lse = output
    ctx.mark_non_differentiable(lse)  # as flash-attn: the returned lse has no gradient
    # The dropout state, not the mask: the backward regenerates the mask from it.
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, s_aux,
                          seqused_q, seqused_k, dropout_seed)
    ctx.scalars = (max_seqlen_q, max_seqlen_k, softmax_scale, softcap, window_left, window_right)
    ctx.dropout_p = dropout_p
    ctx.num_inputs = len(inputs)


def _backward(ctx, grad_out, grad_lse):
    (q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, alibi_slopes, s_aux, seqused_q,
     seqused_k, dropout_seed) = ctx.saved_tensors
    dq, dk, dv, ds_aux = ops.bwd(grad_out, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k,
                                 alibi_slopes, s_aux, *ctx.scalars, seqused_q, seqused_k,
                                 ctx.dropout_p, dropout_seed)
    # Gradients for q, k, v, then none for offsets, block_table, ALiBi slopes (as flash-attn)
    # and the ints; s_aux's own; none for seqused_q and the dropout arguments.
    grads = (dq, dk, dv, None, None, None, None, None,
             ds_aux if s_aux is not None else None, None, None, None, None, None, None, None, None,
             None, None)
    return grads[:ctx.num_inputs]


torch.library.register_autograd(add_op_namespace_prefix("fwd"), _backward,
                                setup_context=_setup_context)

FIRST_ORDER_ONLY = (
    "metal-flash-sdpa supports first-order reverse-mode autograd only (loss.backward(), "
    "torch.autograd.grad): double backward (create_graph=True then a second backward), "
    "forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) and torch.func's grad "
    "transforms (grad, jacrev, jacfwd, hessian) are not supported")


def _bwd_setup_context(ctx, inputs, output):
    pass


def _double_backward(ctx, *grads):
    # Without this formula torch would differentiate the backward op as a constant: zeros.
    raise NotImplementedError(FIRST_ORDER_ONLY)


torch.library.register_autograd(add_op_namespace_prefix("bwd"), _double_backward,
                                setup_context=_bwd_setup_context)


def check_first_order_autograd(*tensors) -> None:
    """Refuses what the op's autograd formula would silently drop: a forward-mode tangent (the
    op has no jvp: torch would return no tangent) and torch.func's transforms other than vmap."""
    if torch.compiler.is_compiling():
        return
    stack = get_interpreter_stack()
    if stack and any(level.key() in (TransformType.Grad, TransformType.Jvp) for level in stack):
        raise NotImplementedError(FIRST_ORDER_ONLY)
    if forward_ad._current_level >= 0 and any(
            t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        raise NotImplementedError(FIRST_ORDER_ONLY)


def needs_grad(*tensors) -> bool:
    """Whether autograd will record a call on these tensors (what setup_context sees)."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)
