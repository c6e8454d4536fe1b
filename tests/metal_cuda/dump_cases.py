#!/usr/bin/env python3
"""Records, through the simulated Metal build (build-sim/), the launches of API calls that use
every kernel at every head-dim tile and dtype, for gpu_replay.py to run on an NVIDIA GPU (and
compute-sanitizer to check, one launch of each kernel).

    dump_cases.py RECORD_DIR [--tiles 32,64,...] [--dtypes f32,f16,bf16] [--bench BENCH_DIR]

RECORD_DIR holds what MFS_SIM_RECORD writes (metal-flash-sdpa/sim/sim_dispatch.cpp:
launches.jsonl, each launch tagged with its case's name, and blobs/); pack_launches.py packs it.
Each case's outputs (out, lse, dq, dk, dv, ds_aux) are held to the float64 reference here, as
the suite holds them. The calls go through the public API with
every feature the launch can carry: varlen q and k with rows outside every sequence (clear_rows),
GQA, causal, softcap, ALiBi, sinks, lse, and their backward; decode through a paged KV cache with
cache_seqlens (seqused_k) and split-K (decode_reduce); flash-attn's S_dmask (return_attn_probs with
dropout: attention_probs), its |values| against the reference's probabilities.
"""
from __future__ import annotations

import argparse
import os
import sys
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from conftest import load_kernel  # noqa: E402
from reference import LSE_TOLERANCE, TOLERANCE, Semantics, attention_one_sequence, attention_varlen  # noqa: E402

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TILES = [32, 64, 72, 80, 96, 128, 192, 256, 512]


def recording(record: Path, case: str):
    """Records the launches of one case into record/ (MFS_SIM_RECORD), each tagged with the case
    name where the suite's launches carry their pytest test id."""
    class _Rec:
        def __enter__(self):
            (record / "blobs").mkdir(parents=True, exist_ok=True)
            os.environ["MFS_SIM_RECORD"] = str(record)
            os.environ["PYTEST_CURRENT_TEST"] = case

        def __exit__(self, *exc):
            os.environ.pop("MFS_SIM_RECORD", None)
            os.environ.pop("PYTEST_CURRENT_TEST", None)
    return _Rec()


