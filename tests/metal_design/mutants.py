#!/usr/bin/env python3
"""Planted bugs: proves that the simulator plus a focused check catch a missing
threadgroup_barrier or a flipped mask comparison in the Metal kernels (forward and backward).

    python tests/metal_design/mutants.py [--only NAME ...] [--keep]

For each mutant: copy metal-flash-sdpa/metal/ to a temp dir, apply the mutation, keep only the
head-dim-64 instantiations (to build fast), build a simulated-Metal variant there (object cache
shared with build-sim/), and run tests/metal_design/focused_check.py against it in a fresh
process. The mutants of the head-dim-512 backward (streamed rows in registers, two barriers per
tile) keep its instantiations too and run the focused check's --backward-512 cases. The
unmutated sources (same reduced instantiations) must pass; every mutant must fail.
Prints one line per mutant; exits 1 if a mutant survives or the baseline fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
METAL = REPO / "metal-flash-sdpa" / "metal"
CHECK = Path(__file__).with_name("focused_check.py")


def remove_nth(pattern: str, n: int) -> Callable[[str], str]:
    """Deletes the n-th line (0-based) that contains `pattern`."""

    def apply(text: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if pattern in line]
        if n >= len(hits):
            raise ValueError(f"no occurrence {n} of {pattern!r}")
        del lines[hits[n]]
        return "".join(lines)

    return apply


def replace_once(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        if text.count(old) != 1:
            raise ValueError(f"{old!r} occurs {text.count(old)} times")
        return text.replace(old, new)

    return apply


@dataclass
class Mutant:
    name: str
    file: str
    apply: Callable[[str], str]
    backward_512: bool = False  # built with the 512 backward, checked by its cases only


MUTANTS = [
    # threadgroup_barrier sites, in source order: before staging a tile, after the paged rows'
    # page lookup, after staging
    Mutant("prefill_barrier_first_pages", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 0)),
    Mutant("prefill_barrier_after_k", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 1)),
    Mutant("prefill_barrier_after_v", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 2)),
    Mutant("decode_barrier_after_q", "attention_decode.metal",
           remove_nth("threadgroup_barrier(", 0)),
    Mutant("decode_barrier_between_pairs", "attention_decode.metal",
           remove_nth("threadgroup_barrier(", 1)),
    Mutant("decode_barrier_after_combine_write", "attention_decode.metal",
           remove_nth("threadgroup_barrier(", 2)),
    Mutant("prefill_interior_tile_too_wide", "attention_prefill.metal",
           replace_once("k0 + BK <= sg_all.end", "k0 + BK <= sg_all.end + 8")),
    Mutant("decode_cohort_reads_its_own_lane", "attention_decode.metal",
           replace_once("(ushort)(slot * C * L + (int)lane % L)", "(ushort)lane")),
    Mutant("decode_cohorts_share_one_slope", "attention_decode.metal",
           replace_once("lane, C > 1 ? L : 32);", "lane);")),
    Mutant("decode_page_looked_up_once", "attention_decode.metal",
           replace_once("key / p.page_size != page_index", "page_index < 0")),
    Mutant("decode_unmasked_key_too_wide", "attention_decode.metal",
           replace_once("key < all.end", "key <= all.end")),
    Mutant("mask_end_off_by_one", "attention_kernel_common.h",
           replace_once("key >= visible.end", "key > visible.end")),
    Mutant("mask_begin_off_by_one", "attention_kernel_common.h",
           replace_once("key < visible.begin", "key <= visible.begin")),
    Mutant("prefill_no_rescale", "attention_prefill.metal",
           replace_once("of[c].thread_elements()[0] *= factor;", "")),
    Mutant("page_not_clamped", "attention_kernel_common.h",
           replace_once("page_index], 0,", "page_index], -(1 << 30),")),
    Mutant("cu_seqlens_q_end_not_clamped", "../common/sequence_bounds.h",
           replace_once("clamp_to(o.cu_q_end, s.q_begin, p.q_rows)", "o.cu_q_end")),
]


def reduce_instantiations(text: str, backward_512: bool = False) -> str:
    keep = r"(?!64\))(?!512\))" if backward_512 else r"(?!64\))"
    text = re.sub(rf"^MFS_INSTANTIATE_BWD_TILED_DTYPES\({keep}\d+\)\n", "", text, flags=re.M)
    return re.sub(r"^MFS_INSTANTIATE_(PREFILL|DECODE)_DTYPES\((?!64\))\d+\)\n", "", text,
                  flags=re.M)


# The backward (attention_backward.metal): its eight barriers in source order (dk/dv, then dq:
# after staging, after the partials, after finishing P/dS, before the next tile), a mask bound,
# the softcap derivative, the GQA group's heads, the sink gradient's sign.
MUTANTS += [
    *(Mutant(f"backward_barrier_{i}", "attention_backward.metal",
             remove_nth("threadgroup_barrier(", i)) for i in range(8)),
    Mutant("backward_mask_end_off_by_one", "attention_backward.metal",
           replace_once("key >= r.begin && key < r.end", "key >= r.begin && key <= r.end")),
    Mutant("backward_no_softcap_derivative", "attention_kernel_common.h",
           replace_once("s.dlogit_dqk *= softcap_derivative(s.logit, r.softcap);", "")),
    Mutant("backward_gqa_wrong_heads", "attention_backward.metal",
           replace_once("int h = hk * group; h < (hk + 1) * group;", "int h = hk; h < hk + group;")),
    Mutant("backward_sink_gradient_sign", "attention_backward.metal",
           replace_once("acc += sink_gradient(", "acc -= sink_gradient(")),
]

# The head-dim-512 backward: its two barriers per tile in each pass (barriers 1, 2 of dk/dv and
# 5, 6 of dq in source order; 0, 3, 4, 7 guard the staged tiles only), the partials summed over
# 8 SIMD-groups instead of 16, and the streamed rows read from another SIMD-group's chunks.
# (Not here: the finished P / dS put back in slot 0 of the partials, which the next tile's
# partials would overwrite while other SIMD-groups still accumulate: tried, it survives the
# three schedules. A fiber runs until it blocks and each MMA blocks until its SIMD-group's last
# lane arrives, so SIMD-groups advance nearly together, and the hazard needs one SIMD-group a
# whole phase ahead of another. The separate area is kept for the real GPU's sake.)
MUTANTS += [
    *(Mutant(f"backward512_barrier_{i}", "attention_backward.metal",
             remove_nth("threadgroup_barrier(", i), backward_512=True) for i in (1, 2, 5, 6)),
    Mutant("backward512_partials_of_8_simdgroups", "attention_backward.metal",
           replace_once("for (int g = 0; g < NSG; ++g) {", "for (int g = 0; g < min(NSG, 8); ++g) {"),
           backward_512=True),
    Mutant("backward512_streamed_rows_of_another_share", "attention_backward.metal",
           replace_once("bwd_load_rows<T, SC, DC>(qs, q_base, p.q_row_stride, q0, rows.end, c_lo,",
                        "bwd_load_rows<T, SC, DC>(qs, q_base, p.q_row_stride, q0, rows.end, 0,"),
           backward_512=True),
]


def build_variant(workdir: Path, mutant: Mutant | None, backward_512: bool = False) -> Path:
    """Builds the (mutated) sources into workdir; returns the variant root."""
    metal = workdir / "metal-flash-sdpa" / "metal"
    if metal.parent.exists():
        shutil.rmtree(metal.parent)
    metal.parent.mkdir(parents=True)
    shutil.copytree(METAL, metal)
    # common/ is copied, not linked: a mutant may change the rules the kernels include from it
    shutil.copytree(REPO / "metal-flash-sdpa" / "common", metal.parent / "common")
    for path in metal.glob("*.metal"):
        path.write_text(reduce_instantiations(path.read_text(), backward_512))
    if mutant:
        target = metal / mutant.file
        target.write_text(mutant.apply(target.read_text()))
    sys.path.insert(0, str(REPO / "scripts"))
    import build_local

    out_root = workdir / "build"
    if out_root.exists():
        shutil.rmtree(out_root)
    variant = build_local.sim_variant(metal_dir=metal, out_root=out_root)
    build_local.build(variant, jobs=2, obj_dir=REPO / "build-sim" / ".obj", fixed_id="mutant")
    return out_root


def check(root: Path, backward_512: bool = False) -> tuple[bool, str]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    extra = ["--backward-512"] if backward_512 else []
    result = subprocess.run([sys.executable, str(CHECK), str(root), *extra], capture_output=True,
                            text=True, env=env, timeout=1800)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode == 0, (lines[0] if lines else "")[:200]


def run(names: list[str] | None = None) -> dict[str, tuple[bool, str]]:
    """{name: (check passed, first line of its output)}, 'baseline' first (the unmutated
    sources in each reduced build the selected mutants need; passed only if all pass)."""
    selected = [m for m in MUTANTS if not names or m.name in names]
    results = {}
    with tempfile.TemporaryDirectory(prefix="mfs_mutants_") as tmp:
        work = Path(tmp)
        baselines = [check(build_variant(work, None, b), b)
                     for b in sorted({m.backward_512 for m in selected} | {False})]
        failed = [line for ok, line in baselines if not ok]
        results["baseline"] = (not failed, failed[0] if failed else baselines[0][1])
        for m in selected:
            results[m.name] = check(build_variant(work, m, m.backward_512), m.backward_512)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    results = run(args.only)
    ok = results["baseline"][0]
    print(f"{'baseline':32s} {'passes' if ok else 'FAILS'}  {results['baseline'][1]}")
    for name, (passed, first) in results.items():
        if name == "baseline":
            continue
        ok &= not passed
        print(f"{name:32s} {'SURVIVED' if passed else 'caught'}  {first}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
