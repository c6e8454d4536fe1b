// The description of one attention call that every backend consumes.
//
// This header is read by C++ (the cpu backend, the Metal host code, the simulator harness) and by
// MSL (the Metal kernels receive the struct as a `constant AttentionParams&`). It therefore uses
// only 32/64-bit integers and floats, 64-bit fields first, so the layout is identical in both
// languages. Strides are in elements, not bytes.
#pragma once

#ifdef __METAL_VERSION__
typedef int mfs_i32;
typedef long mfs_i64;
#else
#include <cstdint>
typedef int32_t mfs_i32;
typedef int64_t mfs_i64;
#endif

// Bits of AttentionParams::flags.
enum AttentionFlags : mfs_i32 {
  // q rows of sequence b start at cu_seqlens_q[b]; otherwise at b * q_batch_stride (fixed length).
  kVarlenQ = 1 << 0,
  // k rows of sequence b start at cu_seqlens_k[b] and its length is the difference of two entries.
  kVarlenK = 1 << 1,
  // the key length of sequence b is seqused_k[b] (kv-cache decode); k starts at b * k_batch_stride.
  kSequsedK = 1 << 2,
  // k/v are paged caches [num_pages, page_size, heads_kv, dim] addressed through block_table.
  kPagedKV = 1 << 3,
  kHasAlibi = 1 << 4,
  kHasSinks = 1 << 5,
  kWriteLse = 1 << 6,
  // Functional form with a varlen q: rows at or past cu_seqlens_q[batch] belong to no sequence and
  // must come back as zeros (lse -inf). Backends whose host cannot read cu_seqlens (Metal) clear
  // them in their own launch; the in-place form never sets it (it writes only sequences' rows).
  kClearRowsOutsideSequences = 1 << 7,
};

struct AttentionParams {
  // --- 64-bit strides (elements) ---
  mfs_i64 q_batch_stride, q_row_stride, q_head_stride;
  mfs_i64 k_batch_stride, k_row_stride, k_head_stride;  // paged: batch stride = page stride
  mfs_i64 v_batch_stride, v_row_stride, v_head_stride;
  mfs_i64 o_batch_stride, o_row_stride, o_head_stride;
  // lse is written as [.., heads, rows] fp32: lse_batch_stride is 0 for varlen.
  mfs_i64 lse_batch_stride, lse_head_stride;

  // --- 32-bit sizes ---
  mfs_i32 batch;
  mfs_i32 heads_q, heads_kv;
  mfs_i32 head_dim, head_dim_v;
  // Upper bounds on per-sequence lengths, as given by the caller (used for grid sizes).
  mfs_i32 max_seqlen_q, max_seqlen_k;
  // Rows that exist in the tensors (varlen: total tokens; fixed: per-batch sequence length;
  // paged: page_size). Kernels clamp every offset against these so that no offset read from
  // cu_seqlens can make them touch memory outside a tensor.
  mfs_i32 q_rows, k_rows;
  // Fixed-length sequences (no cu_seqlens): the lengths of every sequence.
  mfs_i32 seqlen_q, seqlen_k;
  mfs_i32 flags;  // AttentionFlags
  // Paged KV.
  mfs_i32 page_size, num_pages, block_table_batch_stride, max_pages_per_seq;
  // ALiBi slopes [heads_q] (stride 0) or [batch, heads_q].
  mfs_i32 alibi_batch_stride;
  // Window in keys, -1 = unbounded. Causal is window_right = 0.
  mfs_i32 window_left, window_right;

  // --- floats ---
  float scale;    // multiplies q.k
  float softcap;  // 0 = off (flash-attn convention; the legacy entry point converts)
};
