#!/usr/bin/env python3
"""Design-level speed of the Metal kernels, counted by the MSL simulator (no Apple GPU here).

    python benchmarks/metal_traffic.py          # builds build-sim/ if needed, prints a table

For each configuration it runs the simulated Metal build with the simulator's bounds checking
(which counts every device load and store of the compiled kernels) and compares with the design's
minimum:

- device bytes: each Q element read once, each K/V element read once per query tile (prefill) or
  once per GQA group (decode), O (and lse) written once. Everything else the kernels touch
  (cu_seqlens, block tables, split-K partials) counts against that minimum;
- MMA work: the 8x8x8 multiply-accumulates of the (row, visible key) pairs, (D + Dv) / 512 each;
  a causal or windowed call may exceed it by at most one diagonal BQ x BQ tile per query tile.

It also prints the design counters the simulator keeps per launch:

- K/V load width: bytes per load instruction of the k and v buffers (vector loads: >= 8 for
  float16/bfloat16, >= 16 for float32);
- mask evaluations (per (row, key) element, counted by the kernels' masked score function):
  only diagonal, window-edge and sequence-end tiles may be masked; `edge` is the bound (each
  8-row group's keys that some but not all of its rows see, plus two key tiles of slack);
- barriers per K/V tile (prefill: one per tile where the K/V tiles are double-buffered, else
  two, four where the K and V tiles share a buffer (float32 at tile 512), plus one per
  threadgroup with paged K/V where single-buffered; decode's key loop has none, only the final
  combine);
- SIMD-groups per GPU core that the plan launches for the issue's decode shape on a 38-core and
  a 10-core GPU (tests/metal_design/plan.py, the plan as plain C++).

The issue-20 counters, per kernel (prefill, decode, and the backward's dk/dv and dq passes;
tests/msl_sim/counters.py sums them, tests/test_metal_counters.py holds them):

- threadgroup-memory bank conflicts under 32 banks x 4 bytes (the simulator's bank model,
  MFS_SIM_BANKS=1, tests/msl_sim/runtime/bankcheck.h): mean and worst ways per SIMD-group
  instruction, and the source lines of the worst (inlined helper <- kernel line);
- barriers per key tile: completed threadgroup barriers over the tiles the kernel counts
  (prefill: K/V tiles; backward: streamed tiles; decode's key loop has none);
- dead work: MMAs and SIMD-group collectives done for lanes the kernel declares discarded with
  MSL_SIM_DEAD_WORK (e.g. decode pair slots past the live count);
- wide loads: the share of the bytes of 16-bit inputs (q, k, v; backward also out, dout) read by
  loads of 16 bytes or more.

The backward (dq, dk, dv) is counted the same way against its own design minimum (see
backward_minimum). tests/test_metal_design.py and tests/test_metal_backward_design.py assert
the same numbers (bytes within 10 %, work within a diagonal tile row, the counters' bounds). Timing is not modelled: this is about what the design reads and
computes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.append(str(REPO / "tests" / "msl_sim"))  # after tests/: its build.py is not `build`

import counters  # noqa: E402  (tests/msl_sim/counters.py)

BQ = 32  # MFS_PREFILL_BQ (metal_kernel_config.h); checked against the plan by the design tests
ELEM = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class Config:
    name: str
    lengths_q: list[int]
    lengths_k: list[int]
    heads: int
    heads_kv: int
    head_dim: int
    dtype: str = "float16"
    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    head_dim_v: int | None = None
    lse: bool = True
    page_size: int | None = None  # paged K/V (block table)

    @property
    def dv(self) -> int:
        return self.head_dim_v or self.head_dim


CONFIGS = [
    Config("prefill", [256], [256], 4, 2, 64),
    Config("prefill_causal", [256], [256], 4, 2, 64, causal=True),
    Config("prefill_varlen_causal", [200, 70, 130], [200, 90, 130], 4, 1, 128, causal=True),
    Config("prefill_window", [256], [256], 2, 2, 64, window=(64, 0)),
    Config("prefill_f32_d96", [160], [160], 2, 1, 96, dtype="float32"),
    Config("decode_gqa4", [1] * 32, [256] * 32, 8, 2, 128),
    Config("decode_q4_gqa4", [4] * 16, [300] * 16, 8, 2, 64, causal=True),
    Config("decode_split_k", [1, 1], [2048, 1500], 8, 2, 128),
    Config("prefill_paged", [200, 64], [200, 100], 4, 2, 64, causal=True, page_size=16),
    Config("decode_paged", [1] * 16, [500] * 16, 8, 2, 128, page_size=16),
    # head-dim tile 512: float32's K and V tiles share one buffer; decode with q in threadgroup
    # memory (4 pairs per threadgroup in 16-bit dtypes: a GQA-4 group reads K/V once)
    Config("prefill_f32_d512", [64], [64], 2, 1, 512, dtype="float32"),
    Config("prefill_d512_causal", [80], [80], 2, 1, 512, causal=True),
    Config("decode_d512_gqa4", [1] * 32, [256] * 32, 8, 2, 512),
]


def visible(row: int, sq: int, sk: int, left: int, right: int) -> tuple[int, int]:
    """The API's rule (docs/API.md), restated independently of the kernels' C++/MSL."""
    diag = row + sk - sq
    lo = 0 if left < 0 else max(0, diag - left)
    hi = sk if right < 0 else min(sk, diag + right + 1)
    return lo, hi


def design_minimum(c: Config, decode: bool) -> dict:
    eb = ELEM[c.dtype]
    left, right = c.window
    if c.causal:
        right = 0
    q = o = kv = lse = 0
    pairs = 0
    tiles = 0
    for sq, sk in zip(c.lengths_q, c.lengths_k):
        q += sq * c.heads * c.head_dim * eb
        o += sq * c.heads * c.dv * eb
        lse += sq * c.heads * 4 if c.lse else 0
        ranges = [visible(i, sq, sk, left, right) for i in range(sq)]
        pairs += sum(max(0, hi - lo) for lo, hi in ranges) * c.heads
        if decode:  # the union of the rows' keys, once per KV head (GQA group)
            lo = min((r[0] for r in ranges), default=0)
            hi = max((r[1] for r in ranges), default=0)
            kv += max(0, hi - lo) * c.heads_kv * (c.head_dim + c.dv) * eb
        else:  # the hull of each query tile's rows, once per query head
            for t0 in range(0, sq, BQ):
                rows = ranges[t0:t0 + BQ]
                lo, hi = rows[0][0], rows[-1][1]
                kv += max(0, hi - lo) * c.heads * (c.head_dim + c.dv) * eb
                tiles += c.heads
    ideal = pairs * (c.head_dim + c.dv) / 512
    if decode and decode_mma_pairs(c):
        # the MMA path: per threadgroup, 8 keys (the hull's, rounded up to 8) x 8 pair columns
        # (of which the threadgroup's pairs are live) per S and P.V product
        rows = min(max(c.lengths_q), MFS_DECODE_MAX_Q)  # one row chunk: <= 8 pairs
        tgs = c.heads * rows // decode_mma_pairs(c)
        ideal = 0.0
        for sq, sk in zip(c.lengths_q, c.lengths_k):
            ranges = [visible(i, sq, sk, left, right) for i in range(sq)]
            hull = max(r[1] for r in ranges) - min(r[0] for r in ranges)
            ideal += math.ceil(hull / 8) * 8 * MFS_DECODE_MMA_PAIRS * tgs * (c.head_dim + c.dv) / 512
    return dict(q=q, kv=kv, o=o, lse=lse, total=q + kv + o + lse,
                ideal_mma=ideal,
                diagonal_allowance=tiles * BQ * BQ * (c.head_dim + c.dv) / 512,
                mask_bound=mask_bound(c, decode))


MFS_DECODE_MMA_PAIRS = 8  # metal_kernel_config.h: the decode MMA's pair columns


def decode_mma_pairs(c: Config) -> int:
    """Live pairs of a decode threadgroup on the MMA path (tiles 96 and 128, 16-bit, 4 to 8
    pairs: metal_kernel_config.h, mfs_decode_uses_mma; the plan's heads per threadgroup: the
    largest divisor of the GQA group that fits), else 0 (the shuffle path)."""
    d = max(c.head_dim, c.dv)
    rows = min(max(c.lengths_q), MFS_DECODE_MAX_Q)
    group = c.heads // c.heads_kv
    heads = max(h for h in range(1, group + 1) if group % h == 0 and h * rows <= 8)
    pairs = heads * rows
    mma = ELEM[c.dtype] == 2 and head_dim_tile(d) in (96, 128) and pairs >= 4
    return pairs if mma else 0


MAX_BK = 32  # the widest key tile (metal_kernel_config.h, mfs_prefill_bk)


def mask_bound(c: Config, decode: bool) -> int:
    """Mask evaluations a design that masks only edge tiles may make: for each group of 8 rows
    (a SIMD-group's rows; decode: a threadgroup's rows), the keys some but not all of its rows see,
    plus two key tiles of slack (a tile straddling each edge), times its rows, times the heads."""
    left, right = c.window
    if c.causal:
        right = 0
    total = 0
    group = MFS_DECODE_MAX_Q if decode else 8
    for sq, sk in zip(c.lengths_q, c.lengths_k):
        ranges = [visible(i, sq, sk, left, right) for i in range(sq)]
        for g0 in range(0, sq, group):
            rows = ranges[g0:g0 + group]
            some = max(r[1] for r in rows) - min(r[0] for r in rows)
            every = max(0, min(r[1] for r in rows) - max(r[0] for r in rows))
            edge = some - every
            if edge or len(rows) < group or (some % MAX_BK):
                edge += 2 * MAX_BK
            total += len(rows) * edge * c.heads
    return total


MFS_DECODE_MAX_Q = 8


def run_config(fa, c: Config) -> list[dict]:
    """Runs one call with a trace file; returns the simulator's launch reports."""
    import torch

    from batches import varlen_batch

    g = torch.Generator().manual_seed(0)
    batch = varlen_batch(c.lengths_q, c.lengths_k, c.heads, c.heads_kv, c.head_dim,
                         getattr(torch, c.dtype), g, head_dim_v=c.head_dim_v)
    k, v, table = batch.k, batch.v, None
    if c.page_size:
        from batches import paged_cache

        k, v, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, c.page_size, g)
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        trace = f.name
    os.environ["MFS_SIM_TRACE"] = trace
    try:
        fa.flash_attn_varlen_func(batch.q, k, v, batch.cu_seqlens_q,
                                  batch.cu_seqlens_k, batch.max_seqlen_q, batch.max_seqlen_k,
                                  causal=c.causal, window_size=c.window,
                                  return_attn_probs=c.lse, block_table=table)
    finally:
        del os.environ["MFS_SIM_TRACE"]
    reports = [json.loads(line) for line in Path(trace).read_text().splitlines()]
    os.unlink(trace)
    return reports


