"""The ops behind scaled_dot_product_attention (_sdpa.py): their fake implementations (so
torch.compile traces them with fullgraph=True) and their autograd formula. They take the
fixed-length layout: q [batch, seqlen_q, heads_q, head_dim], k/v [batch, seqlen_k, heads_kv,
head_dim(_v)], attn_mask [batch, heads_q, seqlen_q, seqlen_k] (a broadcast view)."""

from __future__ import annotations

import torch

from ._ops import add_op_namespace_prefix, ops


@torch.library.register_fake(add_op_namespace_prefix("sdpa_fwd"))
def _sdpa_fwd_fake(q, k, v, attn_mask, softmax_scale, window_right, return_lse, dropout_p=0.0,
                   dropout_seed=None):
    for name, t in (("k", k), ("v", v), ("attn_mask", attn_mask)):
        if t is not None and t.device != q.device:
            raise RuntimeError(f"{name} must be on the same device as q ({q.device}), got {t.device}")
    batch, seqlen_q, heads = q.shape[0], q.shape[1], q.shape[2]
    # Written through torch's contiguous [batch, heads, seqlen_q, head_dim_v] (as the op does).
    out = q.new_empty([batch, heads, seqlen_q, v.shape[-1]]).transpose(1, 2)
    lse = q.new_empty([batch, heads, seqlen_q] if return_lse else [0], dtype=torch.float32)
    return out, lse


@torch.library.register_fake(add_op_namespace_prefix("sdpa_bwd"))
def _sdpa_bwd_fake(dout, q, k, v, out, lse, attn_mask, softmax_scale, window_right, mask_grad,
                   dropout_p=0.0, dropout_seed=None):
    dmask = (q.new_empty([q.shape[0], q.shape[2], q.shape[1], k.shape[1]], dtype=torch.float32)
             if mask_grad else q.new_empty([0], dtype=torch.float32))
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dmask


def _setup_context(ctx, inputs, output):
    q, k, v, attn_mask, softmax_scale, window_right, return_lse, *rest = inputs
    dropout_p, dropout_seed = (*rest, *(0.0, None)[len(rest):])  # defaults may be absent
    if not return_lse:
        raise ValueError("the sdpa_fwd op is differentiable only with return_lse=True (its "
                         "backward needs the lse); scaled_dot_product_attention does this")
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.mask_grad = (attn_mask is not None and attn_mask.requires_grad
                     and attn_mask.dtype != torch.bool)
    ctx.mask_shape = None if attn_mask is None else attn_mask.shape
    ctx.save_for_backward(q, k, v, out, lse, attn_mask, dropout_seed)
    ctx.scalars = (softmax_scale, window_right)
    ctx.dropout_p = dropout_p
    ctx.num_inputs = len(inputs)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, attn_mask, dropout_seed = ctx.saved_tensors
    softmax_scale, window_right = ctx.scalars
    dq, dk, dv, dmask = ops.sdpa_bwd(grad_out, q, k, v, out, lse, attn_mask, softmax_scale,
                                     window_right, ctx.mask_grad, ctx.dropout_p, dropout_seed)
    # The mask's gradient in the mask's dtype; the caller's broadcast (expand) sums it back to
    # the mask's own shape.
    dmask = dmask.to(attn_mask.dtype) if ctx.mask_grad else None
    return (dq, dk, dv, dmask, None, None, None, None, None)[:ctx.num_inputs]


torch.library.register_autograd(add_op_namespace_prefix("sdpa_fwd"), _backward,
                                setup_context=_setup_context)
