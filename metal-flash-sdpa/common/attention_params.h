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
typedef uint mfs_u32;
#else
#include <cstdint>
typedef int32_t mfs_i32;
typedef int64_t mfs_i64;
typedef uint32_t mfs_u32;
#endif

// Bits of AttentionParams::flags.
enum AttentionFlags : mfs_i32 {
  // q rows of sequence b start at cu_seqlens_q[b]; otherwise at b * q_batch_stride (fixed length).
  kVarlenQ = 1 << 0,
  // k rows of sequence b start at cu_seqlens_k[b] and its length is the difference of two entries.
  kVarlenK = 1 << 1,
  // the key length of sequence b is seqused_k[b] (kv-cache decode; k starts at b * k_batch_stride),
  // or, with kVarlenK, the first seqused_k[b] keys of its slot in cu_seqlens_k (flash-attn 3).
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
  // only the first seqused_q[b] queries of sequence b's slot count (flash-attn 3); the rest of the
  // slot belongs to no sequence (kClearRowsOutsideSequences zeroes it in the functional form).
  kSequsedQ = 1 << 8,
  // dropout on the probabilities (dropout_* fields; the stream is dropout_stream.h's).
  kDropout = 1 << 9,
  // the backward writes d attn_mask (a floating mask that requires grad; sdpa_backward).
  kMaskGrad = 1 << 10,
};

// AttentionParams::mask_kind: torch's attn_mask (scaled_dot_product_attention), read per
// (sequence, q head, row, key) through the mask_* strides; the rule is attention_semantics.h's.
enum AttentionMaskKind : mfs_i32 {
  kNoMask = 0,
  kMaskBool = 1,      // uint8/bool: true keeps the key
  kMaskFloat32 = 2,   // added to the scaled score
  kMaskFloat16 = 3,
  kMaskBFloat16 = 4,
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

  // --- attn_mask (fixed-length calls only): element strides over (sequence, q head, row, key),
  // 0 along a dimension the mask broadcasts over ---
  mfs_i64 mask_batch_stride, mask_head_stride, mask_row_stride, mask_key_stride;
  mfs_i32 mask_kind;  // AttentionMaskKind
  mfs_i32 mask_reserved;

  // --- dropout (kDropout; dropout_stream.h): the call's 64-bit seed and offset, the keep
  // threshold on a 32-bit draw, and 1 / (1 - p), which multiplies the kept probabilities ---
  mfs_u32 dropout_seed_lo, dropout_seed_hi, dropout_offset, dropout_threshold;
  float dropout_scale;
  mfs_i32 dropout_reserved;
};

// The layout both languages must agree on (the host copies the struct with setBytes, the kernels
// read it as `constant AttentionParams&`): every field's offset and the size, compiled by the C++
// build and by the Metal sources (and `make check-metal`). A new field means new lines here.
#define MFS_PARAMS_AT(field, offset)                                 \
  static_assert(__builtin_offsetof(AttentionParams, field) == offset, \
                "AttentionParams::" #field " moved: C++ and MSL must agree on the layout");
MFS_PARAMS_AT(q_batch_stride, 0)
MFS_PARAMS_AT(q_row_stride, 8)
MFS_PARAMS_AT(q_head_stride, 16)
MFS_PARAMS_AT(k_batch_stride, 24)
MFS_PARAMS_AT(k_row_stride, 32)
MFS_PARAMS_AT(k_head_stride, 40)
MFS_PARAMS_AT(v_batch_stride, 48)
MFS_PARAMS_AT(v_row_stride, 56)
MFS_PARAMS_AT(v_head_stride, 64)
MFS_PARAMS_AT(o_batch_stride, 72)
MFS_PARAMS_AT(o_row_stride, 80)
MFS_PARAMS_AT(o_head_stride, 88)
MFS_PARAMS_AT(lse_batch_stride, 96)
MFS_PARAMS_AT(lse_head_stride, 104)
MFS_PARAMS_AT(batch, 112)
MFS_PARAMS_AT(heads_q, 116)
MFS_PARAMS_AT(heads_kv, 120)
MFS_PARAMS_AT(head_dim, 124)
MFS_PARAMS_AT(head_dim_v, 128)
MFS_PARAMS_AT(max_seqlen_q, 132)
MFS_PARAMS_AT(max_seqlen_k, 136)
MFS_PARAMS_AT(q_rows, 140)
MFS_PARAMS_AT(k_rows, 144)
MFS_PARAMS_AT(seqlen_q, 148)
MFS_PARAMS_AT(seqlen_k, 152)
MFS_PARAMS_AT(flags, 156)
MFS_PARAMS_AT(page_size, 160)
MFS_PARAMS_AT(num_pages, 164)
MFS_PARAMS_AT(block_table_batch_stride, 168)
MFS_PARAMS_AT(max_pages_per_seq, 172)
MFS_PARAMS_AT(alibi_batch_stride, 176)
MFS_PARAMS_AT(window_left, 180)
MFS_PARAMS_AT(window_right, 184)
MFS_PARAMS_AT(scale, 188)
MFS_PARAMS_AT(softcap, 192)
MFS_PARAMS_AT(mask_batch_stride, 200)
MFS_PARAMS_AT(mask_head_stride, 208)
MFS_PARAMS_AT(mask_row_stride, 216)
MFS_PARAMS_AT(mask_key_stride, 224)
MFS_PARAMS_AT(mask_kind, 232)
MFS_PARAMS_AT(dropout_seed_lo, 240)
MFS_PARAMS_AT(dropout_seed_hi, 244)
MFS_PARAMS_AT(dropout_offset, 248)
MFS_PARAMS_AT(dropout_threshold, 252)
MFS_PARAMS_AT(dropout_scale, 256)
#undef MFS_PARAMS_AT
static_assert(sizeof(AttentionParams) == 264 && alignof(AttentionParams) == 8,
              "AttentionParams changed size: C++ and MSL must agree on the layout");