def measure(fa, c: Config) -> dict:
    reports = run_config(fa, c)
    kernels = [r["kernel"] for r in reports]
    decode = any(k.startswith("mfs_decode_") for k in kernels)
    by_name: dict[str, int] = {}
    mma = 0
    kv_bytes = kv_loads = 0
    events: dict[str, int] = {}
    barriers = {}
    for r in reports:
        mma += r["simdgroup_mma"]
        family = "prefill" if r["kernel"].startswith("mfs_prefill_") else (
            "decode" if re.match(r"mfs_decode_(f32|f16|bf16)_d", r["kernel"]) else None)
        for name, n in r.get("events", {}).items():
            events[name] = events.get(name, 0) + n
        if family:
            # threadgroups that did any work (a prefill threadgroup past its sequence's rows
            # returns before its first barrier)
            barriers[family] = (r["threadgroup_barriers"], r["threadgroups"])
        for b in r["buffers"]:
            if b["set_bytes"] or b["index"] < 0:
                continue  # constant data (setBytes) and threadgroup memory are not device traffic
            by_name[b["name"]] = by_name.get(b["name"], 0) + b["bytes_read"] + b["bytes_written"]
            if family and b["name"] in ("k", "v"):
                kv_bytes += b["bytes_read"]
                kv_loads += sum(b.get("loads_by_width", []))
    total = sum(by_name.values())
    minimum = design_minimum(c, decode)
    tiles = events.get("kv_tiles", 0)
    prefill_barriers = barriers.get("prefill", (0, 0))[0]
    return dict(config=c.name, kernels=kernels, bytes=by_name, total=total, minimum=minimum,
                ratio=total / minimum["total"], mma=mma, reports=reports,
                design_counters=kernel_counters(reports, c.dtype, FORWARD_INPUTS),
                kv_load_width=kv_bytes / kv_loads if kv_loads else 0.0,
                mask_evaluations=events.get("mask_evaluations", 0),
                barriers_per_kv_tile=prefill_barriers / tiles if tiles else None,
                prefill_barriers=prefill_barriers, kv_tiles=tiles,
                decode_barriers_per_threadgroup=(barriers["decode"][0] / barriers["decode"][1]
                                                 if "decode" in barriers else None))


