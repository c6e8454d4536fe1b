"""The workloads and the routes a user could take for them, shared by `make demo`, `make bench`
(benchmark_attention.py), `make bench-backward` (training_routes.py) and `make bench-head-dims`
(head_dim_routes.py): this kernel, and the torch routes it replaces (SDPA on a padded batch with
a mask, SDPA per sequence in a loop, SDPA on a dense batch), with one way to time them and one
way to measure their memory; and the timing benchmarks' shared command line and header words
(benchmark_arguments, torch_and_threads)."""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
REPO_ID = "kernels-community/metal-flash-sdpa"


def benchmark_arguments(description: str | None, repeats: int, quick_help: str,
                        more: Callable[[argparse.ArgumentParser], None] | None = None):
    """The timing benchmarks' command line: --repeats (interleaved rounds, default `repeats`),
    --quick (`quick_help` says what it shrinks), and what `more` adds; parsed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if more is not None:
        more(parser)
    return parser.parse_args()


def torch_and_threads() -> str:
    """The first words of a benchmark's header: torch's version and its thread count."""
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def load_local_kernel():
    """The kernel as users load it, from this checkout's local build (make build)."""
    import kernels

    os.environ["LOCAL_KERNELS"] = f"{REPO_ID}={REPO}"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return kernels.get_kernel(REPO_ID, version=2)


@dataclass
class VarlenInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    cu_seqlens: torch.Tensor
    lengths: list[int]
    causal: bool

    @property
    def max_seqlen(self) -> int:
        return max(self.lengths)


def mixed_lengths(n: int = 16, shortest: int = 1, longest: int = 2048, seed: int = 0):
    """A realistic serving batch: lengths spread log-uniformly from `shortest` to `longest`,
    the longest always present."""
    rng = random.Random(seed)
    lengths = [round(shortest * (longest / shortest) ** rng.random()) for _ in range(n - 1)]
    return sorted(lengths + [longest])


def values_in_unit_range(shape, g: torch.Generator, dtype) -> torch.Tensor:
    """V drawn uniformly from [-1, 1): every output, an average of V rows, stays in [-1, 1], where
    bf16 values 1 ulp apart differ by less than the 1e-2 that `kernels benchmark` verifies with.
    (With N(0, 1) values a causal batch's first rows, averages of one or two rows, reach 2-4 where
    one bf16 ulp is 0.016: a correctly rounded output could fail that check.)"""
    return (torch.rand(shape, generator=g) * 2 - 1).to(dtype)


def cu_seqlens(lengths) -> torch.Tensor:
    """int32 offsets [0, l0, l0 + l1, ...] of sequences packed one after another."""
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def varlen_inputs(lengths, heads, heads_kv, head_dim, dtype, causal=True, seed=0) -> VarlenInputs:
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    cu = cu_seqlens(lengths)
    make = lambda h: torch.randn(total, h, head_dim, generator=g).to(dtype)  # noqa: E731
    values = values_in_unit_range((total, heads_kv, head_dim), g, dtype)
    return VarlenInputs(make(heads), make(heads_kv), values, cu, list(lengths), causal)


def mixed_batch(dtype, sequences=16, longest=2048, heads=32, heads_kv=8, head_dim=128,
                seed=0) -> VarlenInputs:
    """The mixed serving batch every script runs: `sequences` causal sequences of 1 to `longest`
    tokens (mixed_lengths), GQA 32/8, head dim 128."""
    return varlen_inputs(mixed_lengths(sequences, 1, longest, seed=seed), heads, heads_kv,
                         head_dim, dtype, causal=True, seed=seed)


# Dense equal-length batches: name -> (batch, seqlen, heads, head_dim, dtype, causal).
DENSE_WORKLOADS = {
    "dense_fp32": (2, 1024, 16, 128, torch.float32, False),
    "dense_fp32_causal": (2, 1024, 16, 128, torch.float32, True),
    "dense_bf16": (2, 1024, 16, 128, torch.bfloat16, False),
    "dense_bf16_causal": (2, 1024, 16, 128, torch.bfloat16, True),
}


def attention_flops(lengths_q, lengths_k, heads, head_dim, causal) -> float:
    """Useful multiply-adds of QK^T and PV (x2 flops each), counting only visible pairs."""
    pairs = 0
    for sq, sk in zip(lengths_q, lengths_k):
        if causal:  # bottom-right: row i sees keys up to i + sk - sq
            pairs += sum(max(0, min(sk, i + sk - sq + 1)) for i in range(sq))
        else:
            pairs += sq * sk
    return 4.0 * pairs * heads * head_dim


# --- routes over a packed varlen batch -------------------------------------------------------

KERNEL = "metal-flash-sdpa (this kernel)"  # the route every ratio is against

