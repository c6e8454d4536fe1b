#!/usr/bin/env python3
"""The decode kernel's simulator counters over GQA 1/4/8, head dims 64/128/256/512, float16 and
bfloat16 (4 sequences of one query and 512 keys, 2 KV heads): SIMD collectives (shuffles and
reductions), 8x8 MMAs, dead work, device bytes over the design minimum (K/V once per GQA group),
K/V bytes per load, the share of 16-bit input bytes read by >= 16-byte loads, barriers per
threadgroup and threadgroup-memory bank-conflict ways (mean / worst, MFS_SIM_BANKS=1).

    python benchmarks/decode_counters.py [--json OUT]    # needs build-sim/ (make build-sim)

benchmarks/metal_traffic.py runs each call (the simulator's launch reports); this only picks
the decode shapes and prints the decode kernel's counters.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import metal_traffic as mt  # noqa: E402

GQAS = (1, 4, 8)
HEAD_DIMS = (64, 128, 256, 512)
DTYPES = ("float16", "bfloat16")
HEADS_KV = 2


def configs() -> list[mt.Config]:
    return [mt.Config(f"decode_{dt}_d{d}_gqa{g}", [1] * 4, [512] * 4, g * HEADS_KV, HEADS_KV, d,
                      dtype=dt)
            for dt in DTYPES for d in HEAD_DIMS for g in GQAS]


def decode_row(fa, c: mt.Config) -> dict:
    m = mt.measure(fa, c)
    rs = [r for r in m["reports"] if re.match(r"mfs_decode_(f32|f16|bf16)_d", r["kernel"])]
    dead = mt.counters.dead_work(rs)
    banks = mt.counters.bank_conflicts(rs) or dict(mean=0.0, worst=0)
    tgs = sum(r["threadgroups"] for r in rs)
    return dict(config=c.name, kernel=rs[0]["kernel"], threadgroups=sum(r["threadgroups"] for r in rs),
                collectives=sum(r["simd_collectives"] for r in rs),
                mma=sum(r["simdgroup_mma"] for r in rs), dead_collectives=dead["collectives"],
                dead_mma=dead["mma"], bytes_ratio=m["ratio"], kv_bytes_per_load=m["kv_load_width"],
                wide_share=mt.counters.wide_load_share(rs, mt.FORWARD_INPUTS),
                barriers_per_tg=sum(r["threadgroup_barriers"] for r in rs) / tgs,
                bank_mean=banks["mean"], bank_worst=banks["worst"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("-k", default="", help="only configs whose name contains this")
    a = ap.parse_args()
    mt.os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    mt.os.environ.pop("MFS_SIM_BOUNDS", None)  # the counters need bounds checking
    mt.os.environ["MFS_SIM_BANKS"] = "1"  # bank-conflict ways
    fa = mt.load_sim_build()
    rows = []
    print(f"{'config':28s} {'kernel':18s} {'TGs':>4s} {'collectives':>11s} {'MMAs':>7s}"
          f" {'dead coll':>9s} {'dead MMA':>8s} {'bytes/min':>9s} {'KV B/load':>9s} {'>=16B':>6s}"
          f" {'bar/TG':>6s} {'banks':>10s}")
    for c in configs():
        if a.k not in c.name:
            continue
        r = decode_row(fa, c)
        rows.append(r)
        print(f"{r['config']:28s} {r['kernel']:18s} {r['threadgroups']:4d} {r['collectives']:11,d}"
              f" {r['mma']:7,d} {r['dead_collectives']:9,d} {r['dead_mma']:8,d} {r['bytes_ratio']:9.3f}"
              f" {r['kv_bytes_per_load']:9.1f} {r['wide_share'] or 0:6.2f} {r['barriers_per_tg']:6.1f}"
              f" {r['bank_mean']:5.2f} / {r['bank_worst']:2d}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