def held(name: str, got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> str:
    """The simulator's largest error on one output against float64, within the suite's tolerance
    (tests/reference.py), or raises."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    tol = LSE_TOLERANCE if name == "lse" else TOLERANCE[dtype]
    finite = ~torch.isneginf(want)
    assert torch.equal(torch.isneginf(got), ~finite), f"{name}: -inf rows differ from the reference"
    error = (got[finite] - want[finite]).abs()
    assert not got.isnan().any() and bool((error <= tol["atol"] + tol["rtol"] * want[finite].abs()).all()), \
        f"{name}: the simulator misses the float64 reference by {error.max().item():.3g}"
    return f"{name}:{error.max().item() if error.numel() else 0.0:.2g}"


def train_case(fa, dtype, d, g, record):
    """Varlen forward + backward: prefill, clear_rows, row_dot, dkdv, dq, sinks."""
    heads, heads_kv = 4, 2
    cu_q = torch.tensor([0, 13, 33], dtype=torch.int32)
    cu_k = torch.tensor([0, 30, 71], dtype=torch.int32)
    q = torch.randn(36, heads, d, generator=g).to(dtype)  # 3 rows past cu_seqlens_q[-1]
    k = torch.randn(71, heads_kv, d, generator=g).to(dtype)
    v = torch.randn(71, heads_kv, d, generator=g).to(dtype)
    slopes = torch.rand(heads, generator=g) * 0.3
    sinks = torch.randn(heads, generator=g)
    sem = Semantics(scale=d ** -0.5, causal=True, softcap=15.0, alibi_slopes=slopes, sinks=sinks)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, sinks)]
    with record:
        out, lse, _ = fa.flash_attn_varlen_func(
            leaves[0], leaves[1], leaves[2], cu_q, cu_k, 20, 41, softmax_scale=sem.scale, causal=True,
            softcap=sem.softcap, alibi_slopes=slopes, return_attn_probs=True, s_aux=leaves[3])
        dout = torch.randn(out.shape, generator=g).to(dtype)
        grads = torch.autograd.grad(out, leaves, dout)
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v, sinks)]
    ref_sem = Semantics(scale=sem.scale, causal=True, softcap=sem.softcap, alibi_slopes=slopes, sinks=ref_in[3])
    ref_out, ref_lse = attention_varlen(ref_in[0], ref_in[1], ref_in[2], cu_q, cu_k, ref_sem)
    ref_grads = torch.autograd.grad(ref_out, ref_in, dout.double())
    rows = int(cu_q[-1])
    errors = [held("out", out, torch.cat([ref_out[:rows].detach(), ref_out.new_zeros(36 - rows, heads, d)]), dtype),
              held("lse", lse[:, :rows], ref_lse[:, :rows], dtype)]
    for name, got, want in zip(("dq", "dk", "dv", "ds_aux"), grads, ref_grads):
        errors.append(held(name, got, want, dtype))  # ds_aux too: it sums the dtype's P and dP
    return errors


def probs_case(fa, dtype, d, g, record):
    """flash-attn's S_dmask (return_attn_probs with dropout): attention_probabilities; its |values|
    held to the float64 reference's P (the prefill and clear_rows of the forward run too)."""
    heads, heads_kv, p = 4, 2, 0.25
    cu_q = torch.tensor([0, 13, 33], dtype=torch.int32)
    cu_k = torch.tensor([0, 30, 71], dtype=torch.int32)
    q = torch.randn(33, heads, d, generator=g).to(dtype)
    k = torch.randn(71, heads_kv, d, generator=g).to(dtype)
    v = torch.randn(71, heads_kv, d, generator=g).to(dtype)
    slopes = torch.rand(heads, generator=g) * 0.3
    sinks = torch.randn(heads, generator=g)
    sem = Semantics(scale=d ** -0.5, causal=True, softcap=15.0, alibi_slopes=slopes, sinks=sinks)
    torch.manual_seed(zlib.crc32(str(d).encode()))
    with record:
        _, _, probs = fa.flash_attn_varlen_func(
            q, k, v, cu_q, cu_k, 20, 41, dropout_p=p, softmax_scale=sem.scale, causal=True,
            softcap=sem.softcap, alibi_slopes=slopes, s_aux=sinks, return_attn_probs=True)
    want = torch.zeros(probs.shape, dtype=torch.float64)
    for b in range(2):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        eye = torch.eye(k1 - k0, dtype=torch.float64).view(k1 - k0, 1, k1 - k0)
        out, _ = attention_one_sequence(q[q0:q1], k[k0:k1], eye.expand(-1, heads_kv, -1), sem, b)
        want[b, :, :q1 - q0, :k1 - k0] = out.permute(1, 0, 2)
    return [held("S_dmask", probs.abs(), want, dtype)]


def decode_case(fa, dtype, d, g, record, batch=2, heads=4, heads_kv=2, sq=2, lengths=(150, 97),
                page=16):
    """Decode through a paged cache: decode (split-K), decode_reduce."""
    pages_per = max((n + page - 1) // page for n in lengths)
    num_pages = batch * pages_per
    k_cache = torch.randn(num_pages, page, heads_kv, d, generator=g).to(dtype)
    v_cache = torch.randn(num_pages, page, heads_kv, d, generator=g).to(dtype)
    table = torch.randperm(num_pages, generator=g).to(torch.int32).view(batch, pages_per)
    q = torch.randn(batch, sq, heads, d, generator=g).to(dtype)
    seqlens = torch.tensor(lengths, dtype=torch.int32)
    slopes = torch.rand(heads, generator=g) * 0.3
    sinks = torch.randn(heads, generator=g)
    sem = Semantics(scale=d ** -0.5, causal=True, softcap=15.0, alibi_slopes=slopes, sinks=sinks)
    with record:
        out, lse = fa.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=seqlens, block_table=table,
                                              softmax_scale=sem.scale, causal=True, softcap=sem.softcap,
                                              alibi_slopes=slopes, return_softmax_lse=True, s_aux=sinks)
    outs, lses = [], []
    for b in range(batch):
        n = lengths[b]
        kb = k_cache[table[b].long()].reshape(-1, heads_kv, d)[:n]
        vb = v_cache[table[b].long()].reshape(-1, heads_kv, d)[:n]
        o, l_ = attention_one_sequence(q[b], kb, vb, sem, b)
        outs.append(o)
        lses.append(l_)
    ref_out, ref_lse = torch.stack(outs), torch.stack(lses)
    return [held("out", out, ref_out, dtype), held("lse", lse, ref_lse, dtype)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("record")
    ap.add_argument("--tiles", default=",".join(map(str, TILES)))
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--bench", metavar="BENCH_DIR",
                    help="also record the timed decode shape there (batch 1, 8 KV heads, GQA 4, f16, d128, 4096 keys)")
    ap.add_argument("--bench-head-dim", type=int, default=128,
                    help="the timed shape's head dim; keys scale as 4096 * 128 / head dim (the same K/V bytes)")
    a = ap.parse_args(argv)
    os.environ.setdefault("MFS_SIM_BOUNDS", "0")
    fa = load_kernel("sim")
    record = Path(a.record)
    for dt in a.dtypes.split(","):
        for d in map(int, a.tiles.split(",")):
            for kind, fn in (("train", train_case), ("decode", decode_case), ("probs", probs_case)):
                name = f"{kind}_{dt}_d{d}"
                g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                errors = fn(fa, DTYPES[dt], d, g, recording(record, name))
                print(name, " ".join(errors), flush=True)
    if a.bench:
        d = a.bench_head_dim
        keys = 4096 * 128 // d
        errors = decode_case(fa, torch.float16, d, torch.Generator().manual_seed(1), recording(Path(a.bench), "bench"),
                             batch=1, heads=32, heads_kv=8, sq=1, lengths=(keys,), page=keys)
        print("bench", " ".join(errors), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