def kernel_varlen(fa, x: VarlenInputs) -> torch.Tensor:
    return fa.flash_attn_varlen_func(x.q, x.k, x.v, x.cu_seqlens, x.cu_seqlens, x.max_seqlen,
                                     x.max_seqlen, causal=x.causal)


def sdpa_padded(x: VarlenInputs) -> torch.Tensor:
    """Pad to [B, H, S_max, D], mask padding keys (and the future when causal), unpad."""
    batch, longest = len(x.lengths), x.max_seqlen
    starts = x.cu_seqlens[:-1].tolist()

    def pad(t):
        padded = t.new_zeros(batch, longest, *t.shape[1:])
        for b, (s, n) in enumerate(zip(starts, x.lengths)):
            padded[b, :n] = t[s:s + n]
        return padded.transpose(1, 2)  # [B, H, S, D]

    q, k, v = pad(x.q), pad(x.k), pad(x.v)
    positions = torch.arange(longest)
    key_valid = positions.view(1, 1, longest) < torch.tensor(x.lengths).view(batch, 1, 1)
    mask = key_valid.expand(batch, longest, longest)
    if x.causal:
        mask = mask & (positions.view(longest, 1) >= positions.view(1, longest))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1), enable_gqa=True)
    out = out.transpose(1, 2)
    return torch.cat([out[b, :n] for b, n in enumerate(x.lengths)])


def sdpa_loop(x: VarlenInputs) -> torch.Tensor:
    """One SDPA call per sequence (equal q/k lengths: top-left causal = bottom-right)."""
    outs = []
    for s, n in zip(x.cu_seqlens[:-1].tolist(), x.lengths):
        q, k, v = (t[s:s + n].transpose(0, 1).unsqueeze(0) for t in (x.q, x.k, x.v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=x.causal, enable_gqa=True)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


# --- dense equal-length batches ---------------------------------------------------------------

@dataclass
class DenseInputs:
    q: torch.Tensor  # [B, S, H, D] (flash-attn layout)
    k: torch.Tensor
    v: torch.Tensor
    causal: bool


def dense_inputs(batch, seqlen, heads, head_dim, dtype, causal, seed=0) -> DenseInputs:
    g = torch.Generator().manual_seed(seed)
    make = lambda: torch.randn(batch, seqlen, heads, head_dim, generator=g).to(dtype)  # noqa
    q, k = make(), make()
    return DenseInputs(q, k, values_in_unit_range(q.shape, g, dtype), causal)


def kernel_dense(fa, x: DenseInputs) -> torch.Tensor:
    return fa.flash_attn_func(x.q, x.k, x.v, causal=x.causal)


def sdpa_dense(x: DenseInputs) -> torch.Tensor:
    """torch's SDPA on [B, H, S, D] views of the same tensors (no copies), as users call it."""
    q, k, v = (t.transpose(1, 2) for t in (x.q, x.k, x.v))
    return F.scaled_dot_product_attention(q, k, v, is_causal=x.causal).transpose(1, 2)


# --- route tables: name -> route as a function of (q, k, v) ------------------------------------
# Functions of the tensors, not of the inputs, so that training can call them on leaves that
# require grad; `on_inputs` binds them to the inputs' own tensors.

def varlen_routes(fa, x: VarlenInputs) -> dict[str, Callable]:
    """This kernel and torch's two routes for x's packed batch."""
    def on(route):
        return lambda q, k, v: route(replace(x, q=q, k=k, v=v))
    return {
        KERNEL: on(lambda y: kernel_varlen(fa, y)),
        "torch SDPA, padded batch + mask": on(sdpa_padded),
        "torch SDPA, loop over sequences": on(sdpa_loop),
    }


def dense_routes(fa, d: DenseInputs) -> dict[str, Callable]:
    """This kernel and torch's SDPA for d's equal-length batch."""
    def on(route):
        return lambda q, k, v: route(replace(d, q=q, k=k, v=v))
    return {KERNEL: on(lambda y: kernel_dense(fa, y)), "torch SDPA": on(sdpa_dense)}


def on_inputs(routes: dict[str, Callable], x) -> dict[str, Callable[[], torch.Tensor]]:
    """The routes called on x's own q, k, v."""
    return {name: (lambda fn=fn: fn(x.q, x.k, x.v)) for name, fn in routes.items()}


# --- timing and memory --------------------------------------------------------------------------

def time_routes(routes: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                ) -> dict[str, float]:
    """Median seconds per route. Rounds are interleaved (every route once per round) so that a
    noisy moment of the machine hits all routes alike; ratios are what to read."""
    for fn in routes.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(repeats):
        for name, fn in routes.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def peak_extra_bytes(fn) -> int | None:
    """Peak resident memory above the level before the call (Linux: the /proc peak is reset
    first; None elsewhere). With glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_), large
    tensors are mmap-ed and unmapped when freed, so the peak is the route's working set."""
    try:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
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
