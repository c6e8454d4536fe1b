"""Training speed: forward + backward of this kernel as ratios against torch's routes measured in
the same run, and the peak extra memory of each route's forward + backward.

    python benchmarks/training_routes.py [--repeats 3] [--quick]

Workloads: the mixed varlen batch of `make bench` (GQA 32/8, head dim 128, causal) in fp32 and
bf16 against SDPA on a padded batch with a mask and SDPA per sequence in a loop (each with its
backward), and dense equal-length batches against torch SDPA forward + backward.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attention_routes as R  # noqa: E402

DENSE = {  # name -> (batch, seqlen, heads, head_dim, dtype, causal)
    "dense_fp32_causal": (2, 1024, 16, 128, torch.float32, True),
    "dense_fp32": (2, 1024, 16, 128, torch.float32, False),
    "dense_bf16_causal": (2, 1024, 16, 128, torch.bfloat16, True),
    "dense_bf16": (2, 1024, 16, 128, torch.bfloat16, False),
}


def with_backward(route, inputs, dout):
    """forward + backward of `route` on leaves requiring grad (the grads are dropped)."""
    def run():
        leaves = [t.detach().requires_grad_() for t in inputs]
        out = route(*leaves)
        out.backward(dout)
        return leaves
    return run


def peak_extra_bytes(fn) -> int | None:
    """Peak resident memory above the level before the call (Linux: /proc peak reset). Large
    tensors are mmap-ed and unmapped when freed, so the peak is the route's working set."""
    try:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - before) * 1024
    except OSError:
        return None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def varlen_routes(fa, x: R.VarlenInputs, dout):
    def kernel(q, k, v):
        return fa.flash_attn_varlen_func(q, k, v, x.cu_seqlens, x.cu_seqlens, x.max_seqlen,
                                         x.max_seqlen, causal=x.causal)

    def as_inputs(fn):
        return lambda q, k, v: fn(R.VarlenInputs(q, k, v, x.cu_seqlens, x.lengths, x.causal))

    inputs = (x.q, x.k, x.v)
    return {
        "kernel": with_backward(kernel, inputs, dout),
        "torch SDPA, padded batch + mask": with_backward(as_inputs(R.sdpa_padded), inputs, dout),
        "torch SDPA, loop over sequences": with_backward(as_inputs(R.sdpa_loop), inputs, dout),
    }


def dense_routes(fa, d: R.DenseInputs, dout):
    def kernel(q, k, v):
        return fa.flash_attn_func(q, k, v, causal=d.causal)

    def sdpa(q, k, v):
        return R.sdpa_dense(R.DenseInputs(q, k, v, d.causal))

    inputs = (d.q, d.k, d.v)
    return {"kernel": with_backward(kernel, inputs, dout),
            "torch SDPA": with_backward(sdpa, inputs, dout)}


def main() -> None:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # A fixed threshold turns off glibc's adaptive one, so every large tensor is mmap-ed and
        # unmapped when freed: resident memory then follows what the routes hold.
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller shapes")
    args = parser.parse_args()
    fa = R.load_local_kernel()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; forward + backward, "
          f"median of {args.repeats} interleaved rounds; ratio = baseline time / kernel time "
          f"(>1: faster); peak MiB = peak resident memory above the inputs during the call")
    print(f"{'workload':22s} {'baseline':34s} {'kernel ms':>10s} {'baseline ms':>12s} "
          f"{'ratio':>7s} {'kernel MiB':>11s} {'baseline MiB':>13s}")

    longest = 512 if args.quick else 2048
    for dtype in (torch.float32, torch.bfloat16):
        x = R.varlen_inputs(R.mixed_lengths(16, 1, longest), 32, 8, 128, dtype, causal=True)
        dout = torch.randn(x.q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        routes = varlen_routes(fa, x, dout)
        report(f"varlen_mixed_{str(dtype)[6:]}", routes, args.repeats)

    for name, (batch, seqlen, heads, dim, dtype, causal) in DENSE.items():
        seqlen = seqlen // 2 if args.quick else seqlen
        d = R.dense_inputs(batch, seqlen, heads, dim, dtype, causal)
        dout = torch.randn(d.q.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        report(name, dense_routes(fa, d, dout), args.repeats)


def report(workload: str, routes: dict, repeats: int) -> None:
    memory = {name: peak_extra_bytes(fn) for name, fn in routes.items()}
    times = R.time_routes(routes, repeats=repeats)
    kernel, kernel_mem = times.pop("kernel"), memory.pop("kernel")
    mib = lambda b: "n/a" if b is None else f"{b / 2**20:.0f}"  # noqa: E731
    for baseline, t in times.items():
        print(f"{workload:22s} {baseline:34s} {kernel * 1e3:10.1f} {t * 1e3:12.1f} "
              f"{t / kernel:6.2f}x {mib(kernel_mem):>11s} {mib(memory[baseline]):>13s}", flush=True)


if __name__ == "__main__":
    main()
