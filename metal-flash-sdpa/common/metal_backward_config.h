// The numbers the Metal backward kernels (metal/attention_backward.metal) and their launch plan
// (metal_backward_plan.cpp) must agree on: tiles, threadgroup memory, register estimates, buffer
// indices and the per-launch strides struct. Read by MSL and C++, like metal_kernel_config.h.
#pragma once

#include "attention_params.h"
#include "metal_kernel_config.h"

// FlashAttention-2: a D pass (D = rowsum(dO * O)), a key-tile pass for dk/dv (loops over the
// GQA group's query heads and the query tiles that see its keys) and a query-tile pass for dq;
// d s_aux is summed per head by one more launch. No atomics: every gradient row is written by
// one threadgroup, every sum runs in a fixed order.
//
// Both tiled passes have the same shape: a threadgroup owns MFS_BWD_OWN rows (keys of one KV head
// for dk/dv, queries of one head for dq) and streams the other side in tiles of mfs_bwd_stream(d)
// rows. Every SIMD-group holds a head-dim share of the owned rows (their K/V or Q/dO fragments,
// transposed, in the input dtype; their fp32 gradient accumulators) and computes partial S and dP
// over that share (streamed rows x owned rows^T); the partials are summed through threadgroup
// memory in a fixed order, the score rule's derivative is applied once per element, and each
// SIMD-group accumulates its share of the gradients from the result.
//
// Tile figures read in public Metal backward kernels: metal-flash-attention
// (philipturner/metal-flash-attention: its backward-key-value and backward-query kernels own
// 16-32 rows and stream 16-32 at head dim <= 128, and block the head dim above); MLX's steel
// attention has no backward. Ours: 16 owned x 16 streamed rows, 8 streamed with 8 SIMD-groups
// from head-dim tile 192 on, so that threadgroup memory stays within 32 KiB and registers within
// the budget at tile 256 in float32. At tile 512, 16 SIMD-groups of 4 chunks each, 8 streamed
// rows, and the streamed tile no longer fits threadgroup memory (2 x 8 x 516 x 4 B = 33 KiB in
// float32): every SIMD-group reads the streamed rows' chunks of its own share straight from
// device memory into registers (no SIMD-group needs another's columns, so nothing is shared),
// and the finished P and dS get their own area, so that a tile needs two barriers, not four.
#define MFS_BWD_OWN 16
constexpr int mfs_bwd_stream(int d) { return d >= 192 ? 8 : 16; }
constexpr int mfs_bwd_simdgroups(int d) { return mfs_score_groups(d); }  // one S group each
constexpr int mfs_bwd_threads(int d) { return 32 * mfs_bwd_simdgroups(d); }
// Whether the streamed tile is staged in threadgroup memory (else: read into registers).
constexpr bool mfs_bwd_staged(int d) { return d <= 256; }
// 8-wide head-dim chunks each SIMD-group owns (SIMD-group g: chunks [g * n, (g + 1) * n)).
constexpr int mfs_bwd_chunks_per_sg(int d) { return mfs_score_group_chunks(d); }
constexpr int mfs_bwd_ld(int d, int elem_bytes) { return d + mfs_tile_pad(elem_bytes); }
// Row stride (floats) of the partial and finished [MFS_BWD_OWN][stream] areas: 4 floats of
// padding. The partial products are stored transposed, so a SIMD-group's 32 lanes write 8 rows
// (fr) of 4 columns (fc = 0, 2, 4, 6) at once; unpadded, the 4 columns' rows are a multiple of
// 32 words apart and share 8 banks (4-way under 32 banks x 4 bytes); with 4 more floats each
// column lands on its own 8 banks (conflict-free), and the fragment reads of the finished area
// are at most 2-way.
constexpr int mfs_bwd_partial_ld(int d) { return mfs_bwd_stream(d) + 4; }
// How many copies of the streamed tiles (Q and dO, or K and V) threadgroup memory holds: 0 at
// tile 512 (read into registers), 2 for 16-bit dtypes (double-buffered: tile t + 1 is staged
// while tile t is finished, so a tile needs two barriers, partials written | P, dS finished and
// the next tile staged, not four), 1 in float32 (two copies would not fit 32 KiB from tile 80
// on, and would leave under 2.5 KiB at 32-72).
constexpr int mfs_bwd_stream_buffers(int d, int elem_bytes) {
  return !mfs_bwd_staged(d) ? 0 : elem_bytes == 2 ? 2 : 1;
}
// Threadgroup memory of a dk/dv or dq threadgroup (one layout, in this order): the streamed
// tiles, mfs_bwd_stream_buffers copies of two tiles of mfs_bwd_stream(d) rows in the input
// dtype; every SIMD-group's partial S and dP ([simdgroups][2][MFS_BWD_OWN][partial_ld] floats);
// the finished P and dS ([2][MFS_BWD_OWN][partial_ld] floats) unless one copy is staged (then
// slot 0 of the partials holds them, read and overwritten by the thread owning each element);
// the lse and D of the streamed or owned rows (2 x MFS_BWD_OWN floats, a pair per buffer).
constexpr int mfs_bwd_stream_tile_elems(int d, int elem_bytes) {
  return mfs_bwd_stream_buffers(d, elem_bytes) * 2 * mfs_bwd_stream(d) * mfs_bwd_ld(d, elem_bytes);
}
constexpr int mfs_bwd_partial_floats(int d) {
  return mfs_bwd_simdgroups(d) * 2 * MFS_BWD_OWN * mfs_bwd_partial_ld(d);
}
constexpr int mfs_bwd_finished_floats(int d, int elem_bytes) {
  return mfs_bwd_stream_buffers(d, elem_bytes) == 1 ? 0 : 2 * MFS_BWD_OWN * mfs_bwd_partial_ld(d);
}
constexpr int mfs_bwd_row_floats(int d, int elem_bytes) {
  return (mfs_bwd_stream_buffers(d, elem_bytes) == 2 ? 2 : 1) * 2 * MFS_BWD_OWN;
}
constexpr int mfs_bwd_tg_bytes(int d, int elem_bytes) {
  return mfs_bwd_stream_tile_elems(d, elem_bytes) * elem_bytes +
         (mfs_bwd_partial_floats(d) + mfs_bwd_finished_floats(d, elem_bytes) +
          mfs_bwd_row_floats(d, elem_bytes)) * 4;
}
// The tiled passes by full-width rows (mfs_bwd_dkdv_rows, mfs_bwd_dq_rows in
// attention_backward.metal; issue 20's change 1): each of 4 SIMD-groups owns 8 keys (dK/dV) or
// 8 query rows (dQ) over the whole head dim, computes S^T = K.Q^T and dP^T = V.dO^T (dQ: S =
// Q.K^T, dP = dO.V^T) itself, finishes P and dS in registers and uses them as MMA operands (dV +=
// P^T.dO, dK += dS^T.Q; dQ += dS.K): no partials through threadgroup memory, no finishing pass.
// The streamed tiles (and, dK/dV, their rows' lse and D) are double-buffered: one barrier per
// streamed tile. Registers hold the fp32 accumulators (dK and dV: 2 x D / 8 fragments, D / 2
// floats a lane; dQ: D / 4) and, up to tile 64, the owned rows' K and V (or Q and dO) fragments
// in the input dtype. From tile 72 on those fragments and the accumulators together pass the
// register budget (tile 72: 36 + 36 words beside ~50 of addresses and temporaries, where tile 64
// demands 117-119 of 128), so the owned rows are staged once into threadgroup memory
// (mfs_bwd_rows_owned_staged: each SIMD-group its own 8 rows, read back as MMA fragments; no
// other SIMD-group reads them) and registers hold only the accumulators. Threadgroup memory:
// two copies of the streamed tiles (32 rows while they fit 32 KiB, else 16, else 8) plus the
// owned rows; the form serves a tile while that fits at 8 streamed rows and the accumulators fit
// the budget: every tile up to 96 in 16-bit dtypes, up to 80 in float32 (f32 at 96: 25,600 B of
// owned K, V + 12,928 of streamed tiles = 38,528 > 32,768; at 128: 33,792 owned alone). Tile 128
// in 16-bit fits threadgroup memory (8 streamed rows: 26,240 B) but dK/dV demands 134 registers
// there (registers.py, mask corner; 64 accumulator words), so 128 keeps the head-dim shares.
#define MFS_BWD_ROWS_OWN 32
#define MFS_BWD_ROWS_THREADS 128
constexpr bool mfs_bwd_rows_owned_staged(int d) { return d > 64; }
// The owned rows in threadgroup memory: 4 SIMD-groups x (8 K rows, 8 V rows) (dQ: Q, dO),
// padded by 16 bytes like the streamed tiles.
constexpr int mfs_bwd_rows_owned_bytes(int d, int elem_bytes) {
  return mfs_bwd_rows_owned_staged(d) ? 2 * MFS_BWD_ROWS_OWN * mfs_bwd_ld(d, elem_bytes) * elem_bytes
                                      : 0;
}
// One copy of the streamed tiles: Q and dO rows (padded by 16 bytes), their lse and D.
constexpr int mfs_bwd_rows_copy_bytes(int d, int elem_bytes, int stream) {
  return 2 * stream * mfs_bwd_ld(d, elem_bytes) * elem_bytes + 2 * stream * 4;
}
constexpr bool mfs_bwd_rows_fit(int d, int elem_bytes, int stream) {
  return 2 * mfs_bwd_rows_copy_bytes(d, elem_bytes, stream) +
             mfs_bwd_rows_owned_bytes(d, elem_bytes) <= 32768;
}
// Streamed rows per step: 32 while two copies (and the owned rows) fit 32 KiB, else 16, else 8
// (f32 at tile 64: 16; f16 at 72: 32, 80 and 96: 16, 128: 8; f32 at 72 and 80: 8).
constexpr int mfs_bwd_rows_stream(int d, int elem_bytes) {
  return mfs_bwd_rows_fit(d, elem_bytes, 32) ? 32 : mfs_bwd_rows_fit(d, elem_bytes, 16) ? 16 : 8;
}
// Whether the plan runs a head-dim tile's dK/dV and dQ by full-width rows (else by head-dim
// shares, mfs_bwd_dkdv / mfs_bwd_dq).
constexpr bool mfs_bwd_rows_tile(int d, int elem_bytes) {
  return d <= 96 && mfs_bwd_rows_fit(d, elem_bytes, 8);
}
// Threadgroup memory: two copies, the Q/dO tiles of both first, then both copies' lse, D, then
// the owned rows.
constexpr int mfs_bwd_rows_tg_bytes(int d, int elem_bytes) {
  return 2 * mfs_bwd_rows_copy_bytes(d, elem_bytes, mfs_bwd_rows_stream(d, elem_bytes)) +
         mfs_bwd_rows_owned_bytes(d, elem_bytes);
}

