#!/usr/bin/env python3
"""Measures the simulator's speed: collectives, barriers, MMAs per second and a small GEMM.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python tests/msl_sim/bench.py
"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import build  # noqa: E402
import sim  # noqa: E402


def rate(lib, kernel, threads, iters, per_iter, check_bounds=True):
    out = np.zeros(max(threads, 64), np.float32)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        lib.run(kernel, threads=(threads, 1, 1), buffers={0: out}, bytes={1: np.uint32(iters)}, workers=1,
                check_bounds=check_bounds)
        best = min(best, time.perf_counter() - t)
    return iters * per_iter / best


def main():
    lib = sim.Library(build.build_library("bench", [os.path.join(HERE, "bench", "bench.metal"),
                                                     os.path.join(HERE, "examples", "gemm.metal")]))
    for check in (True, False):
        tag = "bounds checked" if check else "unchecked"
        print(f"[{tag}]")
        print(f"  simd_sum (one SIMD-group):          {rate(lib, 'bench_simd_sum', 32, 20000, 1, check) / 1e3:8.0f} k/s")
        print(f"  simd_shuffle_xor (one SIMD-group):  {rate(lib, 'bench_shuffle_xor', 32, 20000, 1, check) / 1e3:8.0f} k/s")
        print(f"  threadgroup_barrier (128 threads):  {rate(lib, 'bench_barrier', 128, 5000, 1, check) / 1e3:8.0f} k/s")
        print(f"  threadgroup_barrier (1024 threads): {rate(lib, 'bench_barrier', 1024, 1000, 1, check) / 1e3:8.0f} k/s")
        print(f"  8x8x8 simdgroup MMA:                {rate(lib, 'bench_mma', 32, 20000, 1, check) / 1e3:8.0f} k/s")
        M = N = 128
        K = 64
        a = np.random.rand(M, K).astype(np.float32)
        b = np.random.rand(K, N).astype(np.float32)
        c = np.zeros((M, N), np.float32)
        for workers in (1, 2):
            best = 1e9
            for _ in range(3):
                t = time.perf_counter()
                lib.run("gemm_float", grid=(N // 32, M // 32, 1), threads=(128, 1, 1), buffers={0: a, 1: b, 2: c},
                        bytes={3: np.array([M, N, K, 0], np.uint32)}, workers=workers, check_bounds=check)
                best = min(best, time.perf_counter() - t)
            print(f"  gemm_float 128x128x64, {workers} worker(s):  {best * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
