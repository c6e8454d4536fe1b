"""Benchmarks in kernels' form (`kernels benchmark`), and as a script that prints this kernel's
speed as ratios against torch's routes measured in the same run:

    python benchmarks/benchmark_attention.py [--repeats 5] [--quick]

Workloads: the mixed varlen batch of `make demo` (bf16, GQA 32/8, head dim 128, causal), and dense
equal-length batches, causal and not, in fp32 and bf16, against torch's SDPA.

`kernels benchmark ./` (kernels[benchmark]) runs the Benchmark classes below against build/;
every workload is verified against the float64 reference (tests/reference.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import attention_routes as R  # noqa: E402
from kernels.benchmark import Benchmark  # noqa: E402
from reference import Semantics, attention_fixed, attention_varlen  # noqa: E402

# MFS_BENCHMARK_QUICK=1: the same workloads at toy sizes (the CI test of `kernels benchmark`).
QUICK = os.environ.get("MFS_BENCHMARK_QUICK") == "1"

DENSE = R.DENSE_WORKLOADS
MIXED = dict(sequences=16, longest=2048, heads=32, heads_kv=8, head_dim=128)
if QUICK:
    DENSE = {name: (1, 64, 4, 64, dtype, causal)
             for name, (_, _, _, _, dtype, causal) in DENSE.items()}
    MIXED = dict(sequences=4, longest=64, heads=4, heads_kv=2, head_dim=64)


# `kernels benchmark` checks each workload with torch.allclose(out, verify_X(), atol=1e-2) and
# reports verify_X's time as the reference time. So verify_X runs torch's route for the same
# workload (the baseline the speed-up is against) and returns the float64 reference of
# tests/reference.py rounded to the kernel's dtype, computed once: torch's own bf16 SDPA is less
# accurate than the kernel and would fail that check. (Rounded bf16 values 1 ulp apart differ by
# less than 1e-2 below magnitude 2; the workloads' values are drawn from [-1, 1), so every output
# stays there: attention_routes.values_in_unit_range.)
class _ReferenceCheck:
    """Mixin (not a Benchmark: `kernels benchmark` runs every Benchmark subclass it finds)."""

    seed = 0
    _reference = None

    def _verify(self, baseline, reference):
        baseline()
        if self._reference is None:
            self._reference = reference().to(self.out.dtype)
        return self._reference


class VarlenMixedBatch(_ReferenceCheck, Benchmark):
    """16 sequences of 1-2048 tokens, GQA 32/8, head dim 128, bf16, causal; baseline: torch
    SDPA per sequence (the faster torch route)."""

    def setup(self):
        self.x = R.mixed_batch(torch.bfloat16, **MIXED)

    def benchmark_varlen_mixed_bf16(self):
        self.out = R.kernel_varlen(self.kernel, self.x)

    def verify_varlen_mixed_bf16(self):
        x = self.x
        return self._verify(lambda: R.sdpa_loop(x), lambda: attention_varlen(
            x.q, x.k, x.v, x.cu_seqlens, x.cu_seqlens,
            Semantics(scale=x.q.shape[-1] ** -0.5, causal=x.causal))[0])


class DenseBatch(_ReferenceCheck, Benchmark):
    """Equal-length batches; baseline: torch SDPA on the same tensors."""

    def _setup(self, name):
        self.x = R.dense_inputs(*DENSE[name])

    def _run(self):
        self.out = R.kernel_dense(self.kernel, self.x)

    def _check(self):
        x = self.x
        return self._verify(lambda: R.sdpa_dense(x), lambda: attention_fixed(
            x.q, x.k, x.v, Semantics(scale=x.q.shape[-1] ** -0.5, causal=x.causal))[0])


for _name in DENSE:  # setup_X / benchmark_X / verify_X per dense workload
    setattr(DenseBatch, f"setup_{_name}", lambda self, n=_name: self._setup(n))
    setattr(DenseBatch, f"benchmark_{_name}", lambda self: self._run())
    setattr(DenseBatch, f"verify_{_name}", lambda self: self._check())


def main() -> None:
    args = R.benchmark_arguments(__doc__.split("\n")[0], 5, "smaller shapes, fewer repeats")
    fa = R.load_local_kernel()
    print(f"{R.torch_and_threads()}; median of "
          f"{args.repeats} interleaved rounds; ratio = baseline time / kernel time (>1: faster)")
    print(f"{'workload':22s} {'baseline':34s} {'kernel ms':>10s} {'baseline ms':>12s} "
          f"{'ratio':>7s} {'kernel GFLOP/s':>15s}")

    x = R.mixed_batch(torch.bfloat16, longest=512 if args.quick else 2048)
    times = R.time_routes(R.on_inputs(R.varlen_routes(fa, x), x), repeats=args.repeats)
    flops = R.attention_flops(x.lengths, x.lengths, 32, 128, causal=True)
    report("varlen_mixed_bf16", times, flops)

    for name, (batch, seqlen, heads, dim, dtype, causal) in R.DENSE_WORKLOADS.items():
        seqlen = seqlen // 2 if args.quick else seqlen
        d = R.dense_inputs(batch, seqlen, heads, dim, dtype, causal)
        times = R.time_routes(R.on_inputs(R.dense_routes(fa, d), d), repeats=args.repeats)
        flops = R.attention_flops([seqlen] * batch, [seqlen] * batch, heads, dim, causal)
        report(name, times, flops)


def report(workload: str, times: dict[str, float], flops: float) -> None:
    kernel = times.pop(R.KERNEL)
    for baseline, t in times.items():
        print(f"{workload:22s} {baseline:34s} {kernel * 1e3:10.1f} {t * 1e3:12.1f} "
              f"{t / kernel:6.2f}x {flops / kernel / 1e9:15.1f}")


if __name__ == "__main__":
    main()
