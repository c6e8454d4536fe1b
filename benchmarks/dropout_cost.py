"""The cost of dropout: forward + backward with dropout_p = 0.1 against the same call with
dropout_p = 0, as a ratio measured in the same run (rounds interleaved).

    python benchmarks/dropout_cost.py [--repeats 5] [--quick]

Workloads: dense causal batches of 2 sequences x 2048 tokens, 16 heads, head dims 64 and 128, in
fp32 and bf16 (flash_attn_func), and the mixed varlen batch of `make bench` (GQA 32/8, head dim
128, causal) in bf16 (flash_attn_varlen_func). issue 22's target: ratio <= 1.3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attention_routes as R  # noqa: E402

DENSE = [(2, 2048, 16, 64), (2, 2048, 16, 128)]


def training_step(call, inputs, dout, dropout_p):
    """forward + backward of call(*leaves, dropout_p) (the grads are dropped)."""
    def run():
        leaves = [t.detach().requires_grad_() for t in inputs]
        call(*leaves, dropout_p).backward(dout)
    return run


def report(workload: str, call, inputs, repeats: int) -> None:
    dout = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(1))
    dout = dout.to(inputs[0].dtype)
    routes = {p: training_step(call, inputs, dout, p) for p in (0.0, 0.1)}
    times = R.time_routes(routes, repeats=repeats)
    plain, dropped = times[0.0], times[0.1]
    print(f"{workload:34s} {plain * 1e3:12.1f} {dropped * 1e3:14.1f} {dropped / plain:8.3f}",
          flush=True)


def main() -> None:
    args = R.benchmark_arguments(__doc__.split("\n")[0], 5, "1024 tokens, fewer workloads")
    fa = R.load_local_kernel()
    print(f"{R.torch_and_threads()}; forward + backward, "
          f"median of {args.repeats} interleaved rounds; ratio = time with dropout_p=0.1 / "
          f"time with dropout_p=0")
    print(f"{'workload':34s} {'p=0 ms':>12s} {'p=0.1 ms':>14s} {'ratio':>8s}")
    for dtype in (torch.float32, torch.bfloat16):
        for batch, seqlen, heads, dim in DENSE:
            seqlen = seqlen // 2 if args.quick else seqlen
            d = R.dense_inputs(batch, seqlen, heads, dim, dtype, causal=True)
            report(f"dense {batch}x{seqlen} h{heads} d{dim} {str(dtype)[6:]}",
                   lambda q, k, v, p: fa.flash_attn_func(q, k, v, dropout_p=p, causal=True),
                   (d.q, d.k, d.v), args.repeats)
    if not args.quick:
        x = R.mixed_batch(torch.bfloat16)
        report("varlen mixed 32/8 d128 bf16",
               lambda q, k, v, p: fa.flash_attn_varlen_func(
                   q, k, v, x.cu_seqlens, x.cu_seqlens, x.max_seqlen, x.max_seqlen,
                   dropout_p=p, causal=True),
               (x.q, x.k, x.v), args.repeats)


if __name__ == "__main__":
    main()
