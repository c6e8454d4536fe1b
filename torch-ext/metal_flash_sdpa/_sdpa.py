"""scaled_dot_product_attention: torch.nn.functional.scaled_dot_product_attention's signature and
semantics (torch 2.13), run by the package's kernels.

How torch's call maps onto the kernels' fixed-length form:

- Layout. torch's (N, ..., L, E) tensors are flattened to [batch, heads, L, E] (views where the
  strides allow) and handed to the kernels transposed, as [batch, L, heads, E] views: the kernels
  take strides, so nothing is copied. Batch dimensions broadcast as in torch's math path (an
  expanded dimension has stride 0); the output is torch's contiguous (N, ..., L, Ev).
- is_causal is aligned top-left in torch (key j visible to query i iff j <= i); the kernels' rule
  (common/attention_semantics.h, visible_keys) is bottom-right: query i sits at key position
  i + S - L with window_right the causal bound. Top-left is that rule on the first min(S, L) keys
  (keys j >= L are visible to no query) with window_right = L - min(S, L): for L <= S both are
  j <= i; for L > S, i + S - L + (L - S) = i. So no rule is restated here.
- attn_mask (boolean: True takes part; floating: added to the scaled scores) is passed as an
  expanded [batch, heads, L, S] view; the kernels read it through its strides (0 along broadcast
  dimensions) tile by tile. torch 2.13 computes attn_mask together with is_causal where its
  fused CPU kernel takes the call (4-D q, k, v with one batch size, E == Ev, last dimensions
  contiguous): the two masks are combined (a key must pass both). Where it would fall back to its
  math path, torch raises; so does this function, with torch's message.
- A row that no key reaches returns zeros, as torch's math path does (for boolean and -inf masks).
- enable_gqa: K/V heads dividing q's are read by the kernels' native GQA, never repeated.
- dropout_p > 0 applies dropout whatever the module's training mode (torch's semantics: the
  caller passes 0 in eval), drawn as flash_attn_func draws it (_dropout.py) over the flattened
  [batch, L, heads] form: docs/API.md, "Dropout", says which entry each draw belongs to.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch

from ._dropout import draw_dropout_seed
from ._ops import ops
from ._ops_backward import needs_grad
from . import _ops_sdpa  # noqa: F401  (registers the sdpa ops' fake implementations and autograd)

_TORCH_DTYPE_NAMES = {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
                      torch.bfloat16: "c10::BFloat16", torch.int32: "int", torch.int64: "long",
                      torch.bool: "bool", torch.uint8: "unsigned char", torch.int8: "signed char",
                      torch.int16: "short"}


def _dtype_name(dtype: torch.dtype) -> str:
    return _TORCH_DTYPE_NAMES.get(dtype, str(dtype))


def _check_like_torch(query, key, value, attn_mask, is_causal, enable_gqa) -> None:
    """The checks of torch 2.13's SDPA, with its exception types and messages."""
    if query.dim() < 2 or key.dim() < 2 or value.dim() < 2:
        raise RuntimeError(
            "Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: "
            f"{query.dim()} key.dim: {key.dim()} and value.dim: {value.dim()} instead.")
    if not (query.dtype == key.dtype == value.dtype):
        raise RuntimeError(
            "Expected query, key, and value to have the same dtype, but got query.dtype: "
            f"{_dtype_name(query.dtype)} key.dtype: {_dtype_name(key.dtype)} and value.dtype: "
            f"{_dtype_name(value.dtype)} instead.")
    if attn_mask is not None and attn_mask.dtype not in (torch.bool, torch.float32, query.dtype):
        raise RuntimeError(
            "Expected attn_mask dtype to be bool or float or to match query dtype, but got "
            f"attn_mask.dtype: {_dtype_name(attn_mask.dtype)} and  query.dtype: "
            f"{_dtype_name(query.dtype)} instead.")
    if enable_gqa:
        hq, hk, hv = query.size(-3), key.size(-3), value.size(-3)  # IndexError below 3-D, as torch
        if hq % hk != 0 or hq % hv != 0:
            raise RuntimeError("Number of heads in key and value must divide the number of heads "
                               f"in query (query: {hq}, key: {hk}, value: {hv})")
    if key.size(-1) != query.size(-1):
        raise RuntimeError(f"key's last dimension ({key.size(-1)}) must equal query's "
                           f"({query.size(-1)})")
    if key.size(-2) != value.size(-2):
        raise RuntimeError(f"key and value must have the same sequence length, got key "
                           f"{key.size(-2)} and value {value.size(-2)}")
    if attn_mask is not None and is_causal and not _torch_fuses(query, key, value, attn_mask,
                                                                enable_gqa):
        raise RuntimeError(
            "_scaled_dot_product_attention: Explicit attn_mask should not be set when "
            "is_causal=True")


