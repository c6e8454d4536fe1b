#!/usr/bin/env python3
"""Records, through the simulated Metal build (build-sim/), the launches of API calls that use
every kernel at every head-dim tile and dtype, for gpu_replay.py to run on an NVIDIA GPU.

    dump_cases.py OUT_DIR [--tiles 32,64,...] [--dtypes f32,f16,bf16] [--bench]

Per case OUT_DIR/<case>/: launches.jsonl (+ .bin: every buffer's contents before each launch,
MFS_SIM_RECORD in metal-flash-sdpa/sim/sim_dispatch.cpp) and expect.pt: for each output (out,
lse, dq, dk, dv, ds_aux) the recorded buffer address it lives at, its view, the float64
reference and the simulator's own error against it. The calls go through the public API with
every feature the launch can carry: varlen q and k with rows outside every sequence (clear_rows),
GQA, causal, softcap, ALiBi, sinks, lse, and their backward; decode through a paged KV cache with
cache_seqlens (seqused_k) and split-K (decode_reduce).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from conftest import load_kernel  # noqa: E402
from reference import Semantics, attention_one_sequence, attention_varlen  # noqa: E402

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TILES = [32, 64, 72, 80, 96, 128, 192, 256, 512]


def recording(path: Path):
    class _Rec:
        def __enter__(self):
            for p in (path, Path(str(path) + ".bin")):
                p.unlink(missing_ok=True)
            os.environ["MFS_SIM_RECORD"] = str(path)

        def __exit__(self, *exc):
            os.environ.pop("MFS_SIM_RECORD", None)
            if exc[0] is None:
                compact(path)
    return _Rec()


# Buffers the call writes before it reads them: the replay fills them with NaN (at = -1). Not dq:
# the op zero-fills it and rows outside every sequence keep those zeros.
WRITTEN_FIRST = {"out", "lse", "dk", "dv", "ds_aux", "scratch0", "scratch1"}


def compact(path: Path) -> None:
    """Keeps in path.bin only each input buffer's contents before its first launch (what a
    replay starts from; the recorder writes every buffer of every launch)."""
    launches = [json.loads(ln) for ln in path.read_text().splitlines()]
    blob = Path(str(path) + ".bin").read_bytes()
    out, first = bytearray(), {}
    for launch in launches:
        for b in launch["buffers"]:
            if b["address"] not in first:
                first[b["address"]] = -1 if b["name"] in WRITTEN_FIRST else len(out)
                if b["name"] not in WRITTEN_FIRST:
                    out += blob[b["at"]:b["at"] + b["bytes"]]
            b["at"] = first[b["address"]]
    Path(str(path) + ".bin").write_bytes(bytes(out))
    path.write_text("".join(json.dumps(launch) + "\n" for launch in launches))


def outputs_entry(name, t: torch.Tensor, expected: torch.Tensor, sim_error: float) -> dict:
    # The float64 reference, stored rounded to fp32 (far below every tolerance; half the bytes).
    return {"name": name, "address": t.data_ptr(), "shape": list(t.shape), "stride": list(t.stride()),
            "dtype": str(t.dtype).replace("torch.", ""), "expected": expected.detach().float().cpu(),
            "sim_error": sim_error}


def err(a, b) -> float:
    return (a.detach().double().cpu() - b.detach().double().cpu()).abs().max().item() if a.numel() else 0.0


def train_case(fa, dtype, d, g, out_dir: Path):
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
    path = out_dir / "launches.jsonl"
    with recording(path):
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
    expect = [outputs_entry("out", out, torch.cat([ref_out[:rows].detach(), ref_out.new_zeros(36 - rows, heads, d)]),
                            err(out[:rows], ref_out[:rows])),
              outputs_entry("lse", lse, ref_lse.detach(), err(lse[:, :rows], ref_lse[:, :rows]))]
    for name, got, want in zip(("dq", "dk", "dv", "ds_aux"), grads, ref_grads):
        expect.append(outputs_entry(name, got, want, err(got, want)))
    return expect, {"rows": rows}


def decode_case(fa, dtype, d, g, out_dir: Path, batch=2, heads=4, heads_kv=2, sq=2, lengths=(150, 97),
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
    with recording(out_dir / "launches.jsonl"):
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
    return [outputs_entry("out", out, ref_out, err(out, ref_out)),
            outputs_entry("lse", lse, ref_lse, err(lse, ref_lse))], {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--tiles", default=",".join(map(str, TILES)))
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--bench", action="store_true",
                    help="also the timed decode shape (batch 1, 8 KV heads, GQA 4, 4096 keys, f16, d128)")
    a = ap.parse_args(argv)
    os.environ.setdefault("MFS_SIM_BOUNDS", "0")
    fa = load_kernel("sim")
    out_root = Path(a.out)
    cases = []
    for dt in a.dtypes.split(","):
        for d in map(int, a.tiles.split(",")):
            for kind, fn in (("train", train_case), ("decode", decode_case)):
                name = f"{kind}_{dt}_d{d}"
                case_dir = out_root / name
                case_dir.mkdir(parents=True, exist_ok=True)
                g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                expect, extra = fn(fa, DTYPES[dt], d, g, case_dir)
                torch.save({"outputs": expect, "dtype": dt, **extra}, case_dir / "expect.pt")
                cases.append(name)
                print(name, " ".join(f"{e['name']}:{e['sim_error']:.2g}" for e in expect), flush=True)
    if a.bench:
        name = "bench_decode_f16_d128"
        case_dir = out_root / name
        case_dir.mkdir(parents=True, exist_ok=True)
        expect, extra = decode_case(fa, torch.float16, 128, torch.Generator().manual_seed(1), case_dir,
                                    batch=1, heads=32, heads_kv=8, sq=1, lengths=(4096,), page=4096)
        torch.save({"outputs": expect, "dtype": "f16", "bench": True}, case_dir / "expect.pt")
        cases.append(name)
    (out_root / "cases.json").write_text(json.dumps(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