# The decode shape: batch 1, 8 KV heads, GQA 4 (32 query heads), 4096 keys, one query.
DECODE_SHAPE = dict(batch=1, heads_q=32, heads_kv=8, head_dim=128, head_dim_v=128,
                    max_seqlen_q=1, max_seqlen_k=4096, flags=(1 << 0) | (1 << 1),
                    q_rows=1, k_rows=4096)


def decode_simdgroups_per_core(cores: int, dtype: str = "f16", **fields) -> float:
    """SIMD-groups the plan launches per GPU core for the decode kernel of the decode shape."""
    from metal_design.plan import plan

    p = plan(dtype, "f32", **{**DECODE_SHAPE, **fields}, gpu_cores=cores)
    decode = [l for l in p["launches"] if re.match(r"mfs_decode_(f32|f16|bf16)_d", l["kernel"])]
    return decode[0]["simdgroups"] / cores


# ---------------------------------------------------------------------------- issue 20's counters

# The kernels the counters are shown for, with the MSL_SIM_COUNT event that counts their key
# (or streamed) tiles, once per threadgroup and tile; None: no tiled loop (decode reads K/V
# straight from device memory).
TILED_KERNELS = [("prefill", r"mfs_prefill_", "kv_tiles"),
                 ("decode", r"mfs_decode_(f32|f16|bf16)_d", None),
                 ("bwd_dkdv", r"mfs_bwd_dkdv_", "bwd_stream_tiles"),
                 ("bwd_dq", r"mfs_bwd_dq_", "bwd_stream_tiles")]