def _torch_fuses(query, key, value, attn_mask, enable_gqa) -> bool:
    """Whether torch 2.13's dispatcher sends the call to its fused CPU kernel (which combines
    attn_mask with is_causal) rather than its math path (which refuses the pair): its
    use_flash_attention_cpp gates (sdp_utils_cpp), checked on the installed torch. An empty
    input returns before either path."""
    if query.numel() == 0 or key.numel() == 0 or value.numel() == 0:
        return True
    if not (query.dim() == key.dim() == value.dim() == 4):
        return False
    if not (query.size(0) == key.size(0) == value.size(0)):
        return False
    hq, hk, hv = query.size(1), key.size(1), value.size(1)
    if not (hq == hk == hv or (enable_gqa and hk == hv and hq % hk == 0)):
        return False
    if not (query.size(-1) == key.size(-1) == value.size(-1)):
        return False
    if not all(t.stride(-1) == 1 for t in (query, key, value)):
        return False
    # check_attn_mask_shape: no gradient; [L|1, S|1] or [N|1, H|1, L|1, S|1]
    m = attn_mask
    if m.requires_grad or m.size(-2) not in (query.size(2), 1) or m.size(-1) not in (key.size(2), 1):
        return False
    return m.dim() == 2 or (m.dim() == 4 and m.size(0) in (query.size(0), 1)
                            and m.size(1) in (query.size(1), 1))


def _check_mask_broadcasts(mask_shape, scores_shape) -> None:
    """torch's error (from adding the mask to the scores) for a mask that does not broadcast."""
    rank = max(len(mask_shape), len(scores_shape))
    for i in range(1, min(len(mask_shape), len(scores_shape)) + 1):
        a, b = scores_shape[-i], mask_shape[-i]
        if a != b and a != 1 and b != 1:
            raise RuntimeError(f"The size of tensor a ({a}) must match the size of tensor b ({b}) "
                               f"at non-singleton dimension {rank - i}")


def _batch_shapes(query, key, value, enable_gqa):
    """(batch shape of the output, key's, value's), batch = every dimension but the last two.
    With native GQA the heads (dim -3) stay each tensor's own."""
    qb, kb, vb = query.shape[:-2], key.shape[:-2], value.shape[:-2]
    if enable_gqa and len(qb) >= 1 and (kb[-1] != qb[-1] or vb[-1] != qb[-1]):
        outer = torch.broadcast_shapes(qb[:-1], kb[:-1], vb[:-1])
        return (*outer, qb[-1]), (*outer, kb[-1]), (*outer, vb[-1])
    full = torch.broadcast_shapes(qb, kb, vb)
    return full, full, full


def _as_fixed_length(t: torch.Tensor, batch, rows: int) -> torch.Tensor:
    """(N, ..., rows, dim) -> the kernels' [B, rows, H, dim] view (B = prod of batch[:-1],
    H = batch[-1]); broadcast dimensions keep stride 0."""
    heads = batch[-1] if len(batch) else 1
    b = math.prod(batch[:-1]) if len(batch) > 1 else 1
    t = t.expand(*batch, rows, t.size(-1)).reshape(b, heads, rows, t.size(-1))
    if t.size(-1) > 1 and t.stride(-1) != 1:  # the kernels need a contiguous last dimension
        t = t.contiguous()
    return t.transpose(1, 2)


