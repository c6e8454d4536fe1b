// The numbers the Metal kernels and their launch plan must agree on, written once: buffer
// indices, tile sizes, threadgroup-memory sizes, the instantiated head dims and the per-launch
// argument struct. Read by MSL (the kernels size their threadgroup arrays and register tiles with
// these constexpr functions) and by C++ (metal_launch_plan.cpp picks kernels, grids and scratch
// with the same functions). Only constexpr integer functions and one POD struct live here.
#pragma once

// ---- [[buffer(n)]] indices (macros: they appear inside kernel-parameter attributes) ----
#define MFS_BUF_Q 0
#define MFS_BUF_K 1
#define MFS_BUF_V 2
#define MFS_BUF_OUT 3
#define MFS_BUF_LSE 4
#define MFS_BUF_CU_Q 5
#define MFS_BUF_CU_K 6
#define MFS_BUF_SEQUSED_K 7
#define MFS_BUF_BLOCK_TABLE 8
#define MFS_BUF_ALIBI 9
#define MFS_BUF_SINKS 10
#define MFS_BUF_SCRATCH0 11
#define MFS_BUF_SCRATCH1 12
#define MFS_BUF_PARAMS 13  // AttentionParams (setBytes)
#define MFS_BUF_ARGS 14    // MetalLaunchArgs (setBytes)
// (15-21: the backward's own, metal_backward_config.h)
#define MFS_BUF_SEQUSED_Q 22  // seqused_q (flash-attn 3), forward and backward

// ---- [[function_constant(n)]] indices ----
// Per-call features are function constants (MSL spec, "Function Constants"): the pipeline is
// specialised per combination, so a feature that is off costs no branch in the inner loops.
#define MFS_FC_SINK_DTYPE 0  // int: dtype of s_aux (MfsDtype)
#define MFS_FC_VARLEN_Q 1    // bool: kVarlenQ
#define MFS_FC_VARLEN_K 2    // bool: kVarlenK
#define MFS_FC_SEQUSED_K 3   // bool: kSequsedK
#define MFS_FC_PAGED_KV 4    // bool: kPagedKV
#define MFS_FC_ALIBI 5       // bool: kHasAlibi
#define MFS_FC_SOFTCAP 6     // bool: softcap > 0
#define MFS_FC_SINKS 7       // bool: kHasSinks
#define MFS_FC_WRITE_LSE 8   // bool: kWriteLse
#define MFS_FC_WINDOW 9      // bool: causal or a finite window (keys can be masked per row)
#define MFS_FC_VECTOR_KV 10  // bool: k/v rows are 4-element aligned (vector loads allowed)
#define MFS_FC_SEQUSED_Q 11  // bool: kSequsedQ
#define MFS_FC_DROPOUT 14    // bool: kDropout (prefill and backward only: metal/attention_dropout.h)
#define MFS_FC_DECODE_PAIRS 15  // int: pairs per decode lane group (mfs_decode_live_pairs)
#define MFS_FC_HEAD_DIM_FULL 16  // bool: prefill, head_dim == head_dim_v == the kernel's tile
#define MFS_FC_DECODE_SPLIT 17  // bool: the decode splits its keys (writes partials, no out/lse)
#define MFS_FC_VECTOR_Q 18  // bool: prefill, q rows 16-byte aligned (Q read by 16-byte loads)

// Element types, as the plan and the function constants name them.
enum MfsDtype { kMfsFloat32 = 0, kMfsFloat16 = 1, kMfsBFloat16 = 2 };

// ---- head dims ----
// Kernels are instantiated for these head-dim tiles (register/threadgroup tile widths). A call
// runs with the smallest tile >= max(head_dim, head_dim_v); the kernels loop over the tile in
// 8-wide chunks and skip (predicate off) chunks past the call's head_dim / head_dim_v, so a head
// dim between two tiles costs no extra MMAs and no extra memory traffic, only registers and
// threadgroup memory sized for the larger tile.
#define MFS_NUM_HEAD_DIM_TILES 9
constexpr int mfs_head_dim_tile_at(int i) {
  return i == 0 ? 32 : i == 1 ? 64 : i == 2 ? 72 : i == 3 ? 80 : i == 4 ? 96
       : i == 5 ? 128 : i == 6 ? 192 : i == 7 ? 256 : 512;
}
// 0 when no tile is wide enough (head dims > 512 are rejected by the argument checks).
constexpr int mfs_head_dim_tile(int head_dim) {
  return head_dim <= 32 ? 32 : head_dim <= 64 ? 64 : head_dim <= 72 ? 72 : head_dim <= 80 ? 80
       : head_dim <= 96 ? 96 : head_dim <= 128 ? 128 : head_dim <= 192 ? 192
       : head_dim <= 256 ? 256 : head_dim <= 512 ? 512 : 0;
}

