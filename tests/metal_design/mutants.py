#!/usr/bin/env python3
"""Planted bugs: proves that the simulator plus a focused check catch a missing
threadgroup_barrier or a flipped mask comparison in the Metal kernels (forward and backward).

    python tests/metal_design/mutants.py [--only NAME ...] [--keep]

For each mutant: copy metal-flash-sdpa/metal/ to a temp dir, apply the mutation, keep only the
head-dim-64 instantiations (to build fast; a `wide` mutant, of a code path only tile 512 or the
decode's MMA (tile 128) takes, keeps those tiles too and is checked with focused_check.py --wide), build a
simulated-Metal variant there (object cache shared with build-sim/), and run
tests/metal_design/focused_check.py against it in a fresh process, in float32 and bfloat16. The
unmutated sources (same reduced instantiations, with and without tile 512) must pass; every mutant
must fail with the check's own diagnostic (a mismatch against the reference, a NaN, a fault the
simulator reports), not a crash. Prints one line per mutant; exits 1 if a mutant survives or
crashes the check, or the baseline fails.
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


def replace_each(old: str, new: str, count: int) -> Callable[[str], str]:
    """Replaces every occurrence of `old`, which must occur exactly `count` times."""

    def apply(text: str) -> str:
        if text.count(old) != count:
            raise ValueError(f"{old!r} occurs {text.count(old)} times, not {count}")
        return text.replace(old, new)

    return apply


@dataclass
class Mutant:
    name: str
    file: str
    apply: Callable[[str], str]
    wide: bool = False  # a path of tile 512 or the decode MMA only: built and checked with tiles 128 and 512 too
    # A threadgroup-memory hazard: the simulator's race detector (tests/msl_sim/runtime/
    # racecheck.h) must be what reports it (a DataRace error, whatever the schedule), not only
    # a wrong value. Every removed barrier is one.
    race: bool = False


MUTANTS = [
    # threadgroup_barrier sites, in source order: after the first tile's page lookup (paged and
    # single-buffered only), after staging the first tile (double-buffered), at the start of every later tile
    # (double-buffered: the one barrier per tile), before staging K (shared K/V buffer only),
    # after staging K, before staging V (shared only), after staging V. The head-dim-64 build has
    # both kinds: float32 single, bfloat16 double-buffered.
    Mutant("prefill_barrier_first_pages", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 0), race=True),
    Mutant("prefill_barrier_first_tile", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 1), race=True),
    Mutant("prefill_barrier_each_double_buffered_tile", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 2), race=True),
    Mutant("prefill_barrier_shared_before_k", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 3), wide=True, race=True),
    Mutant("prefill_barrier_after_k", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 4), race=True),
    Mutant("prefill_barrier_shared_before_v", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 5), wide=True, race=True),
    Mutant("prefill_barrier_after_v", "attention_prefill.metal",
           remove_nth("threadgroup_barrier(", 6), race=True),
    # double-buffered: the next tile's K, its V, or the pages of the tile after it written into
    # the pair (pages buffer) that is being read
    Mutant("prefill_next_k_into_current_pair", "attention_prefill.metal",
           replace_once("(next_tiles, k_rows", "(k_tile, k_rows"), race=True),
    Mutant("prefill_next_v_into_current_pair", "attention_prefill.metal",
           replace_once("(next_tiles + BK * LD,", "(v_tile,"), race=True),
    Mutant("prefill_pages_into_the_next_tiles_buffer", "attention_prefill.metal",
           replace_once("look_up_pages(page_rows + db_pair * 2 * BK,",
                        "look_up_pages(page_rows + (db_pair ^ 1) * 2 * BK,"), race=True),
    # Double-buffered paged K/V: the first tile's pages looked up by its staging lanes, one lane
    # per row and SIMD-group (slot_page): the other lanes' shuffle of it dropped (they read page 0)
    Mutant("prefill_first_pages_not_shared", "attention_prefill.metal",
           replace_once("return simd_shuffle(page, src);", "return page;")),
    # Q by 16-byte loads (frag_rows_by_words, half/bfloat): the 4 x 4 word transpose's received
    # word put in the chunk of the round instead of the sender's chunk
    Mutant("prefill_q_words_into_the_rounds_chunk", "attention_tiles.h",
           replace_once("if (g + j < N && (w ^ x) == j)", "if (g + j < N && x == j)")),
    # causal: the heaviest query tile first, remapped one tile off (tile 0 never computed)
    Mutant("prefill_query_tile_off_by_one", "../common/metal_kernel_config.h",
           replace_once("return heaviest_first ? tiles - 1 - x : x;",
                        "return heaviest_first ? tiles - x : x;")),
    Mutant("prefill_partial_s_two_shares", "attention_prefill.metal",
           replace_once("share < DS;", "share < 2;"), wide=True),
    # (decode_row_tail_loaded, a lane's share loaded whole where it straddles a row's end, is
    # gone: since tile 512 takes 8 elements a lane and head dims are multiples of 8, no share
    # straddles, so the mutation is equivalent on every input the API admits.)
    # decode's threadgroup_barrier sites, in source order: after q, between the slices' partial
    # scores (tile 512 only), between pairs of the combine, after the combine's writes
    Mutant("decode_barrier_after_q", "attention_decode.metal",
           remove_nth("threadgroup_barrier(", 0), race=True),
    Mutant("decode_barrier_between_slices", "attention_decode.metal",
           remove_nth("threadgroup_barrier(", 1), wide=True, race=True),
    Mutant("decode_barrier_between_pairs", "attention_decode.metal",
           remove_nth("threadgroup_barrier(", 2), race=True),
    Mutant("decode_barrier_after_combine_write", "attention_decode.metal",
           remove_nth("threadgroup_barrier(", 3), race=True),
    # tile 512's key over two SIMD-groups: one buffer for every step's partial scores (a step's
    # writes meet the last step's reads), a slice's own partial taken for the other's
    Mutant("decode_partial_dots_one_buffer", "attention_decode.metal",
           replace_once("parity ^= 1;", ""), wide=True, race=True),
    Mutant("decode_slice_score_own_half_only", "attention_decode.metal",
           replace_once("dots[(key_run * H + h) * P + i]", "dots[(int)sg * P + i]"), wide=True),
    Mutant("prefill_interior_tile_too_wide", "attention_prefill.metal",
           replace_once("k0 + BK <= sg_all.end", "k0 + BK <= sg_all.end + 8")),
    Mutant("decode_cohort_reads_its_own_lane", "attention_decode.metal",
           replace_once("(ushort)(slot * C * L + (int)lane % L)", "(ushort)lane")),
    Mutant("decode_cohorts_share_one_slope", "attention_decode.metal",
           replace_once("lane, C > 1 ? L : 32);", "lane);")),
    Mutant("decode_page_looked_up_once", "attention_decode.metal",
           replace_once("key / p.page_size != page_index", "page_index < 0")),
    Mutant("decode_unmasked_key_too_wide", "attention_decode.metal",
           replace_each("key < all.end", "key <= all.end", 2)),  # the shuffle and MMA paths
    # decode's live pair count (function constant 15): one pair short of the constant, or a
    # cohort's pairs strided by the registers' capacity instead of the live count (pairs
    # skipped). (The plan's count itself is host code, which these rebuilds do not mutate:
    # plan_split_test.cpp holds it.)
    Mutant("decode_live_pairs_one_short", "attention_decode.metal",
           replace_once("const int NP = min(P, mfs_decode_pairs);",
                        "const int NP = min(P, mfs_decode_pairs - 1);")),
    Mutant("decode_cohort_pairs_strided_by_capacity", "attention_decode.metal",
           replace_once("const int first_pair = cohort * NP;", "const int first_pair = cohort * P;")),
    # decode's MMA path (tiles 96/128, 16-bit, 4-8 pairs; checked by the wide cases in bfloat16):
    # O^T not rescaled, a key's page taken from another key's lane, a column's max over half
    # its keys, Q^T staged with one pair in both of a lane's columns.
    Mutant("decode_mma_no_rescale", "attention_decode.metal",
           replace_once("ot[j].thread_elements()[0] *= factor[0];", ""), wide=True),
    Mutant("decode_mma_page_of_another_key", "attention_decode.metal",
           replace_once("kpage = simd_shuffle(page, (ushort)fr);",
                        "kpage = simd_shuffle(page, (ushort)fc);"), wide=True),
    Mutant("decode_mma_column_max_of_half_its_keys", "attention_decode.metal",
           replace_once("kmax = max(kmax, simd_shuffle_xor(kmax, (ushort)16));", ""), wide=True),
    Mutant("decode_mma_q_of_one_pair_per_lane", "attention_decode.metal",
           replace_once("const int pair = qc + e;", "const int pair = qc;"), wide=True),
    # issue 20 change 4: the MMA path's K and V load groups (a group's offset in the row lost),
    # and a 16-byte load's two halves swapped (decode's 16-bit shares of 8 elements, tile 64 too)
    Mutant("decode_mma_k_group_not_advanced", "attention_decode.metal",
           replace_once("load_row_vec<T, 8, 8>(kr + kg * 8,", "load_row_vec<T, 8, 8>(kr,"), wide=True),
    Mutant("decode_mma_v_group_not_advanced", "attention_decode.metal",
           replace_once("load_row_vec<T, VG, VG>(vr[e] + vg * VG,", "load_row_vec<T, VG, VG>(vr[e],"),
           wide=True),
    Mutant("decode_wide_load_halves_swapped", "attention_tiles.h",
           replace_once("r.part[2 * i] = words_as4(lo, T(0.0f));", "r.part[2 * i] = words_as4(hi, T(0.0f));")),
    # decode's split-K scratch is a function-constant-guarded parameter (17, mfs_decode_split):
    # a store to it from a launch that does not split (out and lse still right) must be reported
    # by the simulator, which points the absent parameter at an empty region between red zones.
    Mutant("decode_scratch_written_without_split", "attention_decode.metal",
           replace_once("if (!mfs_decode_split) {",
                        "if (!mfs_decode_split) {\n        if (lane == 0) partial_ml[0] = mt;")),
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
    # attn_mask (attention_mask_tiles.h, attention_mask_summary.metal): a mixed tile's values
    # not read (taken as open), a mixed tile skipped as if closed, the summary from each tile's
    # first value only, the bias left out of the backward's probabilities.
    Mutant("mask_mixed_tile_not_read", "attention_mask_tiles.h",
           replace_once("} else if (mixed && row_valid", "} else if (false && row_valid")),
    Mutant("mask_mixed_tile_skipped", "attention_prefill.metal",
           replace_once("min(k0 + bk, end)) != kMaskTileClosed", "min(k0 + bk, end)) == kMaskTileOpen")),
    Mutant("mask_summary_first_value_only", "attention_mask_summary.metal",
           replace_once("state = first ? v : merge_mask_tile_states(state, v);",
                        "state = first ? v : state;")),
    Mutant("mask_bias_not_in_backward", "attention_backward.metal",
           replace_once("mfs_mask_kind != kNoMask ? mask_biased(x.logit, t.bias) : x.logit",
                        "x.logit")),
]


def reduce_instantiations(text: str, wide: bool = False) -> str:
    """Keeps tile 64 (when wide also 512's paths and the decode's MMA path at 128), and the
    backward's tile 96: at 64 dK/dV and dQ run by full-width rows with the owned rows in
    registers (mfs_bwd_*_rows); at 96 float32 runs the head-dim-share kernels (one streamed
    copy) and 16-bit dtypes the full-width rows with the owned rows staged in threadgroup
    memory. Wide: also the backward's tile 256 (the head-dim shares with two streamed copies,
    16-bit) and 512."""
    keep = "64|128|512" if wide else "64"
    bwd_keep = "96|256|512" if wide else "96"
    text = re.sub(rf"^MFS_INSTANTIATE_BWD_(TILED_DTYPES|TILED_F32|ROWS_16BIT)\((?!(?:{bwd_keep})\))\d+\)\n",
                  "", text, flags=re.M)
    return re.sub(rf"^MFS_INSTANTIATE_(PREFILL|DECODE|BWD_ROWS)_DTYPES\((?!(?:{keep})\))\d+\)\n",
                  "", text, flags=re.M)


# The backward (attention_backward.metal): its ten barriers in source order, five per pass (dk/dv,
# then dq): the first tile staged (double-buffered, bfloat16), after staging (one buffer,
# float32), after the partials, after finishing P/dS (and, double-buffered, staging the next
# tile), before the next tile (one buffer). The focused check runs float32 and bfloat16 at tile
# 64, so each is on a path it takes. Double-buffered, the next tile staged into the tile's own
# buffer, in each pass (the accumulation reads the next tile's rows: a wrong value, not a race,
# since the barriers order the writes), and its lse / D into the slot being read (a race); a
# mask bound, the softcap derivative, the GQA group's heads, the sink gradient's sign.
MUTANTS += [
    # (0 and 5, the double-buffered first tile, only 16-bit dtypes at tiles 192 and 256 take
    # since session 12: checked wide, at tile 256)
    *(Mutant(f"backward_barrier_{i}", "attention_backward.metal",
             remove_nth("threadgroup_barrier(", i), wide=i in (0, 5), race=True) for i in range(10)),
    Mutant("backward_dkdv_next_tile_into_current_buffer", "attention_backward.metal",
           replace_once("threadgroup T* next_pair = tiles + (1 - buf) * 2 * ST * LD;",
                        "threadgroup T* next_pair = tiles + buf * 2 * ST * LD;"),
           wide=True),
    Mutant("backward_dkdv_next_row_terms_into_current_slot", "attention_backward.metal",
           replace_once("threadgroup float* next_terms = row_terms + (1 - buf) * 2 * OWN;",
                        "threadgroup float* next_terms = row_terms + buf * 2 * OWN;"),
           wide=True, race=True),
    Mutant("backward_dq_next_tile_into_current_buffer", "attention_backward.metal",
           replace_once("threadgroup T* next = tiles + (1 - buf) * 2 * ST * LD;",
                        "threadgroup T* next = tiles + buf * 2 * ST * LD;"),
           wide=True),
    # dK/dV and dQ by full-width rows (tiles 32, 64): the one barrier per streamed tile of each
    # (source order 10, 11), and the next tile's rows (or, dK/dV, their lse/D) staged into the
    # copy being multiplied.
    *(Mutant(f"backward_rows_barrier_{i}", "attention_backward.metal",
             remove_nth("threadgroup_barrier(", i), race=True) for i in (10, 11)),
    Mutant("backward_rows_dq_next_tile_into_current_copy", "attention_backward.metal",
           replace_once("threadgroup T* next_keys = tiles + (1 - buf) * 2 * ST * LD;",
                        "threadgroup T* next_keys = tiles + buf * 2 * ST * LD;"),
           race=True),
    Mutant("backward_rows_dkdv_next_tile_into_current_copy", "attention_backward.metal",
           replace_once("threadgroup T* next_rows = tiles + (1 - buf) * 2 * ST * LD;",
                        "threadgroup T* next_rows = tiles + buf * 2 * ST * LD;"),
           race=True),
    Mutant("backward_rows_dkdv_next_row_terms_into_current_copy", "attention_backward.metal",
           replace_once("threadgroup float* next_row_terms = row_terms + (1 - buf) * 2 * ST;",
                        "threadgroup float* next_row_terms = row_terms + buf * 2 * ST;"),
           race=True),
    # Above tile 64 (checked at 96 in bfloat16): each SIMD-group stages its owned rows into its
    # own threadgroup area; staging the first SIMD-group's rows in every one (K and V; Q and dO).
    Mutant("backward_rows_dkdv_owned_rows_of_another_simdgroup", "attention_backward.metal",
           replace_each("p.k_row_stride, sk0, k_end, qc, lane);", "p.k_row_stride, k0, k_end, qc, lane);", 1)),
    Mutant("backward_rows_dq_owned_rows_of_another_simdgroup", "attention_backward.metal",
           replace_each("a.dout_row_stride, sr0, rows_end, vc, lane);",
                        "a.dout_row_stride, row0, rows_end, vc, lane);", 1)),
    Mutant("backward_mask_end_off_by_one", "attention_backward.metal",
           replace_once("key >= r.begin && key < r.end", "key >= r.begin && key <= r.end")),
    Mutant("backward_no_softcap_derivative", "attention_kernel_common.h",
           replace_once("s.dlogit_dqk *= softcap_derivative(s.logit, r.softcap);", "")),
    # (both dK/dV kernels: by head-dim shares, checked at tile 72, and by full-width rows, at 64)
    Mutant("backward_gqa_wrong_heads", "attention_backward.metal",
           lambda text: replace_each("const bool more = next_h < (hk + 1) * group;",
                                     "const bool more = next_h < hk + group;", 2)(
               replace_each("int h = hk * group;\n", "int h = hk;\n", 2)(text))),
    Mutant("backward_sink_gradient_sign", "attention_backward.metal",
           replace_once("acc += sink_gradient(", "acc -= sink_gradient(")),
    # Tile 512 only: its two barriers per tile in each pass (barriers 2, 3 of dk/dv and 7, 8 of
    # dq in source order; 0, 1, 4, 5, 6, 9 guard the staged tiles only), the partials summed over 8
    # SIMD-groups instead of 16, the streamed rows read from another SIMD-group's chunks, and the
    # finished P / dS put back in slot 0 of the partials (as the staged tiles do), which the next
    # tile's partials overwrite while other SIMD-groups still accumulate from it. That last one
    # survives the three schedules on values alone (a fiber runs until it blocks and each MMA
    # blocks until its SIMD-group's last lane arrives, so SIMD-groups advance nearly together,
    # and the wrong value needs one SIMD-group a whole phase ahead of another); the race
    # detector reports it whatever the schedule: the write and the read share a barrier epoch.
    *(Mutant(f"backward512_barrier_{i}", "attention_backward.metal",
             remove_nth("threadgroup_barrier(", i), wide=True, race=True) for i in (2, 3, 7, 8)),
    Mutant("backward512_partials_of_8_simdgroups", "attention_backward.metal",
           replace_once("for (int g = 0; g < NSG; ++g) {", "for (int g = 0; g < min(NSG, 8); ++g) {"),
           wide=True),
    Mutant("backward512_streamed_rows_of_another_share", "attention_backward.metal",
           replace_once("bwd_load_rows<T, SC, DC>(qs, q_base, p.q_row_stride, q0, rows.end, c_lo,",
                        "bwd_load_rows<T, SC, DC>(qs, q_base, p.q_row_stride, q0, rows.end, 0,"),
           wide=True),
    Mutant("backward512_finished_in_partials_slot_0", "attention_backward.metal",
           replace_each("mfs_bwd_finished_floats(D, ES) == 0 ? partial : partial + mfs_bwd_partial_floats(D);",
                        "partial;", 2),
           wide=True, race=True),
]

# Dropout (attention_dropout.h, and its two calls in the backward): the prefill keeps a lane's
# second entry by its first entry's draw; a key pair straddling two Philox blocks takes its second
# draw from the first block; the backward (its one draw, bwd_entry_terms, serves both passes)
# draws the mask of the KV head instead of the query head.
MUTANTS += [
    Mutant("dropout_pair_takes_one_draw", "attention_dropout.h",
           replace_once("dropout_keeps(draw1, p.dropout_threshold) ? e1",
                        "dropout_keeps(draw0, p.dropout_threshold) ? e1")),
    Mutant("dropout_straddling_pair_one_block", "attention_dropout.h",
           replace_once("(key + 1u) >> 2, token", "key >> 2, token")),
    Mutant("dropout_backward_kv_head", "attention_backward.metal",
           replace_once("dropout_query_token(p, s, b, row), h, key)",
                        "dropout_query_token(p, s, b, row), h / (p.heads_q / p.heads_kv), key)")),
]


def build_variant(workdir: Path, mutant: Mutant | None, wide: bool = False) -> Path:
    """Builds the (mutated) sources into workdir; returns the variant root."""
    metal = workdir / "metal-flash-sdpa" / "metal"
    if metal.parent.exists():
        shutil.rmtree(metal.parent)
    metal.parent.mkdir(parents=True)
    shutil.copytree(METAL, metal)
    # common/ is copied, not linked: a mutant may change the rules the kernels include from it
    shutil.copytree(REPO / "metal-flash-sdpa" / "common", metal.parent / "common")
    for path in metal.glob("*.metal"):
        path.write_text(reduce_instantiations(path.read_text(), wide))
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


# The dtypes the focused check runs, in order (it stops at the first failure): float32, then a
# 16-bit one, whose kernels have their own tile layouts.
CHECK_DTYPES = "f32,bf16"

# A failure the focused check reports: "[<schedule> <dtype>] <case>: <what differs>" or
# "[adversarial] ...", then FAIL. Anything else (a traceback, a crash) is not a caught mutant.
DIAGNOSTIC = re.compile(r"^\[(\w+ \w+|adversarial)\] \S+.*: ")


def check(root: Path, wide: bool = False) -> tuple[bool, str]:
    """(passed, first line of the output). A failure counts only with the focused check's own
    diagnostic and verdict: a check that crashed is reported as passed=None."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(CHECK), str(root), "--dtypes", CHECK_DTYPES,
                             *(["--wide"] if wide else [])],
                            capture_output=True, text=True, env=env, timeout=1800)
    lines = (result.stdout + result.stderr).strip().splitlines()
    first = (lines[0] if lines else "")[:200]
    if result.returncode == 0 and lines and lines[-1] == "PASS":
        return True, first
    if result.returncode == 1 and lines and lines[-1] == "FAIL" and DIAGNOSTIC.match(first):
        return False, first
    return None, f"no diagnostic (exit {result.returncode}): {(lines[-1] if lines else '')[:160]}"


def run(names: list[str] | None = None) -> dict[str, tuple[bool | None, str]]:
    """{name: (check passed, first line of its output)}, the baselines ('baseline', and
    'baseline_wide' when a wide mutant runs) first; passed is None where the check gave no
    diagnostic (it crashed), which catches nothing."""
    results = {}
    chosen = [m for m in MUTANTS if not names or m.name in names]
    with tempfile.TemporaryDirectory(prefix="mfs_mutants_") as tmp:
        work = Path(tmp)
        results["baseline"] = check(build_variant(work, None))
        if any(m.wide for m in chosen):
            results["baseline_wide"] = check(build_variant(work, None, wide=True), wide=True)
        for m in chosen:
            results[m.name] = check(build_variant(work, m, m.wide), m.wide)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    results = run(args.only)
    ok = True
    for name, (passed, first) in results.items():
        if name.startswith("baseline"):
            ok &= passed
            print(f"{name:32s} {'passes' if passed else 'FAILS'}  {first}")
            continue
        ok &= passed is False
        verdict = "caught" if passed is False else "SURVIVED" if passed else "CRASHED"
        print(f"{name:32s} {verdict}  {first}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