FORWARD_INPUTS = ("q", "k", "v")
BACKWARD_INPUTS = ("q", "k", "v", "out", "dout")


def kernel_counters(reports: list[dict], dtype: str, inputs: tuple[str, ...]) -> list[dict]:
    """Per kernel family of TILED_KERNELS present in the reports: bank conflicts, barriers per
    tile (and per threadgroup), dead work, and the >= 16-byte share of 16-bit inputs' bytes."""
    rows = []
    for family, pattern, event in TILED_KERNELS:
        rs = [r for r in reports if re.match(pattern, r["kernel"])]
        if not rs:
            continue
        threadgroups = sum(r["threadgroups"] for r in rs)
        rows.append(dict(
            family=family, kernel=rs[0]["kernel"], banks=counters.bank_conflicts(rs),
            barriers_per_tile=counters.barriers_per_tile(rs, event) if event else None,
            barriers_per_threadgroup=(sum(r["threadgroup_barriers"] for r in rs) / threadgroups
                                      if threadgroups else None),
            dead=counters.dead_work(rs),
            wide_share=counters.wide_load_share(rs, inputs) if ELEM[dtype] == 2 else None))
    return rows


def print_counters(measured: list[dict]) -> None:
    header = (f"{'config':24s} {'kernel':22s} {'TG instr':>9s} {'mean':>5s} {'worst':>5s}"
              f" {'barriers/tile':>13s} {'/tg':>5s} {'dead MMA':>8s} {'dead collectives':>18s}"
              f" {'16-bit >=16B':>12s}  worst ways at")
    print(header)
    print("-" * len(header))
    for m in measured:
        for k in m["design_counters"]:
            b = k["banks"] or dict(instructions=0, mean=0.0, worst=0, worst_site="(not counted)")
            bpt = "-" if k["barriers_per_tile"] is None else f"{k['barriers_per_tile']:.2f}"
            bpg = "-" if k["barriers_per_threadgroup"] is None else f"{k['barriers_per_threadgroup']:.1f}"
            wide = "-" if k["wide_share"] is None else f"{100 * k['wide_share']:.0f} %"
            d = k["dead"]
            dead = f"{d['collectives']:,.0f} ({100 * d['collective_share']:.0f} %)"
            print(f"{m['config']:24s} {k['kernel']:22s} {b['instructions']:9,d} {b['mean']:5.2f}"
                  f" {b['worst']:5d} {bpt:>13s} {bpg:>5s} {k['dead']['mma']:8.1f}"
                  f" {dead:>18s} {wide:>12s}  {b['worst_site']}")
    print("\nTG instr: threadgroup-memory load/store instructions of all SIMD-groups (a lane's n-th"
          " execution of an access since its SIMD-group's\nlast rendezvous joins the other lanes'"
          " n-th); mean / worst: their bank-conflict ways under 32 banks x 4 bytes (distinct words"
          " in\none bank; 128 bytes per pass, so 8- and 16-byte accesses are split into passes of"
          " 16 and 8 lanes); barriers/tile: completed\nthreadgroup barriers over the key (prefill)"
          " or streamed (backward) tiles the kernel counts, /tg: per threadgroup; dead MMA /"
          " collectives:\nMMAs and SIMD-group collectives (share of all) done for lanes declared"
          " discarded (MSL_SIM_DEAD_WORK);"
          " 16-bit >=16B: share of the bytes of\n16-bit inputs (q, k, v; backward also out, dout)"
          " read by loads of 16 bytes or more.")


