#!/usr/bin/env python3
"""Registers of every Metal kernel instantiation, from a production register allocator: NVIDIA's
ptxas for sm_90 on the unmodified .metal sources (translate_cuda.py, msl_cuda.h). Part of
`make check-metal`; tests/test_metal_registers.py holds the results to the design budget.

    registers.py [--jobs N] [--json OUT]

For each .metal file and each function-constant corner (CORNERS) the file is translated and
compiled to PTX once (nvcc -O3), then assembled by ptxas several times:
- `free`: without launch bounds: the registers ptxas chooses ("used", not demand: with registers
  to spare it spends them on scheduling, e.g. more loads in flight);
- `cap`: the smallest per-kernel register cap (PTX .maxnreg) with no spill and no stack frame,
  found by bisection (every kernel of the module bisected at once): the kernel's demand;
- `bound`: capped at the limit the kernel's own max_total_threads_per_threadgroup implies
  (65536 registers / threads, at most 255): the spill bytes a thread pays at that size. (ptxas
  given the same bound as __launch_bounds__, PTX .maxntid, reads it as an occupancy hint: the CUDA
  guide's heuristic drops registers below the limit to fit one more block, and spills where the
  limit needs none, e.g. 96 registers for a 128-thread backward kernel; that figure is kept as
  `launch_bounds_*`, for information.)
Shared memory (ptxas' static smem) is checked against the plan's threadgroup bytes.

Counting traps, and what is done about each:
- "used" is not demand (above): the cap column is the demand.
- An MMA emulated with shuffles holds temporaries Apple's hardware MMA does not: msl_cuda.h's
  stand-in (without MSL_CUDA_MMA_EXACT) is one opaque instruction per MMA on the same operands.
- The widening of Q (16-bit fragments, `frag_widen`) is loop-invariant and the compiler hoists it
  out of the key loop, so Q is held in fp32. The budget admits it: Apple's compiler (LLVM too)
  may hoist the same way, and the cap column counts Q as the hoisted code holds it.
- 16-bit scalars take a whole 32-bit register on NVIDIA (Apple's GPUs have 16-bit registers):
  16-bit kernels are counted high, never low.
Results are cached under build-check/metal_cuda/ by the hash of everything that decides them.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
METAL_DIR = os.path.join(ROOT, "metal-flash-sdpa", "metal")
COMMON_DIR = os.path.join(ROOT, "metal-flash-sdpa", "common")
CACHE_DIR = os.path.join(ROOT, "build-check", "metal_cuda")
sys.path.insert(0, HERE)
from translate_cuda import translate_cuda  # noqa: E402

FILES = ["attention_prefill.metal", "attention_decode.metal", "attention_backward.metal",
         "attention_mask_summary.metal", "attention_probabilities.metal"]
ARCH = "sm_90"
# The register budget of metal_kernel_config.h (MFS_REGISTER_BUDGET).
BUDGET = 128

# Function-constant corners (MFS_FC_* indices). The plans set every feature independently from the
# call, so the combinations are all products; the heaviest is every feature on (each adds code and
# live state, none removes any), compiled with vector and with element K/V loads; `plain` is the
# common dense call. The kernels' register demand is the maximum over the corners.
# Index 10 is MFS_FC_VECTOR_KV (aligned vector loads), 11 MFS_FC_SEQUSED_Q, 12 MFS_FC_MASK_KIND
# (attn_mask's AttentionMaskKind: 2 is float32), 13 MFS_FC_MASK_GRAD (metal_mask_tiles.h), 14
# MFS_FC_DROPOUT (the prefill's and the backward's dropout draws: every feature on includes
# them), 15 MFS_FC_DECODE_PAIRS (decode's pairs per lane group: the kernel takes min(its register
# capacity, this), so 16 is every pair it can hold, the heaviest), 17 MFS_FC_DECODE_SPLIT (the
# decode writes split-K partials instead of out and lse: on in `all`, off in `mask`, so the two
# default corners hold both of the decode's endings), 16 MFS_FC_HEAD_DIM_FULL (the prefill's head
# dims fill its tile: off, the head-dim guards kept, in every corner but `plain`), 18
# MFS_FC_VECTOR_Q (the prefill's Q by 16-byte loads: on with aligned K/V, off in `all_unaligned`).
ON = {i: 1 for i in range(1, 10)}
NO_MASK = {12: 0, 13: 0}
CORNERS = {
    "all": {0: 2, **ON, 10: 1, 11: 1, **NO_MASK, 14: 1, 15: 16, 16: 0, 17: 1, 18: 1},
    # attn_mask with its gradient and every feature the plans let a masked call have
    # (metal_launch_plan.cpp, plan_mask_summary: fixed length, causal, lse; no ALiBi, softcap,
    # sinks, varlen, paged or seqused): the mask's reads and the summary's lookups add code and
    # live state to the prefill and the backward
    "mask": {0: 0, **{i: 0 for i in range(1, 8)}, 8: 1, 9: 1, 10: 1, 11: 0, 12: 2, 13: 1, 14: 1, 15: 16, 16: 0, 17: 0, 18: 1},
    "all_unaligned": {0: 2, **ON, 10: 0, 11: 1, **NO_MASK, 14: 1, 15: 16, 16: 0, 17: 1, 18: 0},
    "plain": {0: 0, **{i: 0 for i in range(1, 10)}, 10: 1, 11: 0, **NO_MASK, 14: 0, 15: 16, 16: 1, 17: 0, 18: 1},
}
# `make check-metal` and the test: the heaviest corner and attn_mask's (about 5 minutes of one
# core each, cached). The mask corner has been within the budget since session 9 (the prefill's
# chunk states packed in one word, the backward's per-entry terms in one helper).
DEFAULT_CORNERS = ("all", "mask")
SEARCH_LO = 16
# Bump when measure_module() changes what it measures (the cache key: source, header, method, tools).
METHOD = "ptxas free/limit/launch_bounds/bisected-cap v4"
REGISTER_FILE = 65536  # 32-bit registers per SM (sm_90)


def run(cmd: list[str], **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r.stdout + r.stderr


def tool_version() -> str:
    return run(["nvcc", "--version"]).strip().splitlines()[-1] + run(["ptxas", "--version"]).strip().splitlines()[-1]


def compile_ptx(cu_text: str, workdir: str, name: str, defines=()) -> str:
    cu = os.path.join(workdir, name + ".cu")
    with open(cu, "w") as f:
        f.write(cu_text)
    ptx = os.path.join(workdir, name + ".ptx")
    run(["nvcc", f"-arch={ARCH}", "-std=c++17", "-O3", "--ptx", "-I", HERE, *[f"-D{d}" for d in defines],
         "-diag-suppress=177,550,186", cu, "-o", ptx])
    with open(ptx) as f:
        return f.read()


_ENTRY = re.compile(r"^\.visible \.entry (\w+)\(", re.M)


def with_directives(ptx: str, keep_bounds: bool, caps: dict[str, int] | None) -> str:
    """The PTX with each entry's .maxntid kept or dropped, and a .maxnreg per entry in `caps`."""
    out = []
    current = None
    for line in ptx.splitlines(keepends=True):
        m = _ENTRY.match(line)
        if m:
            current = m.group(1)
        if line.startswith(".maxntid"):
            if keep_bounds:
                out.append(line)
            continue
        if line.startswith("{") and current is not None:
            if caps and current in caps:
                out.append(f".maxnreg {caps[current]}\n")
            current = None
        out.append(line)
    return "".join(out)