// ---- how S = Q.K^T is summed over the head dim ----
// In groups of mfs_score_group_chunks(d) 8-wide chunks, each group from zero, the groups added in
// order (fp32 rounding grows with the number of groups, not with d). Every SIMD-group of the
// backward owns one group (metal_backward_config.h), and the prefill sums the same groups, so
// the backward's recomputed S has the bits the forward's lse was made from: its rounding cancels
// in exp(S - lse) as it does in a softmax.
constexpr int mfs_score_groups(int d) { return d >= 512 ? 16 : d >= 192 ? 8 : 4; }
constexpr int mfs_score_group_chunks(int d) {
  return (d / 8 + mfs_score_groups(d) - 1) / mfs_score_groups(d);
}

// ---- registers ----
// The per-thread 32-bit register budget every instantiation is held to (above it Apple GPUs
// lose occupancy, and past the hardware's limit registers spill). Measured, not estimated: the
// kernels compiled by a production register allocator (nvcc/ptxas, tests/metal_cuda/), every
// instantiation's demand at most this and no spill under its own threadgroup size
// (tests/test_metal_registers.py).
#define MFS_REGISTER_BUDGET 128

// ---- prefill (one threadgroup = BQ query rows of one (sequence, head)) ----
// 4 row groups of 8 query rows each (MLX's steel attention uses the same WM=4 x 8 rows = BQ 32).
// From head-dim tile 192 on, each row group is several SIMD-groups that split the head dim (Q and
// O shares; their partial S = Q.K^T are summed through threadgroup memory in a fixed order): two
// up to tile 256, four at tile 512, so Q and O fragments stay within the register budget.
#define MFS_PREFILL_ROW_GROUPS 4
#define MFS_PREFILL_BQ 32
constexpr int mfs_prefill_dsplit(int d) { return d >= 512 ? 4 : d >= 192 ? 2 : 1; }
constexpr int mfs_prefill_simdgroups(int d) { return MFS_PREFILL_ROW_GROUPS * mfs_prefill_dsplit(d); }
constexpr int mfs_prefill_threads(int d) { return 32 * mfs_prefill_simdgroups(d); }
// Padding of each threadgroup tile row, in elements (16 bytes, against bank conflicts).
constexpr int mfs_tile_pad(int elem_bytes) { return 16 / elem_bytes; }
// Keys per K/V tile: 32 up to head dim 96, 16 above (MLX: bk = bd < 128 ? 32 : 16), 8 when the
// two tiles would not fit 32 KiB (float32 at tile 256, every dtype at tile 512).
constexpr int mfs_prefill_bk(int d, int elem_bytes) {
  return d <= 96 ? 32
       : (2 * 16 * (d + mfs_tile_pad(elem_bytes)) * elem_bytes <= 32768 ? 16 : 8);
}
constexpr int mfs_prefill_ld(int d, int elem_bytes) { return d + mfs_tile_pad(elem_bytes); }
// The query tile (of a sequence's `tiles`) that the prefill threadgroup at grid x owns. Causal:
// later tiles stream more keys, so x counts from the sequence's last tile and each (sequence,
// head) starts its heaviest tiles first (threadgroups start in grid order, x fastest), the light
// ones filling the tail (tests/metal_design/plan_prefill_test.cpp). The kernel takes this order
// wherever window_right is bounded (a sliding window's tiles stream about the same keys, so the
// order costs nothing there); otherwise x itself.
constexpr int mfs_prefill_query_tile(int x, int tiles, bool heaviest_first) {
  return heaviest_first ? tiles - 1 - x : x;
}
// Threadgroup memory of one prefill threadgroup: a K tile and a V tile (both [bk][d + pad]: the
// 16-byte pad keeps the S reads of K^T and the P.V reads of V conflict-free), the tile rows' (page, row in page) for two tiles (paged K/V) and, with a
// head-dim split, each SIMD-group's partial S (8 x BK floats). When the K and V tiles together do
// not fit with the rest (float32 at tile 512), they share one buffer: V is staged only after
// every S of the tile has read K, and the next K only after every P.V has read V (two barriers
// more per tile).
constexpr int mfs_prefill_k_tile_bytes(int d, int elem_bytes) {
  return mfs_prefill_bk(d, elem_bytes) * mfs_prefill_ld(d, elem_bytes) * elem_bytes;
}
constexpr int mfs_prefill_v_tile_bytes(int d, int elem_bytes) {
  return mfs_prefill_bk(d, elem_bytes) * mfs_prefill_ld(d, elem_bytes) * elem_bytes;
}
constexpr int mfs_prefill_pages_bytes(int d, int elem_bytes) {
  return mfs_prefill_bk(d, elem_bytes) * 16;
}
constexpr int mfs_prefill_partial_s_bytes(int d, int elem_bytes) {
  return mfs_prefill_dsplit(d) > 1 ? mfs_prefill_simdgroups(d) * 8 * mfs_prefill_bk(d, elem_bytes) * 4 : 0;
}
constexpr bool mfs_prefill_kv_shared(int d, int elem_bytes) {
  return mfs_prefill_k_tile_bytes(d, elem_bytes) + mfs_prefill_v_tile_bytes(d, elem_bytes) +
             mfs_prefill_pages_bytes(d, elem_bytes) + mfs_prefill_partial_s_bytes(d, elem_bytes) >
         32768;
}
// Double-buffered K/V (issue 20): two K and two V tiles, the next tile's staged into the other
// pair while this one is multiplied, so one barrier per key tile. Only where the head dim is not
// split (a split's partial S needs a barrier between S and the softmax of every tile anyway) and
// the four tiles and the pages fit 32 KiB: float16/bfloat16 up to tile 128, float32 at tile 32.
constexpr bool mfs_prefill_double_buffered(int d, int elem_bytes) {
  return mfs_prefill_dsplit(d) == 1 &&
         2 * (mfs_prefill_k_tile_bytes(d, elem_bytes) + mfs_prefill_v_tile_bytes(d, elem_bytes)) +
                 mfs_prefill_pages_bytes(d, elem_bytes) <=
             32768;
}
// The K and V tiles' bytes: two of each (double-buffered), one of each, or the larger when they
// share one buffer.
constexpr int mfs_prefill_kv_bytes(int d, int elem_bytes) {
  return mfs_prefill_double_buffered(d, elem_bytes)
             ? 2 * (mfs_prefill_k_tile_bytes(d, elem_bytes) + mfs_prefill_v_tile_bytes(d, elem_bytes))
         : !mfs_prefill_kv_shared(d, elem_bytes)
             ? mfs_prefill_k_tile_bytes(d, elem_bytes) + mfs_prefill_v_tile_bytes(d, elem_bytes)
         : mfs_prefill_k_tile_bytes(d, elem_bytes) > mfs_prefill_v_tile_bytes(d, elem_bytes)
             ? mfs_prefill_k_tile_bytes(d, elem_bytes)
             : mfs_prefill_v_tile_bytes(d, elem_bytes);
}
constexpr int mfs_prefill_tg_bytes(int d, int elem_bytes) {
  return mfs_prefill_kv_bytes(d, elem_bytes) + mfs_prefill_pages_bytes(d, elem_bytes) +
         mfs_prefill_partial_s_bytes(d, elem_bytes);
}
// Barriers per K/V tile: one (double-buffered: after staging the next tile); else after staging
// K and after staging V, and with a shared K/V buffer one before each of those stagings.
constexpr int mfs_prefill_barriers_per_tile(int d, int elem_bytes) {
  return mfs_prefill_double_buffered(d, elem_bytes) ? 1 : mfs_prefill_kv_shared(d, elem_bytes) ? 4 : 2;
}