def load_sim_build():
    build = REPO / "build-sim"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_local.py"), "--variant", "sim"],
                   check=True, stdout=subprocess.DEVNULL)
    os.environ["LOCAL_KERNELS"] = f"kernels-community/metal-flash-sdpa={build}"
    import kernels

    return kernels.get_kernel("kernels-community/metal-flash-sdpa", version=2)


# ---------------------------------------------------------------------------- the backward

# The backward's tiles (metal_backward_config.h): a threadgroup owns BWD_OWN keys (dk/dv) or
# query rows (dq) and streams the other side in tiles of bwd_stream(d) rows.
BWD_OWN = 16


def bwd_stream(tile: int) -> int:
    return 8 if tile >= 192 else 16


# dK/dV and dQ by full-width rows (mfs_bwd_*_rows, head-dim tiles up to 96 in 16-bit dtypes, 80
# in float32): a threadgroup owns 32 keys or query rows (8 per SIMD-group) and streams 32 rows,
# or 16 / 8 where two copies (and, above tile 64, the owned rows) would not fit 32 KiB.
ROWS_STREAM = {("float32", 64): 16, ("float32", 72): 8, ("float32", 80): 8, ("16", 80): 16,
               ("16", 96): 16, ("16", 128): 8}


def bwd_tiles(tile: int, dtype: str) -> tuple[int, int]:
    """(owned rows, streamed rows) of both tiled passes at a head-dim tile."""
    if tile <= (80 if dtype == "float32" else 96):
        key = (dtype if dtype == "float32" else "16", tile)
        return 32, ROWS_STREAM.get(key, 32)
    return BWD_OWN, bwd_stream(tile)


def head_dim_tile(d: int) -> int:
    return min(t for t in (32, 64, 72, 80, 96, 128, 192, 256, 512) if t >= d)