# One entry's report: its properties line, then its "Used" line (smem only when it has some).
_INFO = re.compile(
    r"Function properties for (\w+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\n"
    r"(?:[^\n]*\n)*?[^\n]*Used (\d+) registers([^\n]*)")


def assemble(ptx: str, workdir: str, tag: str) -> dict[str, dict]:
    """ptxas -v on `ptx`: per entry {regs, stack, spill_stores, spill_loads, smem}."""
    path = os.path.join(workdir, tag + ".ptx")
    with open(path, "w") as f:
        f.write(ptx)
    text = run(["ptxas", f"-arch={ARCH}", "-v", path, "-o", os.devnull])
    info = {}
    for m in _INFO.finditer(text):
        smem = re.search(r"(\d+) bytes smem", m.group(6))
        info[m.group(1)] = {"stack": int(m.group(2)), "spill_stores": int(m.group(3)),
                            "spill_loads": int(m.group(4)), "regs": int(m.group(5)),
                            "smem": int(smem.group(1)) if smem else 0}
    return info


def clean(i: dict) -> bool:
    return i["stack"] == 0 and i["spill_stores"] == 0 and i["spill_loads"] == 0


def bounds_of(ptx: str) -> dict[str, int]:
    out, current = {}, None
    for line in ptx.splitlines():
        m = _ENTRY.match(line)
        if m:
            current = m.group(1)
        elif line.startswith(".maxntid") and current:
            out[current] = int(line.split()[1].rstrip(","))
    return out


