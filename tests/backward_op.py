"""The registered backward op called alone, on the out and lse of the float64 reference instead of
the kernel's forward: tests and benchmarks of the backward kernels at a head dim the forward
kernels of the same build may not have, and traffic counts of the backward launches only."""

from __future__ import annotations

import torch

from reference import Semantics, attention_varlen


def backward_alone(fa, q, k, v, cu_seqlens_q, cu_seqlens_k, dout, sem: Semantics,
                   max_seqlen_q: int, max_seqlen_k: int):
    """(dq, dk, dv, ds_aux) of the build's `bwd` op, given out (the reference's, rounded to q's
    dtype) and lse (float32) of the call `sem` describes. ds_aux is empty without sinks."""
    with torch.no_grad():
        ref_out, ref_lse = attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, sem)
    out = ref_out.to(q.dtype)
    lse = ref_lse.float().contiguous()
    left, right = sem.window
    if sem.causal:
        right = 0
    sinks = None if sem.sinks is None else sem.sinks.detach()
    return fa._ops.ops.bwd(dout, q.detach(), k.detach(), v.detach(), out, lse, cu_seqlens_q,
                           cu_seqlens_k, sem.alibi_slopes, sinks, max_seqlen_q, max_seqlen_k,
                           sem.scale, sem.softcap, left, right)
