"""Benchmarks in kernels' form (`kernels benchmark`), and as a script that prints this kernel's
speed as ratios against torch's routes measured in the same run:

    python benchmarks/benchmark_attention.py [--repeats 5] [--quick]

Workloads: the mixed varlen batch of `make demo` (bf16, GQA 32/8, head dim 128, causal), and dense
equal-length batches, causal and not, in fp32 and bf16, against torch's SDPA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attention_routes as R  # noqa: E402
from kernels.benchmark import Benchmark  # noqa: E402

DENSE = {  # name -> (batch, seqlen, heads, head_dim, dtype, causal)
    "dense_fp32": (2, 1024, 16, 128, torch.float32, False),
    "dense_fp32_causal": (2, 1024, 16, 128, torch.float32, True),
    "dense_bf16": (2, 1024, 16, 128, torch.bfloat16, False),
    "dense_bf16_causal": (2, 1024, 16, 128, torch.bfloat16, True),
}


class VarlenMixedBatch(Benchmark):
    """16 sequences of 1-2048 tokens; verified against torch SDPA per sequence."""

    seed = 0

    def setup(self):
        lengths = R.mixed_lengths(16, 1, 2048, seed=0)
        self.x = R.varlen_inputs(lengths, 32, 8, 128, torch.bfloat16, causal=True)

    def benchmark_varlen_mixed_bf16(self):
        self.out = R.kernel_varlen(self.kernel, self.x)

    def verify_varlen_mixed_bf16(self):
        return R.sdpa_loop(self.x)


class DenseBatch(Benchmark):
    """Equal-length batches against torch SDPA on the same tensors."""

    seed = 0

    def _setup(self, name):
        self.x = R.dense_inputs(*DENSE[name])

    def _run(self):
        self.out = R.kernel_dense(self.kernel, self.x)

    def _verify(self):
        return R.sdpa_dense(self.x)


for _name in DENSE:  # setup_X / benchmark_X / verify_X per dense workload
    setattr(DenseBatch, f"setup_{_name}", lambda self, n=_name: self._setup(n))
    setattr(DenseBatch, f"benchmark_{_name}", lambda self: self._run())
    setattr(DenseBatch, f"verify_{_name}", lambda self: self._verify())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller shapes, fewer repeats")
    args = parser.parse_args()
    fa = R.load_local_kernel()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of "
          f"{args.repeats} interleaved rounds; ratio = baseline time / kernel time (>1: faster)")
    print(f"{'workload':22s} {'baseline':34s} {'kernel ms':>10s} {'baseline ms':>12s} "
          f"{'ratio':>7s} {'kernel GFLOP/s':>15s}")

    longest = 512 if args.quick else 2048
    x = R.varlen_inputs(R.mixed_lengths(16, 1, longest), 32, 8, 128, torch.bfloat16, causal=True)
    times = R.time_routes({
        "kernel": lambda: R.kernel_varlen(fa, x),
        "torch SDPA, padded batch + mask": lambda: R.sdpa_padded(x),
        "torch SDPA, loop over sequences": lambda: R.sdpa_loop(x),
    }, repeats=args.repeats)
    flops = R.attention_flops(x.lengths, x.lengths, 32, 128, causal=True)
    report("varlen_mixed_bf16", times, flops)

    for name, (batch, seqlen, heads, dim, dtype, causal) in DENSE.items():
        seqlen = seqlen // 2 if args.quick else seqlen
        d = R.dense_inputs(batch, seqlen, heads, dim, dtype, causal)
        times = R.time_routes({"kernel": lambda: R.kernel_dense(fa, d),
                               "torch SDPA": lambda: R.sdpa_dense(d)}, repeats=args.repeats)
        flops = R.attention_flops([seqlen] * batch, [seqlen] * batch, heads, dim, causal)
        report(name, times, flops)


def report(workload: str, times: dict[str, float], flops: float) -> None:
    kernel = times.pop("kernel")
    for baseline, t in times.items():
        print(f"{workload:22s} {baseline:34s} {kernel * 1e3:10.1f} {t * 1e3:12.1f} "
              f"{t / kernel:6.2f}x {flops / kernel / 1e9:15.1f}")


if __name__ == "__main__":
    main()