def measure_module(ptx: str, workdir: str) -> dict[str, dict]:
    free = assemble(with_directives(ptx, False, None), workdir, "free")
    threads = bounds_of(ptx)
    # The hard limit the threadgroup size implies (every thread resident: 65536 registers per SM).
    limit = {k: min(255, REGISTER_FILE // threads.get(k, 1024)) for k in free}
    bound = assemble(with_directives(ptx, False, limit), workdir, "bound")
    # ptxas' own reading of __launch_bounds__ (an occupancy heuristic below the limit, for info).
    launch_bounds = assemble(with_directives(ptx, True, None), workdir, "launch_bounds")
    # Bisection of the smallest clean cap, every entry at once: lo fails (or is the floor), hi is
    # clean. ptxas is not quite monotonic in the cap (its choices differ from cap to cap), so the
    # result is the smallest clean cap seen, the limit run's included.
    lo = {k: SEARCH_LO - 1 for k in free}
    hi = {k: v["regs"] if clean(v) else 255 for k, v in free.items()}
    for k in free:
        if clean(bound[k]) and limit[k] < hi[k]:
            hi[k] = limit[k]
    while any(hi[k] - lo[k] > 1 for k in free):
        mid = {k: (lo[k] + hi[k]) // 2 if hi[k] - lo[k] > 1 else hi[k] for k in free}
        probe = assemble(with_directives(ptx, False, mid), workdir, "cap")
        for k in free:
            if hi[k] - lo[k] > 1:
                if clean(probe[k]):
                    hi[k] = mid[k]
                else:
                    lo[k] = mid[k]
    result = {}
    for k in free:
        result[k] = {"threads": threads.get(k, 1024), "free_regs": free[k]["regs"], "min_cap": hi[k],
                     "limit": limit[k], "bound_regs": bound[k]["regs"],
                     "bound_spill": bound[k]["spill_stores"] + bound[k]["spill_loads"],
                     "bound_stack": bound[k]["stack"], "smem": bound[k]["smem"],
                     "launch_bounds_regs": launch_bounds[k]["regs"],
                     "launch_bounds_spill": launch_bounds[k]["spill_stores"] + launch_bounds[k]["spill_loads"]
                     + launch_bounds[k]["stack"]}
    return result


def measure(file: str, corner: str, tools: str) -> dict[str, dict]:
    src = os.path.join(METAL_DIR, file)
    cu_text, _ = translate_cuda(src, CORNERS[corner])
    # Keyed by content only: the translation's line markers name the checkout, which would make
    # every worktree (and every copy of the cache) measure again.
    content = cu_text.replace(ROOT, "<checkout>")
    key = hashlib.sha256((content + open(os.path.join(HERE, "msl_cuda.h")).read() + METHOD +
                          tools).encode()).hexdigest()[:20]
    cache = os.path.join(CACHE_DIR, f"{file}.{corner}.{key}.json")
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory(prefix="metal_cuda_") as tmp:
        ptx = compile_ptx(cu_text, tmp, file.replace(".metal", ""))
        result = measure_module(ptx, tmp)
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(cache + ".tmp", "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    os.replace(cache + ".tmp", cache)
    return result


def plan_threadgroup_bytes() -> dict[str, int]:
    """The launch plans' threadgroup bytes per kernel name (the config functions they call)."""
    prog = r"""
#include <cstdio>
#include "metal_kernel_config.h"
#include "metal_backward_config.h"
int main() {
  const char* dt[3] = {"f32", "f16", "bf16"};
  const int eb[3] = {4, 2, 2};
  for (int i = 0; i < MFS_NUM_HEAD_DIM_TILES; ++i)
    for (int t = 0; t < 3; ++t) {
      int d = mfs_head_dim_tile_at(i);
      std::printf("mfs_prefill_%s_d%d %d\n", dt[t], d, mfs_prefill_tg_bytes(d, eb[t]));
      std::printf("mfs_decode_%s_d%d %d\n", dt[t], d, mfs_decode_tg_bytes(d, eb[t]));
      const bool rows = mfs_bwd_rows_tile(d, eb[t]);
      const int bwd = rows ? mfs_bwd_rows_tg_bytes(d, eb[t]) : mfs_bwd_tg_bytes(d, eb[t]);
      std::printf("mfs_bwd_dkdv_%s%s_d%d %d\n", rows ? "rows_" : "", dt[t], d, bwd);
      std::printf("mfs_bwd_dq_%s%s_d%d %d\n", rows ? "rows_" : "", dt[t], d, bwd);
    }
}
"""
    with tempfile.TemporaryDirectory(prefix="metal_cuda_plan_") as tmp:
        cpp, exe = os.path.join(tmp, "plan.cpp"), os.path.join(tmp, "plan")
        with open(cpp, "w") as f:
            f.write(prog)
        run(["g++", "-std=c++17", "-I", COMMON_DIR, cpp, "-o", exe])
        out = run([exe])
    return {name: int(b) for name, b in (ln.split() for ln in out.splitlines())}


def collect(jobs: int = 2, corners=DEFAULT_CORNERS) -> dict[str, dict]:
    """{kernel: {corner: measurement, ...}} over every file and the given corners."""
    tools = tool_version()
    tasks = [(f, c) for f in FILES for c in corners]
    table: dict[str, dict] = {}
    with cf.ThreadPoolExecutor(max_workers=jobs) as ex:
        for (f, c), res in zip(tasks, ex.map(lambda t: measure(*t, tools), tasks)):
            for k, v in res.items():
                table.setdefault(k, {})[c] = v
    return table


def summarize(table: dict[str, dict], plan_bytes: dict[str, int]) -> list[dict]:
    rows = []
    for k, by_corner in table.items():
        worst = max(by_corner.items(), key=lambda kv: (kv[1]["min_cap"], kv[1]["bound_spill"]))
        rows.append({"kernel": k, "corner": worst[0], **worst[1],
                     "bound_spill_max": max(v["bound_spill"] + v["bound_stack"] for v in by_corner.values()),
                     "plan_smem": plan_bytes.get(k, 0),
                     "smem_ok": all(v["smem"] == plan_bytes.get(k, 0) for v in by_corner.values())})
    order = ["mfs_prefill_", "mfs_decode_f", "mfs_decode_b", "mfs_decode_reduce", "mfs_clear_rows",
             "mfs_bwd_row_dot", "mfs_bwd_dkdv", "mfs_bwd_dq", "mfs_bwd_sinks"]

    def key(r):
        m = re.match(r"(.*?)(?:_d(\d+))?$", r["kernel"])
        return (next((i for i, p in enumerate(order) if r["kernel"].startswith(p)), 9),
                int(m.group(2) or 0), m.group(1))
    return sorted(rows, key=key)


def print_table(rows: list[dict]) -> None:
    print(f"{'kernel':24} {'threads':>7} {'free':>5} {'cap':>4} {'bound':>5} {'spill':>5} "
          f"{'smem':>6} {'plan':>6}  worst corner")
    for r in rows:
        print(f"{r['kernel']:24} {r['threads']:7} {r['free_regs']:5} {r['min_cap']:4} {r['bound_regs']:5} "
              f"{r['bound_spill_max']:5} {r['smem']:6} {r['plan_smem']:6}  {r['corner']}"
              f"{'' if r['smem_ok'] else '  SMEM != PLAN'}")
    print("free: registers ptxas uses without a bound; cap: the smallest cap with no spill and no stack "
          "(demand); bound, spill: registers and spill+stack bytes under the kernel's own "
          f"max_total_threads_per_threadgroup; budget {BUDGET}; nvcc/ptxas {ARCH}, MMA stand-in.")


def readme_rows(rows: list[dict]) -> list[str]:
    """metal/README.md's register table: one line per kernel family and head-dim tile, the dtypes
    f32 / f16 / bf16 side by side."""
    groups: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        m = re.match(r"mfs_(\w+?)(?:_(f32|f16|bf16))?(?:_d(\d+))?$", r["kernel"])
        family, dtype, tile = m.group(1), m.group(2) or "", m.group(3) or "–"
        groups.setdefault((family, tile), {})[dtype] = r
    lines = []
    for (family, tile), by in groups.items():
        dts = [d for d in ("f32", "f16", "bf16", "") if d in by]
        first = by[dts[0]]

        def col(key):
            return " / ".join(str(by[d][key]) for d in dts)
        spills = [by[d]["bound_spill_max"] for d in dts]
        lines.append(f"| {family} | {tile} | {first['threads']} | {col('min_cap')} | {col('free_regs')} | "
                     f"{'none' if not any(spills) else ' / '.join(map(str, spills)) + ' bytes'} |")
    return lines


# Known misses, open (metal/README.md "Registers"): reported, not failed; an entry must stay over
# the budget (tests/test_metal_registers.py fails once it is within it). None: decode at tile 512
# (139 / 156 / 158 before) spreads a key over two SIMD-groups since issue 17.
KNOWN_OVER_BUDGET: set[str] = set()


def failures(rows: list[dict], known=KNOWN_OVER_BUDGET) -> list[str]:
    out = []
    for r in rows:
        if r["bound_spill_max"]:
            out.append(f"{r['kernel']}: spills {r['bound_spill_max']} bytes under its own bound of {r['threads']} threads")
        if r["min_cap"] > BUDGET and r["kernel"] not in known:
            out.append(f"{r['kernel']}: needs {r['min_cap']} registers, over the budget of {BUDGET}")
        if not r["smem_ok"]:
            out.append(f"{r['kernel']}: shared memory {r['smem']} != the plan's {r['plan_smem']} threadgroup bytes")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--readme", action="store_true", help="also print metal/README.md's table rows")
    ap.add_argument("--corners", default=",".join(DEFAULT_CORNERS),
                    help=f"function-constant corners, of {', '.join(CORNERS)}")
    a = ap.parse_args(argv)
    rows = summarize(collect(a.jobs, a.corners.split(",")), plan_threadgroup_bytes())
    print_table(rows)
    if a.readme:
        print("\n".join(readme_rows(rows)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = failures(rows)
    for k in sorted(KNOWN_OVER_BUDGET):
        print(f"registers.py: known, open: {k} needs {next(r['min_cap'] for r in rows if r['kernel'] == k)} "
              f"registers, over the budget of {BUDGET}")
    for b in bad:
        print("registers.py: " + b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
