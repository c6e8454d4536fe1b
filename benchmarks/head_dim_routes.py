"""Efficiency per FLOP at head dim 512 (Gemma 4's global layers) against 256, on the local cpu
build: the same workloads at both head dims, and the ratio of their seconds per useful FLOP
(1.0 = 512 is exactly as efficient as 256; above 1 it is slower per FLOP).

    python benchmarks/head_dim_routes.py [--repeats 5] [--quick]

Workloads (GQA 8/2, V's head dim = q's): prefill, a packed varlen batch of equal causal
sequences; decode, one query per sequence against a long cache of keys. Each in fp32 and bf16,
forward alone and forward + backward. The rounds interleave both head dims, so a noisy moment of
the shared machine hits both alike: the ratios are what to read, not the times.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attention_routes as R  # noqa: E402

HEAD_DIMS = (256, 512)
HEADS, HEADS_KV = 8, 2
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def workloads(quick: bool):
    """name -> (query lengths, key lengths, causal)."""
    prefill = 256 if quick else 512
    decode_keys = 512 if quick else 2048
    return {
        "prefill": ([prefill] * 4, [prefill] * 4, True),
        "decode": ([1] * 16, [decode_keys] * 16, False),
    }


def packed(lengths, heads, head_dim, dtype, generator):
    return torch.randn(sum(lengths), heads, head_dim, generator=generator).to(dtype)


def route(fa, lengths_q, lengths_k, head_dim, dtype, causal, backward: bool):
    """One call of the kernel on fresh inputs (with backward: forward + backward)."""
    g = torch.Generator().manual_seed(head_dim)
    cu_q, cu_k = R.cu_seqlens(lengths_q), R.cu_seqlens(lengths_k)
    q = packed(lengths_q, HEADS, head_dim, dtype, g)
    k = packed(lengths_k, HEADS_KV, head_dim, dtype, g)
    v = packed(lengths_k, HEADS_KV, head_dim, dtype, g)
    dout = torch.randn(q.shape, generator=g).to(dtype)

    def forward():
        with torch.no_grad():
            fa.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lengths_q), max(lengths_k),
                                      causal=causal)

    def forward_backward():
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out = fa.flash_attn_varlen_func(*leaves, cu_q, cu_k, max(lengths_q), max(lengths_k),
                                        causal=causal)
        out.backward(dout)

    return forward_backward if backward else forward


def main() -> None:
    args = R.benchmark_arguments(__doc__.splitlines()[0], 5, "smaller workloads")
    fa = R.load_local_kernel()
    print(f"torch threads: {torch.get_num_threads()}; seconds per FLOP at 512 / at 256 "
          f"(1.00 = equally efficient); median of {args.repeats} interleaved rounds")
    print(f"{'workload':10} {'dtype':5} {'pass':17} {'ms @256':>9} {'ms @512':>9} "
          f"{'GFLOP/s @256':>13} {'GFLOP/s @512':>13} {'512/256 per FLOP':>17}")
    for name, (lengths_q, lengths_k, causal) in workloads(args.quick).items():
        for dtype_name, dtype in DTYPES.items():
            for backward in (False, True):
                routes = {d: route(fa, lengths_q, lengths_k, d, dtype, causal, backward)
                          for d in HEAD_DIMS}
                seconds = R.time_routes(routes, repeats=args.repeats)
                # The backward's products are 2.5x the forward's (5 against 2): same at both dims.
                flops = {d: R.attention_flops(lengths_q, lengths_k, HEADS, d, causal)
                         * (3.5 if backward else 1.0) for d in HEAD_DIMS}
                per_flop = {d: seconds[d] / flops[d] for d in HEAD_DIMS}
                rate = {d: 1e-9 / per_flop[d] for d in HEAD_DIMS}
                pass_name = "forward+backward" if backward else "forward"
                print(f"{name:10} {dtype_name:5} {pass_name:17} {seconds[256] * 1e3:9.1f} "
                      f"{seconds[512] * 1e3:9.1f} {rate[256]:13.1f} {rate[512]:13.1f} "
                      f"{per_flop[512] / per_flop[256]:17.2f}", flush=True)


if __name__ == "__main__":
    main()