BACKWARD_CONFIGS = [
    Config("backward", [256], [256], 4, 2, 64),
    Config("backward_causal", [256], [256], 4, 2, 64, causal=True),
    Config("backward_varlen_causal", [200, 70, 130], [200, 90, 130], 4, 1, 128, causal=True),
    Config("backward_window", [256], [256], 2, 2, 64, window=(64, 0)),
    Config("backward_f32_d96", [160], [160], 2, 1, 96, dtype="float32"),
    # dK/dV by full-width rows: float32 at tile 64 (16 streamed rows), tile 32 with GQA 4.
    Config("backward_f32_d64_causal", [160], [160], 2, 1, 64, dtype="float32", causal=True),
    Config("backward_d32_gqa4", [128], [128], 8, 2, 32, causal=True),
    # Tile 96 (16-bit: full-width rows, owned rows staged); tile 128, the most used head dim.
    Config("backward_d96", [256], [256], 4, 2, 96),
    Config("backward_d128", [256], [256], 4, 2, 128),
    Config("backward_f32_d128", [160], [160], 2, 1, 128, dtype="float32"),
    Config("backward_d256_gqa4", [96], [96], 8, 2, 256, causal=True),
    # Tile 512 (Gemma 4's global layers): streamed rows read into registers, not staged.
    Config("backward_d512_causal", [96], [96], 4, 2, 512, causal=True),
    Config("backward_f32_d512_v256", [64, 40], [64, 56], 2, 1, 512, dtype="float32",
           head_dim_v=256),
]


def visible_rows(k0: int, k1: int, sq: int, sk: int, left: int, right: int) -> tuple[int, int]:
    """The rows that see some key of [k0, k1) (the API's rule, restated independently)."""
    rows = [r for r in range(sq) if any(lo <= k < hi for k in range(k0, k1)
                                        for lo, hi in [visible(r, sq, sk, left, right)])]
    return (rows[0], rows[-1] + 1) if rows else (0, 0)


def backward_minimum(c: Config) -> dict:
    """The design minimum of the FlashAttention-2 backward, per pass: D pass: O and dO read
    once, D written once; dk/dv pass: per owned key tile, its K and V read once, and for every
    query head of its GQA group the Q, dO, lse and D of the rows that see its keys read once; dK
    and dV written once; dq pass: per owned query tile, its Q, dO, lse and D read once, the K and V
    its rows see read once, dQ written once. MMAs: `ideal` = visible (row, key) pairs x
    (4 D + 3 Dv) / 512 (S and dP in both passes, dV, dK, dQ once each); `tiled` = the same on
    the 8x8 (row, key) blocks that hold a visible pair, which is what the kernels multiply."""
    eb = ELEM[c.dtype]
    d, dv = c.head_dim, c.dv
    left, right = c.window
    if c.causal:
        right = 0
    own, st = bwd_tiles(head_dim_tile(max(d, dv)), c.dtype)
    by_pass = {"row_dot": 0, "dkdv": 0, "dq": 0}
    pairs = blocks = 0
    for sq, sk in zip(c.lengths_q, c.lengths_k):
        by_pass["row_dot"] += sq * c.heads * (2 * dv * eb + 4)
        ranges = [visible(i, sq, sk, left, right) for i in range(sq)]
        pairs += sum(max(0, hi - lo) for lo, hi in ranges) * c.heads

        def live(r0: int, r1: int, k0: int, k1: int) -> bool:
            """Some row of [r0, r1) sees some key of [k0, k1) (the rows' hull)."""
            r1, k1 = min(r1, sq), min(k1, sk)
            if r0 >= r1 or k0 >= k1:
                return False
            return max(ranges[r0][0], k0) < min(ranges[r1 - 1][1], k1)

        for k0 in range(0, sk, own):
            k1 = min(k0 + own, sk)
            r0, r1 = visible_rows(k0, k1, sq, sk, left, right)
            by_pass["dkdv"] += 2 * (k1 - k0) * c.heads_kv * (d + dv) * eb  # K, V in; dK, dV out
            by_pass["dkdv"] += (r1 - r0) * c.heads * ((d + dv) * eb + 8)
            for q0 in range(r0, r1, st):
                for o in range(0, own, 8):
                    for s in range(0, st, 8):
                        if live(q0 + s, min(q0 + s + 8, r1), k0 + o, min(k0 + o + 8, k1)):
                            blocks += 2 * (d + dv) / 8 * c.heads
        for r0 in range(0, sq, own):
            r1 = min(r0 + own, sq)
            lo, hi = ranges[r0][0], ranges[r1 - 1][1]
            by_pass["dq"] += (r1 - r0) * c.heads * ((2 * d + dv) * eb + 8)  # Q, dO, lse, D; dQ
            by_pass["dq"] += max(0, hi - lo) * c.heads * (d + dv) * eb
            for k0 in range(lo, hi, st):
                for o in range(0, own, 8):
                    for s in range(0, st, 8):
                        if live(r0 + o, min(r0 + o + 8, r1), k0 + s, min(k0 + s + 8, hi)):
                            blocks += (2 * d + dv) / 8 * c.heads
    return dict(total=sum(by_pass.values()), by_pass=by_pass,
                ideal_mma=pairs * (4 * d + 3 * dv) / 512, tiled_mma=blocks)


