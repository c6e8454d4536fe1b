"""Training speed: forward + backward of this kernel as ratios against torch's routes measured in
the same run, and the peak extra memory of each route's forward + backward.

    python benchmarks/training_routes.py [--repeats 3] [--quick]

Workloads: the mixed varlen batch of `make bench` (GQA 32/8, head dim 128, causal) in fp32 and
bf16 against SDPA on a padded batch with a mask and SDPA per sequence in a loop (each with its
backward), and dense equal-length batches against torch SDPA forward + backward.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attention_routes as R  # noqa: E402


def with_backward(route, inputs, dout):
    """forward + backward of `route` on leaves requiring grad (the grads are dropped)."""
    def run():
        leaves = [t.detach().requires_grad_() for t in inputs]
        out = route(*leaves)
        out.backward(dout)
        return leaves
    return run


def trained(routes: dict, x, dout) -> dict:
    """Each route's forward + backward on x's tensors."""
    return {name: with_backward(route, (x.q, x.k, x.v), dout) for name, route in routes.items()}


def main() -> None:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # A fixed threshold turns off glibc's adaptive one, so every large tensor is mmap-ed and
        # unmapped when freed: resident memory then follows what the routes hold.
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    args = R.benchmark_arguments(__doc__.split("\n")[0], 3, "smaller shapes")
    fa = R.load_local_kernel()
    print(f"{R.torch_and_threads()}; forward + backward, "
          f"median of {args.repeats} interleaved rounds; ratio = baseline time / kernel time "
          f"(>1: faster); peak MiB = peak resident memory above the inputs during the call")
    print(f"{'workload':22s} {'baseline':34s} {'kernel ms':>10s} {'baseline ms':>12s} "
          f"{'ratio':>7s} {'kernel MiB':>11s} {'baseline MiB':>13s}")

    for dtype in (torch.float32, torch.bfloat16):
        x = R.mixed_batch(dtype, longest=512 if args.quick else 2048)
        dout = torch.randn(x.q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        report(f"varlen_mixed_{str(dtype)[6:]}", trained(R.varlen_routes(fa, x), x, dout),
               args.repeats)

    for name, (batch, seqlen, heads, dim, dtype, causal) in R.DENSE_WORKLOADS.items():
        seqlen = seqlen // 2 if args.quick else seqlen
        d = R.dense_inputs(batch, seqlen, heads, dim, dtype, causal)
        dout = torch.randn(d.q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        report(name, trained(R.dense_routes(fa, d), d, dout), args.repeats)


def report(workload: str, routes: dict, repeats: int) -> None:
    memory = {name: R.peak_extra_bytes(fn) for name, fn in routes.items()}
    times = R.time_routes(routes, repeats=repeats)
    kernel, kernel_mem = times.pop(R.KERNEL), memory.pop(R.KERNEL)
    mib = lambda b: "n/a" if b is None else f"{b / 2**20:.0f}"  # noqa: E731
    for baseline, t in times.items():
        print(f"{workload:22s} {baseline:34s} {kernel * 1e3:10.1f} {t * 1e3:12.1f} "
              f"{t / kernel:6.2f}x {mib(kernel_mem):>11s} {mib(memory[baseline]):>13s}", flush=True)


if __name__ == "__main__":
    main()
