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

// ---- [[function_constant(n)]] indices ----
#define MFS_FC_SINK_DTYPE 0  // int: dtype of s_aux (MfsDtype)

// Element types, as the plan and the function constants name them.
enum MfsDtype { kMfsFloat32 = 0, kMfsFloat16 = 1, kMfsBFloat16 = 2 };

// ---- head dims ----
// Kernels are instantiated for these head-dim tiles (register/threadgroup tile widths). A call
// runs with the smallest tile >= max(head_dim, head_dim_v); the kernels loop over the tile in
// 8-wide chunks and skip (predicate off) chunks past the call's head_dim / head_dim_v, so a head
// dim between two tiles costs no extra MMAs and no extra memory traffic, only registers and
// threadgroup memory sized for the larger tile.
#define MFS_NUM_HEAD_DIM_TILES 8
constexpr int mfs_head_dim_tile_at(int i) {
  return i == 0 ? 32 : i == 1 ? 64 : i == 2 ? 72 : i == 3 ? 80 : i == 4 ? 96
       : i == 5 ? 128 : i == 6 ? 192 : 256;
}
// 0 when no tile is wide enough (head dims > 256 are rejected by the argument checks).
constexpr int mfs_head_dim_tile(int head_dim) {
  return head_dim <= 32 ? 32 : head_dim <= 64 ? 64 : head_dim <= 72 ? 72 : head_dim <= 80 ? 80
       : head_dim <= 96 ? 96 : head_dim <= 128 ? 128 : head_dim <= 192 ? 192
       : head_dim <= 256 ? 256 : 0;
}

// ---- prefill (one threadgroup = BQ query rows of one (sequence, head)) ----
// 4 SIMD-groups of 8 query rows each (MLX's steel attention uses the same WM=4 x 8 rows = BQ 32).
#define MFS_PREFILL_SIMDGROUPS 4
#define MFS_PREFILL_BQ 32
// Padding of each threadgroup tile row, in elements (16 bytes, against bank conflicts).
constexpr int mfs_tile_pad(int elem_bytes) { return 16 / elem_bytes; }
// Keys per K/V tile: 32 up to head dim 96, 16 above (MLX: bk = bd < 128 ? 32 : 16), 8 when the
// two tiles would not fit 32 KiB (float32, head dim 256).
constexpr int mfs_prefill_bk(int d, int elem_bytes) {
  return d <= 96 ? 32
       : (2 * 16 * (d + mfs_tile_pad(elem_bytes)) * elem_bytes <= 32768 ? 16 : 8);
}
constexpr int mfs_prefill_ld(int d, int elem_bytes) { return d + mfs_tile_pad(elem_bytes); }
// Threadgroup memory of one prefill threadgroup: a K tile, a V tile and the tile rows' pages
// (int, paged K/V).
constexpr int mfs_prefill_tg_bytes(int d, int elem_bytes) {
  return 2 * mfs_prefill_bk(d, elem_bytes) * mfs_prefill_ld(d, elem_bytes) * elem_bytes +
         mfs_prefill_bk(d, elem_bytes) * 4;
}

// ---- decode (q_len <= MFS_DECODE_MAX_Q per sequence) ----
// One threadgroup = the query rows of `heads_per_tg` query heads sharing one KV head (a GQA
// group or part of one) for one sequence and one key split; one SIMD-group per (head, row).
// K/V rows are staged in threadgroup memory once for all of those SIMD-groups.
#define MFS_DECODE_MAX_Q 8
#define MFS_DECODE_MAX_SIMDGROUPS 32
constexpr int mfs_decode_bk(int d, int elem_bytes) { return d * elem_bytes <= 512 ? 16 : 8; }
constexpr int mfs_decode_tg_bytes(int d, int elem_bytes) {
  return 2 * mfs_decode_bk(d, elem_bytes) * d * elem_bytes + mfs_decode_bk(d, elem_bytes) * 4;
}
// Split-K: a split covers a multiple of this many keys; at most this many splits (the reduction
// holds one split per lane).
#define MFS_DECODE_SPLIT_GRAIN 64
#define MFS_DECODE_MAX_SPLITS 32
#define MFS_MAX_HEAD_DIM 256

// ---- clearing the rows of a varlen q past cu_seqlens_q[batch] (functional form) ----
#define MFS_CLEAR_ROWS_PER_TG 8

// Per-launch integers beyond AttentionParams, bound with setBytes at MFS_BUF_ARGS.
struct MetalLaunchArgs {
  int heads_per_tg;     // decode: query heads per threadgroup (divides heads_q / heads_kv)
  int rows_per_head;    // decode: query rows per head handled (max_seqlen_q, <= MFS_DECODE_MAX_Q)
  int num_splits;       // decode: key splits (1 = write out/lse directly, no scratch)
  int keys_per_split;   // decode: keys of one split (multiple of MFS_DECODE_SPLIT_GRAIN)
};

// Its layout, as both languages must see it (see AttentionParams in attention_params.h).
#define MFS_LAUNCH_ARGS_AT(field, offset)                                 \
  static_assert(__builtin_offsetof(MetalLaunchArgs, field) == offset,      \
                "MetalLaunchArgs::" #field " moved: C++ and MSL must agree on the layout");
MFS_LAUNCH_ARGS_AT(heads_per_tg, 0)
MFS_LAUNCH_ARGS_AT(rows_per_head, 4)
MFS_LAUNCH_ARGS_AT(num_splits, 8)
MFS_LAUNCH_ARGS_AT(keys_per_split, 12)
#undef MFS_LAUNCH_ARGS_AT
static_assert(sizeof(MetalLaunchArgs) == 16, "MetalLaunchArgs changed size: C++ and MSL must agree");