def measure_backward(fa, c: Config) -> dict:
    """Traces the backward op (dq, dk, dv) alone, on the float64 reference's out and lse
    (tests/backward_op.py): only the backward's launches, at any tile the build has."""
    import torch

    from backward_op import backward_alone
    from batches import varlen_batch
    from reference import Semantics

    g = torch.Generator().manual_seed(0)
    batch = varlen_batch(c.lengths_q, c.lengths_k, c.heads, c.heads_kv, c.head_dim,
                         getattr(torch, c.dtype), g, head_dim_v=c.head_dim_v)
    dout = torch.randn(batch.q.shape[0], c.heads, c.dv, generator=g).to(batch.q.dtype)
    sem = Semantics(scale=c.head_dim ** -0.5, causal=c.causal, window=c.window)
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
        trace = f.name
    os.environ["MFS_SIM_TRACE"] = trace
    try:
        backward_alone(fa, batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                       dout, sem, batch.max_seqlen_q, batch.max_seqlen_k)
    finally:
        del os.environ["MFS_SIM_TRACE"]
    reports = [json.loads(line) for line in Path(trace).read_text().splitlines()]
    os.unlink(trace)
    by_name: dict[str, int] = {}
    mma = 0
    for r in reports:
        mma += r["simdgroup_mma"]
        for b in r["buffers"]:
            if b["set_bytes"] or b["index"] < 0:
                continue
            by_name[b["name"]] = by_name.get(b["name"], 0) + b["bytes_read"] + b["bytes_written"]
    minimum = backward_minimum(c)
    total = sum(by_name.values())
    tiled = {r["kernel"]: (r["threadgroups"], r["threadgroup_memory_bytes"]) for r in reports}
    return dict(config=c.name, kernels=[r["kernel"] for r in reports], bytes=by_name,
                total=total, minimum=minimum, ratio=total / minimum["total"], mma=mma,
                design_counters=kernel_counters(reports, c.dtype, BACKWARD_INPUTS),
                mma_ratio=mma / minimum["ideal_mma"], reports=reports, tiles=tiled)


def print_backward() -> None:
    fa = load_sim_build()
    header = (f"{'config':24s} {'kernels (dtype, head-dim tile)':38s} {'device bytes':>12s}"
              f" {'minimum':>11s} {'ratio':>6s} {'other bytes':>11s} {'MMAs':>9s} {'ideal':>9s}"
              f" {'ratio':>6s} {'tiled':>9s}")
    print(header)
    print("-" * len(header))
    measured = []
    for c in BACKWARD_CONFIGS:
        m = measure_backward(fa, c)
        measured.append(m)
        mn = m["minimum"]
        other = sum(v for k, v in m["bytes"].items()
                    if k not in ("q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv", "scratch0"))
        tiled = [k for k in m["kernels"] if re.search(r"_d\d+$", k)]
        tile = "_".join(tiled[0].rsplit("_", 2)[1:]) if tiled else ""
        names = "row_dot+dkdv+dq" + f" ({tile})"
        print(f"{c.name:24s} {names:38s} {m['total']:12,d} {mn['total']:11,d} {m['ratio']:6.3f}"
              f" {other:11,d} {m['mma']:9,d} {math.ceil(mn['ideal_mma']):9,d}"
              f" {m['mma_ratio']:6.3f} {math.ceil(mn['tiled_mma']):9,d}")
    print("\ndevice bytes: loads + stores of every device buffer of the backward's launches (q, k,"
          " v, out, lse, dout, dq, dk, dv,\nthe D scratch, cu_seqlens); minimum: D pass O, dO once,"
          " D once; dk/dv pass K, V once, and per query head the Q, dO,\nlse, D of the rows that"
          " see each key tile once, dK, dV once; dq pass Q, dO, lse, D once, the K, V each query"
          "\ntile sees once, dQ once. MMAs: ideal = visible (row, key) pairs x (4 D + 3 Dv) / 512;"
          " tiled: the same on the 8x8\n(row, key) blocks that hold a visible pair (what the kernels multiply).")
    print()
    print_counters(measured)