// ---- decode (q_len <= MFS_DECODE_MAX_Q per sequence) ----
// One threadgroup = the (query head, row) pairs of a GQA group (or part of one) for one sequence
// and one key split, and mfs_decode_simdgroups(d) SIMD-groups that each take a contiguous run of
// the split's keys. K/V rows are read straight from device memory: a key's row is spread over
// `lanes per key` lanes, each owning E contiguous elements (one to four 4-element vector loads),
// and serves every pair of the threadgroup. A lane group holds up to mfs_decode_max_pairs pairs
// in registers; when the threadgroup has more, the SIMD-group's lane groups split into cohorts
// that hold different pairs of the same key (one cohort loads it, the others get it by shuffle).
// The SIMD-groups' partial softmax states are combined once, at the end, in threadgroup memory.
// At tile 512 a key's row is spread over two SIMD-groups (mfs_decode_simdgroups_per_key), each
// holding half of the head dim (8 elements per lane, so o for 4 pairs fits the register budget:
// 16 per lane needed 139-158 registers); their partial scores are summed through threadgroup
// memory, one barrier per key step. The pairs' q rows are read from the threadgroup copy they are
// staged in, and 8 SIMD-groups (4 key runs) keep the threadgroup small.
#define MFS_DECODE_MAX_Q 8
constexpr int mfs_decode_simdgroups(int d) { return d >= 512 ? 8 : 16; }
constexpr int mfs_decode_threads(int d) { return 32 * mfs_decode_simdgroups(d); }
// At tiles 96 and 128 in 16-bit dtypes (a key's row over one SIMD-group), a
// threadgroup of MFS_DECODE_MMA_MIN_PAIRS to MFS_DECODE_MMA_PAIRS pairs computes S and P.V as 8x8
// simdgroup MMAs over 8 keys x 8 pairs (attention_decode.metal) instead of a shuffle reduction per
// pair and key: one threadgroup holds a GQA-8 group (K/V read once). Fewer pairs keep the shuffle
// path (an MMA would compute 8 columns for them). Not at tile 256: with K and V streamed in
// 8-element load groups it needed 162 / 178 registers (f16 / bf16; O^T alone is 64) and spilled,
// so a GQA-8 group there still reads K/V twice; not at 512 (O^T alone: 128).
#define MFS_DECODE_MMA_PAIRS 8
#define MFS_DECODE_MMA_MIN_PAIRS 4
constexpr bool mfs_decode_mma_tile(int d, int elem_bytes) {
  return elem_bytes == 2 && (d == 96 || d == 128);
}
constexpr bool mfs_decode_uses_mma(int pairs, int d, int elem_bytes) {
  return mfs_decode_mma_tile(d, elem_bytes) && pairs >= MFS_DECODE_MMA_MIN_PAIRS;
}
// Tile 64 spreads a key over 8 lanes of 8 elements (4 lane groups, so 4 cohorts of 4 pairs
// hold a GQA 4 x 4 rows group in one threadgroup within the register budget; 16 lanes of 4 with
// 8 pairs each needed ~160 registers, tests/metal_cuda/). At the MMA tiles 96 and 128 (16-bit)
// the shuffle path (at most 3 pairs there: 4 and more take the MMA) spreads a key over 16 lanes of
// 8, two keys per SIMD-group step: every lane's share is one 16-byte load with aligned rows
// (32 lanes of 4 were 8-byte loads).
constexpr bool mfs_decode_wide_lanes(int d, int elem_bytes) {
  return mfs_decode_mma_tile(d, elem_bytes);
}
constexpr int mfs_decode_elems_per_lane(int d, int elem_bytes) {
  return d <= 32 ? 4 : d <= 64 ? 8 : d <= 128 ? (mfs_decode_wide_lanes(d, elem_bytes) ? 8 : 4) : 8;
}
// SIMD-groups sharing one key (each a slice of the head dim), and the key runs of a threadgroup.
constexpr int mfs_decode_simdgroups_per_key(int d) { return d >= 512 ? 2 : 1; }
constexpr int mfs_decode_key_runs(int d) {
  return mfs_decode_simdgroups(d) / mfs_decode_simdgroups_per_key(d);
}
constexpr int mfs_decode_lanes_per_key(int d, int elem_bytes) {
  return d <= 64 ? 8 : mfs_decode_wide_lanes(d, elem_bytes) ? 16 : 32;
}
constexpr bool mfs_decode_q_in_registers(int d) { return d < 512; }
// Pairs one lane group holds in registers: as many as the register budget admits with every
// feature on (ptxas, tests/test_metal_registers.py); at the 16-bit tiles 96 and 128, 3 (their
// shuffle path never holds more: 4 and more pairs take the MMA path).
constexpr int mfs_decode_max_pairs(int d, int elem_bytes) {
  return d <= 32    ? 5
         : d <= 64  ? (elem_bytes == 4 ? 3 : 4)
         : d <= 128 ? (mfs_decode_wide_lanes(d, elem_bytes) ? 3 : 5)
                    : 4;
}
// Lane groups of a SIMD-group sharing one key, each holding its own pairs: 1, 2 or 4 (at most
// the lane groups a SIMD-group has, 32 / lanes per key); the MMA path: 1.
constexpr int mfs_decode_cohorts(int pairs, int d, int elem_bytes) {
  return pairs <= mfs_decode_max_pairs(d, elem_bytes) || mfs_decode_uses_mma(pairs, d, elem_bytes) ? 1
         : pairs <= 2 * mfs_decode_max_pairs(d, elem_bytes) ? 2 : 4;
}
// Pairs each cohort works on (the decode kernel's function constant MFS_FC_DECODE_PAIRS): the
// threadgroup's pairs spread evenly over its cohorts, so that no lane group computes scores, shuffles
// or o updates for a pair it would discard (GQA 1 at a 5-pair tile: 1, not 5).
constexpr int mfs_decode_live_pairs(int pairs, int d, int elem_bytes) {
  return (pairs + mfs_decode_cohorts(pairs, d, elem_bytes) - 1) / mfs_decode_cohorts(pairs, d, elem_bytes);
}
// Pairs one threadgroup holds: every cohort's, or the MMA's 8.
constexpr int mfs_decode_max_tg_pairs(int d, int elem_bytes) {
  return mfs_decode_mma_tile(d, elem_bytes) ? MFS_DECODE_MMA_PAIRS
                                            : mfs_decode_max_pairs(d, elem_bytes) * (32 / mfs_decode_lanes_per_key(d, elem_bytes));
}

