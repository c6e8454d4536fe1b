#!/usr/bin/env python3
"""`make demo`: packed variable-length attention through kernels.get_kernel on a realistic mixed
batch, checked against torch, timed against the torch routes a user would otherwise take.

    python scripts/demo.py [--sequences 16] [--longest 2048] [--repeats 3]

Prints time, GFLOP/s (useful work: visible query-key pairs only) and the speed ratio of this
kernel over each torch route, measured in the same run, and the peak memory each route adds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import attention_routes as R  # noqa: E402

DTYPE = torch.bfloat16
HEADS, HEADS_KV, HEAD_DIM = 32, 8, 128


def workload(args) -> R.VarlenInputs:
    return R.mixed_batch(DTYPE, args.sequences, args.longest, HEADS, HEADS_KV, HEAD_DIM,
                         seed=args.seed)


def routes(fa, x):
    return R.on_inputs(R.varlen_routes(fa, x), x)


def measure_memory(args, route_index: int) -> None:
    """Child mode: peak resident memory one route adds, printed in MB. (The peak is reset first:
    a child inherits its parent's high-water mark across exec.)"""
    fa = R.load_local_kernel()
    x = workload(args)
    fn = list(routes(fa, x).values())[route_index]
    print(R.peak_extra_bytes(fn) / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--longest", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-of", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of is not None:
        measure_memory(args, args.memory_of)
        return

    fa = R.load_local_kernel()
    x = workload(args)
    print(f"Mixed batch: {len(x.lengths)} sequences of {min(x.lengths)}-{max(x.lengths)} tokens "
          f"({sum(x.lengths)} in all), {HEADS} query heads, {HEADS_KV} KV heads, head dim "
          f"{HEAD_DIM}, {str(DTYPE).replace('torch.', '')}, causal; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    named = routes(fa, x)
    outputs = {name: fn().float() for name, fn in named.items()}
    kernel_name = next(iter(named))
    for name, out in outputs.items():
        error = (out - outputs["torch SDPA, loop over sequences"]).abs().max().item()
        print(f"  check {name:34s} max |diff| vs torch SDPA per sequence = {error:.2e}")
        if error > 5e-2:
            raise SystemExit(f"{name} disagrees with torch")

    times = R.time_routes(named, repeats=args.repeats, warmup=1)
    flops = R.attention_flops(x.lengths, x.lengths, HEADS, HEAD_DIM, causal=True)
    memory = []
    for i in range(len(named)):
        child = subprocess.run([sys.executable, __file__, "--sequences", str(args.sequences),
                                "--longest", str(args.longest), "--seed", str(args.seed),
                                "--memory-of", str(i)], capture_output=True, text=True,
                               check=True)
        memory.append(float(child.stdout.strip().splitlines()[-1]))

    print()
    print(f"  {'route':34s} {'time (ms)':>10s} {'GFLOP/s':>8s} {'kernel speed-up':>16s} "
          f"{'peak +MB':>9s}")
    for (name, t), mb in zip(times.items(), memory):
        ratio = t / times[kernel_name]
        print(f"  {name:34s} {t * 1e3:10.1f} {flops / t / 1e9:8.1f} {ratio:15.2f}x {mb:9.0f}")
    fastest_torch = min(t for name, t in times.items() if name != kernel_name)
    print(f"\n  speed-up over the faster torch route: {fastest_torch / times[kernel_name]:.2f}x "
          f"(target >= 1.5x)")


if __name__ == "__main__":
    main()