def main() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.pop("MFS_SIM_BOUNDS", None)  # counters need bounds checking
    os.environ["MFS_SIM_BANKS"] = "1"       # and bank conflicts are counted only when asked
    fa = load_sim_build()
    header = (f"{'config':22s} {'kernels (dtype, head-dim tile)':44s} {'device bytes':>12s}"
              f" {'minimum':>11s} {'ratio':>6s} {'other bytes':>11s} {'MMAs':>8s} {'ideal':>8s}"
              f" {'+diag':>7s}")
    print(header)
    print("-" * len(header))
    counters_measured = []
    for c in CONFIGS:
        m = measure(fa, c)
        counters_measured.append(m)
        other = sum(v for k, v in m["bytes"].items() if k not in ("q", "k", "v", "out", "lse"))
        mn = m["minimum"]
        tiled = [k for k in m["kernels"] if re.search(r"_d\d+$", k)]
        families = sorted({k.replace("mfs_", "").rsplit("_", 2 if k in tiled else 1)[0]
                           for k in m["kernels"]})
        tile = "_".join(tiled[0].rsplit("_", 2)[1:]) if tiled else ""
        names = "+".join(families) + f" ({tile})"
        decode = any(k.startswith("mfs_decode_") for k in m["kernels"])
        ideal = "-" if decode and not m["mma"] else f"{math.ceil(mn['ideal_mma']):,d}"
        diag = "-" if decode else f"{math.ceil(mn['diagonal_allowance']):,d}"
        print(f"{c.name:22s} {names:44s} {m['total']:12,d} {mn['total']:11,d} {m['ratio']:6.3f}"
              f" {other:11,d} {m['mma']:8,d} {ideal:>8s} {diag:>7s}")
    print("\ndevice bytes: loads + stores of every device buffer of every launch (q, k, v, out, lse,"
          " cu_seqlens, block tables, split-K partials);\nother bytes: all but q/k/v/out/lse;"
          " minimum: Q once, K/V once per query tile (prefill) or GQA group (decode), O/lse once;"
          "\nMMAs: 8x8x8 simdgroup MMAs counted (decode: the MMA path at tiles 96/128, 16-bit, 4-8 pairs);"
          " ideal: visible\n(row, key) pairs x (D + Dv) / 512 (decode: x 8 / the threadgroup's pairs, the MMA's"
          " pair columns); +diag: one BQ x BQ tile per query tile.")
    print()
    header = (f"{'config':22s} {'K/V B/load':>10s} {'mask evals':>11s} {'edge bound':>11s}"
              f" {'barriers/KV tile':>16s} {'decode barriers/tg':>18s}")
    print(header)
    print("-" * len(header))
    for m in counters_measured:
        bpt = m["barriers_per_kv_tile"]
        dec = m["decode_barriers_per_threadgroup"]
        print(f"{m['config']:22s} {m['kv_load_width']:10.2f} {m['mask_evaluations']:11,d}"
              f" {m['minimum']['mask_bound']:11,d} {'-' if bpt is None else f'{bpt:.2f}':>16s}"
              f" {'-' if dec is None else f'{dec:.2f}':>18s}")
    print("\nK/V B/load: bytes per load instruction of k and v (prefill/decode kernels);"
          " mask evals: (row, key) elements\nthe masked score function evaluated; edge bound:"
          " what masking only edge tiles allows.")
    print()
    for cores in (38, 10):
        per_core = decode_simdgroups_per_core(cores)
        print(f"decode shape (batch 1, 8 KV heads, GQA 4, 4096 keys, f16 d128): "
              f"{per_core:.1f} SIMD-groups per core on a {cores}-core GPU")
    print()
    print_counters(counters_measured)
    print()
    print_backward()


if __name__ == "__main__":
    main()