// The combine area (per cohort, each key run's o (tile width) and (m, l) of one pair), the
// partial scores exchanged between the SIMD-groups of a key (two steps' worth, per SIMD-group
// and pair; none with one SIMD-group per key), the sequence's bounds (4 ints, read once per
// threadgroup), then the pairs' q rows (input dtype).
constexpr int mfs_decode_combine_floats(int d, int elem_bytes) {
  return (32 / mfs_decode_lanes_per_key(d, elem_bytes)) * mfs_decode_key_runs(d) * (d + 4);
}
constexpr int mfs_decode_exchange_floats(int d, int elem_bytes) {
  return mfs_decode_simdgroups_per_key(d) > 1
             ? 2 * mfs_decode_simdgroups(d) * mfs_decode_max_pairs(d, elem_bytes) : 0;
}
constexpr int mfs_decode_tg_bytes(int d, int elem_bytes) {
  return (mfs_decode_combine_floats(d, elem_bytes) + mfs_decode_exchange_floats(d, elem_bytes) + 4) * 4 +
         mfs_decode_max_tg_pairs(d, elem_bytes) * d * elem_bytes;
}
// Split-K: a split covers a multiple of this many keys (every SIMD-group gets whole steps).
#define MFS_DECODE_SPLIT_GRAIN 32
#define MFS_MAX_HEAD_DIM 512