def _sdpa_dropout_p(dropout_p) -> float:
    """dropout_p judged as torch 2.13's F.scaled_dot_product_attention judges it: not a number is
    torch's TypeError; below 0, above 1 or NaN raises RuntimeError (torch's dispatcher raises for
    each; only its math backend, picked by hand, ignores a negative one). 1 (torch: every
    probability dropped, zeros) and a tensor are not taken by the kernels: refused by name."""
    if isinstance(dropout_p, torch.Tensor):
        raise NotImplementedError("scaled_dot_product_attention: a tensor dropout_p is not "
                                  "supported by the kernels; pass a float")
    if not isinstance(dropout_p, numbers.Real):
        raise TypeError("scaled_dot_product_attention(): argument 'dropout_p' must be float, not "
                        f"{type(dropout_p).__name__}")
    p = float(dropout_p)
    if not 0.0 <= p <= 1.0:  # true for NaN
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p} "
                           "(scaled_dot_product_attention's dropout_p)")
    if p == 1.0:
        raise NotImplementedError("scaled_dot_product_attention: dropout_p = 1 (every probability "
                                  "dropped) is not supported by the kernels")
    return p


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention (torch 2.13 semantics) on the package's
    kernels: query (N, ..., L, E), key (N, ..., S, E), value (N, ..., S, Ev) -> (N, ..., L, Ev).

    attn_mask: boolean (True takes part) or floating (added to the scaled scores), broadcastable
    to (N, ..., L, S), never materialised. is_causal: top-left (key j visible to query i iff
    j <= i); with attn_mask, combined as torch 2.13 does. enable_gqa: key/value heads dividing
    query's, not repeated. Differentiable in query, key, value and a floating attn_mask.
    dropout_p > 0 applies dropout (outside [0, 1]: torch's RuntimeError; 1: NotImplementedError).
    The kernels' limits apply: float32/float16/bfloat16,
    E and Ev multiples of 8 up to 512."""
    if not isinstance(is_causal, bool):
        raise TypeError("scaled_dot_product_attention(): argument 'is_causal' must be bool, not "
                        f"{type(is_causal).__name__}")
    _check_like_torch(query, key, value, attn_mask, is_causal, enable_gqa)
    dropout_p = _sdpa_dropout_p(dropout_p)
    L, S, ev = query.size(-2), key.size(-2), value.size(-1)
    batch, k_batch, v_batch = _batch_shapes(query, key, value, enable_gqa)
    if attn_mask is not None:
        attn_mask.size(-2)  # torch's IndexError for a 1-D mask
        target = (*batch, L, S)
        _check_mask_broadcasts(attn_mask.shape, target)
        shape = torch.broadcast_shapes(attn_mask.shape, target)
        if tuple(shape) != tuple(target):
            raise RuntimeError(f"output with shape {list(target)} doesn't match the broadcast "
                               f"shape {list(shape)}")
    if k_batch[-1:] != v_batch[-1:]:  # GQA with different key and value heads: repeat to q's
        group = batch[-1]
        key = key.repeat_interleave(group // key.size(-3), dim=-3)
        value = value.repeat_interleave(group // value.size(-3), dim=-3)
        k_batch = v_batch = batch

    q = _as_fixed_length(query, batch, L)
    k = _as_fixed_length(key, k_batch, S)
    v = _as_fixed_length(value, v_batch, S)
    mask = None
    if attn_mask is not None:
        heads = batch[-1] if len(batch) else 1
        b = math.prod(batch[:-1]) if len(batch) > 1 else 1
        mask = attn_mask.expand(*batch, L, S).reshape(b, heads, L, S)
    window_right = -1
    if is_causal:  # top-left: the first min(S, L) keys, bottom-right window L - min(S, L)
        keys = min(S, L)
        k, v = k[:, :keys], v[:, :keys]
        mask = None if mask is None else mask[..., :keys]
        window_right = L - keys
    softmax_scale = query.size(-1) ** -0.5 if scale is None else float(scale)
    grad = needs_grad(query, key, value,
                      attn_mask if attn_mask is not None and attn_mask.is_floating_point() else None)
    out, _ = ops.sdpa_fwd(q, k, v, mask, softmax_scale, window_right, grad, dropout_p,
                          draw_dropout_seed(dropout_p))
    return out.transpose(1, 2).reshape(*batch, L, ev)