// The D pass: rows per threadgroup, 4 SIMD-groups taking one row at a time.
#define MFS_BWD_DOT_ROWS 16
#define MFS_BWD_DOT_THREADS 128
// The d s_aux pass: one SIMD-group per query head.
#define MFS_BWD_SINK_THREADS 32

// Buffers of the backward launches beyond the forward's (q, k, v, out, lse, offsets, slopes,
// sinks at their MFS_BUF_* indices).
#define MFS_BUF_DOUT 15
#define MFS_BUF_DQ 16
#define MFS_BUF_DK 17
#define MFS_BUF_DV 18
#define MFS_BUF_DSINKS 19    // d s_aux, float32 [heads_q]
#define MFS_BUF_ROW_D 20     // D = rowsum(dO * O), float32 scratch
#define MFS_BUF_BWD_ARGS 21  // MetalBackwardArgs (setBytes)

// Strides (elements) of the backward's own tensors, bound with setBytes at MFS_BUF_BWD_ARGS.
// Batch strides are 0 for a varlen side (rows are global tokens). D of (sequence b, head h, row)
// is at ((b * d_rows_per_batch + q_begin + row) * heads_q + h).
struct MetalBackwardArgs {
  mfs_i64 dout_batch_stride, dout_row_stride, dout_head_stride;
  mfs_i64 dq_batch_stride, dq_row_stride, dq_head_stride;
  mfs_i64 dk_batch_stride, dk_row_stride, dk_head_stride;
  mfs_i64 dv_batch_stride, dv_row_stride, dv_head_stride;
  mfs_i64 d_rows_per_batch;  // fixed length: q_rows; varlen q: 0
};
#define MFS_BWD_ARGS_AT(field, offset)                                  \
  static_assert(__builtin_offsetof(MetalBackwardArgs, field) == offset, \
                "MetalBackwardArgs::" #field " moved: C++ and MSL must agree on the layout");
MFS_BWD_ARGS_AT(dout_batch_stride, 0)
MFS_BWD_ARGS_AT(dq_batch_stride, 24)
MFS_BWD_ARGS_AT(dk_batch_stride, 48)
MFS_BWD_ARGS_AT(dv_batch_stride, 72)
MFS_BWD_ARGS_AT(d_rows_per_batch, 96)
#undef MFS_BWD_ARGS_AT
static_assert(sizeof(MetalBackwardArgs) == 104,
              "MetalBackwardArgs changed size: C++ and MSL must agree on the layout");
