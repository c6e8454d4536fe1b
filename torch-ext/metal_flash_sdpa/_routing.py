"""Routing a program's torch.nn.functional.scaled_dot_product_attention calls through the kernels.

    fa.route_sdpa()              # from now on (fa.route_sdpa(False) undoes it)
    with fa.routed_sdpa(): ...   # within a block

Either replaces torch.nn.functional.scaled_dot_product_attention by `sdpa_or_torch`, which runs
a call on the kernels when they take it (kernel_takes) and hands every other call to the function
it replaced (torch's), unchanged: other dtypes or devices, head dims the kernels lack, a
`dropout_p` that is neither 0 nor in (0, 1), and the calls torch itself refuses (so the error
is torch's).

Dropout (0 < dropout_p < 1) runs on the kernels, with torch's semantics: applied whenever
dropout_p > 0 (F.scaled_dot_product_attention has no training flag; a module passes 0 in eval),
kept entries scaled by 1 / (1 - dropout_p), the same gradients. Only the random stream differs:
the mask is the kernels' (docs/API.md, "Dropout": drawn from torch's default generator, so
torch.manual_seed reproduces it), not the one torch would draw for the same seed; both are
uniform random masks of the same law. Code that looks the function up at call time (transformers' `sdpa` attention, diffusers'
processors, timm) is routed; a reference taken before routing (`from torch.nn.functional import
scaled_dot_product_attention` at import time) is not. torch.compile traces the routed function.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F

from ._ops import add_op_namespace_prefix
from ._sdpa import _torch_fuses, scaled_dot_product_attention

# The build this package is (its op namespace says): the device its kernels take. Every build
# reads attn_mask (the cpu kernels and the Metal ones).
# The namespace is _metal_flash_sdpa_<backend>_<hash>: backend cpu, metal or metalsim.
_BACKEND = add_op_namespace_prefix("").split("::")[0].split("_")[-2]
_DEVICE_TYPE = "mps" if _BACKEND == "metal" else "cpu"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# torch's own function (F.scaled_dot_product_attention is this builtin): what calls the kernels do
# not take fall back to, whatever else has patched F meanwhile.
_torch_sdpa = torch._C._nn.scaled_dot_product_attention


def _head_dim_ok(d: int) -> bool:
    return 8 <= d <= 512 and d % 8 == 0


def _dropout_p_taken(p) -> bool:
    """0 (no dropout) or a probability in (0, 1) as a Python number: what the kernels apply as
    torch does. Anything else (negative, >= 1, NaN, a tensor, a bool) is torch's to handle."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        return False
    return p == 0 or 0 < p < 1


def kernel_takes(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False) -> bool:
    """Whether the kernels run this call exactly as torch would (else it goes to torch)."""
    tensors = (query, key, value) if attn_mask is None else (query, key, value, attn_mask)
    if not all(isinstance(t, torch.Tensor) and not t.is_nested for t in tensors):
        return False
    if any(t.device != query.device for t in tensors) or query.device.type != _DEVICE_TYPE:
        return False
    if query.dtype not in _DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        return False
    if not _dropout_p_taken(dropout_p) or not isinstance(is_causal, bool):
        return False
    if min(query.dim(), key.dim(), value.dim()) < 2:
        return False
    e, ev = query.size(-1), value.size(-1)
    if key.size(-1) != e or not _head_dim_ok(e) or not _head_dim_ok(ev):
        return False
    if key.size(-2) != value.size(-2):
        return False
    if scale is not None and not (isinstance(scale, (int, float)) and abs(scale) < 3.4e38):
        return False
    qb, kb, vb = query.shape[:-2], key.shape[:-2], value.shape[:-2]
    if enable_gqa:
        if query.dim() < 3 or key.dim() < 3 or value.dim() < 3:
            return False
        hq, hk, hv = qb[-1], kb[-1], vb[-1]
        if hq % hk or hq % hv:
            return False
        qb, kb, vb = qb[:-1], kb[:-1], vb[:-1]
    if not _broadcastable(qb, kb, vb):
        return False
    if attn_mask is not None:
        if attn_mask.dtype not in (torch.bool, torch.float32, query.dtype):
            return False
        if attn_mask.dim() < 2 or (is_causal and not _torch_fuses(query, key, value, attn_mask,
                                                                         enable_gqa)):
            return False
        batch = _broadcast(query.shape[:-2], key.shape[:-2], value.shape[:-2]) if not enable_gqa \
            else (*_broadcast(qb, kb, vb), query.size(-3))
        target = (*batch, query.size(-2), key.size(-2))
        if not _broadcastable(attn_mask.shape, target) or \
                len(attn_mask.shape) > len(target) or \
                _broadcast(attn_mask.shape, target) != tuple(target):
            return False
    return True


def _broadcastable(*shapes) -> bool:
    n = max(len(s) for s in shapes)
    for i in range(1, n + 1):
        sizes = {s[-i] for s in shapes if len(s) >= i} - {1}
        if len(sizes) > 1:
            return False
    return True


def _broadcast(*shapes) -> tuple:
    n = max(len(s) for s in shapes)
    out = []
    for i in range(n, 0, -1):
        sizes = [s[-i] for s in shapes if len(s) >= i]
        out.append(max(sizes) if all(x in (1, max(sizes)) for x in sizes) else -1)
    return tuple(out)


def sdpa_or_torch(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                  is_causal: bool = False, scale: Optional[float] = None,
                  enable_gqa: bool = False) -> torch.Tensor:
    """torch.nn.functional.scaled_dot_product_attention's signature: the kernels where they take
    the call, torch otherwise."""
    if kernel_takes(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
        return scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal,
                                            scale, enable_gqa)
    return _torch_sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                       is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)


def route_sdpa(enabled: bool = True) -> None:
    """The global switch: route (or stop routing) every later F.scaled_dot_product_attention."""
    F.scaled_dot_product_attention = sdpa_or_torch if enabled else _torch_sdpa


@contextlib.contextmanager
def routed_sdpa():
    """Routes F.scaled_dot_product_attention within the block; restores what was there."""
    previous = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = sdpa_or_torch
    try:
        yield
    finally:
        F.scaled_dot_product_attention = previous
