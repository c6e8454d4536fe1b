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