// ---- clearing the rows of a varlen q past cu_seqlens_q[batch] (functional form) ----
#define MFS_CLEAR_ROWS_PER_TG 8

// Per-launch integers beyond AttentionParams, bound with setBytes at MFS_BUF_ARGS.
struct MetalLaunchArgs {
  int heads_per_tg;     // decode: query heads per threadgroup (divides heads_q / heads_kv)
  int rows_per_head;    // decode: query rows per head handled (max_seqlen_q, <= MFS_DECODE_MAX_Q)
  int num_splits;       // decode: key splits (1 = write out/lse directly, no scratch)
  int keys_per_split;   // decode: keys of one split (multiple of MFS_DECODE_SPLIT_GRAIN)
  int rows_per_tg;      // decode: query rows per threadgroup (heads_per_tg x rows_per_tg pairs)
};

// Its layout, as both languages must see it (see AttentionParams in attention_params.h).
#define MFS_LAUNCH_ARGS_AT(field, offset)                                 \
  static_assert(__builtin_offsetof(MetalLaunchArgs, field) == offset,      \
                "MetalLaunchArgs::" #field " moved: C++ and MSL must agree on the layout");
MFS_LAUNCH_ARGS_AT(heads_per_tg, 0)
MFS_LAUNCH_ARGS_AT(rows_per_head, 4)
MFS_LAUNCH_ARGS_AT(num_splits, 8)
MFS_LAUNCH_ARGS_AT(keys_per_split, 12)
MFS_LAUNCH_ARGS_AT(rows_per_tg, 16)
#undef MFS_LAUNCH_ARGS_AT
static_assert(sizeof(MetalLaunchArgs) == 20, "MetalLaunchArgs changed size: C++ and MSL must agree");
