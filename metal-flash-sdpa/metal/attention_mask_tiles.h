// torch's attn_mask as the Metal kernels read it (MSL only): the function constants that select
// it, one mask value, the per-call tile summary (common/metal_mask_tiles.h) and its lookups. The
// rules are attention_semantics.h's (boolean_mask_bias, mask_biased, the MaskTileState of a
// value and the merge of two states); this header only reads values and applies them. Used by
// the summary kernel (attention_mask_summary.metal), the prefill and the backward; never by the
// decode kernel (the plan sends masked calls to the prefill).
#pragma once

#include "attention_kernel_common.h"

#include "../common/metal_mask_tiles.h"

constant int mfs_mask_kind [[function_constant(MFS_FC_MASK_KIND)]];  // AttentionMaskKind
constant bool mfs_mask_grad [[function_constant(MFS_FC_MASK_GRAD)]];  // write d attn_mask

// One mask value. Metal compiles with fast math, which may assume no infinities (see
// attention_semantics.h's kMaskedScore), so -inf is never computed with: a value that removes its
// key (a false boolean, boolean_mask_bias's kMaskedScore; a floating -inf, recognised by its
// bits) sets `closes`, and `bias` is the bias of a kept key (0 for a true boolean), finite and
// in range (mask_bias_in_range: a huge finite bias is a score, as in torch, never a removal).
struct MaskValue {
  bool closes;
  float bias;
};

inline MaskValue mask_value(const device uchar* mask, long at) {
  MaskValue m;
  m.closes = false;
  m.bias = 0.0f;
  if (mfs_mask_kind == kMaskBool) {
    m.closes = mask[at] == 0;
  } else if (mfs_mask_kind == kMaskFloat32) {
    const uint bits = ((const device uint*)mask)[at];
    m.closes = bits == MFS_NEG_INF_BITS;
    m.bias = m.closes ? 0.0f : as_type<float>(bits);
  } else if (mfs_mask_kind == kMaskFloat16) {
    const ushort bits = ((const device ushort*)mask)[at];
    m.closes = bits == (ushort)0xfc00u;
    m.bias = m.closes ? 0.0f : float(as_type<half>(bits));
  } else if (mfs_mask_kind == kMaskBFloat16) {
    const ushort bits = ((const device ushort*)mask)[at];
    m.closes = bits == (ushort)0xff80u;
    m.bias = m.closes ? 0.0f : as_type<float>((uint)bits << 16);
  }
  m.bias = mask_bias_in_range(m.bias);
  return m;
}

// The MaskTileState of one value (attention_semantics.h's mask_value_state, -inf by `closes`).
inline int mask_value_tile_state(const MaskValue m) {
  return m.closes ? (int)kMaskTileClosed : mask_value_state(m.bias);
}

// Element offset of (sequence b, q head h, row, key) in attn_mask (strides 0 where it broadcasts).
inline long mask_offset(constant AttentionParams& p, int b, int h, int row, int key) {
  return (long)b * p.mask_batch_stride + (long)h * p.mask_head_stride +
         (long)row * p.mask_row_stride + (long)key * p.mask_key_stride;
}

// The summary of one call, as every kernel indexes it (metal_mask_tiles.h: the mask's own
// extents, 8 x 8 tiles).
struct MaskSummary {
  int batches, heads, row_tiles, key_tiles;
};
inline MaskSummary mask_summary(constant AttentionParams& p) {
  MaskSummary s;
  s.batches = mfs_mask_extent(p.mask_batch_stride, p.batch);
  s.heads = mfs_mask_extent(p.mask_head_stride, p.heads_q);
  s.row_tiles = mfs_mask_tiles_along(p.mask_row_stride, p.seqlen_q);
  s.key_tiles = mfs_mask_tiles_along(p.mask_key_stride, p.seqlen_k);
  return s;
}
// Entry of summary tile (row tile, key tile) of sequence b, q head h (broadcast dimensions: 0).
inline long mask_tile_index(const MaskSummary s, int b, int h, int row_tile, int key_tile) {
  const int bb = s.batches > 1 ? b : 0;
  const int hh = s.heads > 1 ? h : 0;
  return (((long)bb * s.heads + hh) * s.row_tiles + min(row_tile, s.row_tiles - 1)) * s.key_tiles +
         min(key_tile, s.key_tiles - 1);
}

// The state of the mask over rows [row_lo, row_hi) x keys [key_lo, key_hi) (non-empty, within
// the sequence): the merge of the summary tiles that cover it (one when the range is one aligned
// 8 x 8 tile; ranges that straddle tiles merge up to four per 8 x 8).
inline int mask_range_state(const device uchar* tiles, const MaskSummary s, int b, int h,
                            int row_lo, int row_hi, int key_lo, int key_hi) {
  const int rt_end = min((row_hi - 1) / MFS_MASK_TILE, s.row_tiles - 1);
  const int kt_end = min((key_hi - 1) / MFS_MASK_TILE, s.key_tiles - 1);
  const int rt_lo = min(row_lo / MFS_MASK_TILE, rt_end);
  const int kt_lo = min(key_lo / MFS_MASK_TILE, kt_end);
  int state = tiles[mask_tile_index(s, b, h, rt_lo, kt_lo)];
  for (int rt = rt_lo; rt <= rt_end; ++rt) {
    for (int kt = kt_lo; kt <= kt_end; ++kt) {
      state = merge_mask_tile_states(state, tiles[mask_tile_index(s, b, h, rt, kt)]);
    }
  }
  return state;
}

// ---- the prefill: one SIMD-group's 8 rows against a key tile's 8-key chunks ----------------------
// Kept narrow on purpose (registers, issue 17's mask corner): a SIMD-group's 8 rows are one
// aligned summary row tile, so its chunk states need one pointer into the summary, found per key
// tile (nothing of the mask is held across the key loop), and the states of a tile's chunks are
// two bits each in one word.

// Bits 2j, 2j + 1: the MaskTileState of chunk j of the tile (kMaskTileClosed: no product, no
// read; kMaskTileMixed: read value by value; kMaskTileOpen: no read).
using MaskChunks = uint;

// The summary entries of the row tile holding rows [row_lo, row_lo + 8) (row_lo a multiple of
// MFS_MASK_TILE) of sequence b, q head h: entry kt is that row tile's key tile kt.
inline const device uchar* mask_row_tiles(const device uchar* tiles, constant AttentionParams& p,
                                          int b, int h, int row_lo) {
  return tiles + mask_tile_index(mask_summary(p), b, h, row_lo / MFS_MASK_TILE, 0);
}

// The states of the 8-key chunks of keys [k0, k0 + kn) for one summary row tile (row_tiles
// from mask_row_tiles): a chunk merges the (at most two) key tiles it straddles.
template <int KC>
inline MaskChunks mask_chunks(const device uchar* row_tiles, constant AttentionParams& p, int k0,
                              int kn) {
  const int last = mfs_mask_tiles_along(p.mask_key_stride, p.seqlen_k) - 1;
  MaskChunks c = 0u;
#pragma unroll
  for (int j = 0; j < KC; ++j) {
    if (j * 8 >= kn) break;
    const int lo = min((k0 + j * 8) / MFS_MASK_TILE, last);
    const int hi = min((min(k0 + j * 8 + 8, k0 + kn) - 1) / MFS_MASK_TILE, last);
    const int state = merge_mask_tile_states(row_tiles[lo], row_tiles[hi]);
    c |= (uint)state << (2 * j);
  }
  return c;
}
inline uint mask_chunk_state(const MaskChunks c, int j) { return (c >> (2 * j)) & 3u; }
inline bool mask_chunk_closed(const MaskChunks c, int j) {
  return mfs_mask_kind != kNoMask && mask_chunk_state(c, j) == (uint)kMaskTileClosed;
}
// Every chunk of [j_begin, j_end) closed (j_begin < j_end).
inline bool mask_chunks_all_closed(const MaskChunks c, int j_begin, int j_end) {
  const uint closed = c & ~(c >> 1) & 0x55555555u;  // bit 2j: state 1 (kMaskTileClosed)
  const uint want = ((1u << (2 * j_end)) - (1u << (2 * j_begin))) & 0x55555555u;
  return (closed & want) == want;
}

// The mask applied to a SIMD-group's log2-domain logits of a key tile (sf[j] holds keys
// k0 + 8j + fc, + 1 of this lane's row, sequence b, q head h): closed chunks and chunks outside
// [j_begin, j_end) become kMaskedScore, mixed ones read the lane's two values and take their bias
// (mask_biased, after the scale as torch; in log2 units), open ones are left as they are.
// Returns the lane's new maximum.
template <int KC>
inline float mask_scores(thread simdgroup_float8x8 (&sf)[KC], const MaskChunks c,
                         const device uchar* mask, constant AttentionParams& p, int b, int h,
                         int row, bool row_valid, int seqlen_k, int k0, int fc, int j_begin,
                         int j_end) {
  float tile_max = kMaskedScore;
#pragma unroll
  for (int j = 0; j < KC; ++j) {
    const bool closed = j < j_begin || j >= j_end || mask_chunk_closed(c, j);
    const bool mixed = mask_chunk_state(c, j) == (uint)kMaskTileMixed;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float x = sf[j].thread_elements()[e];
      const int key = k0 + j * 8 + fc + e;
      if (closed) {
        x = kMaskedScore;
      } else if (mixed && row_valid && key < seqlen_k && !is_masked_score(x)) {
        MSL_SIM_COUNT("mask_values_read", 1);
        const MaskValue m = mask_value(mask, mask_offset(p, b, h, row, key));
        // A removed key's sentinel is added, as torch's math path adds -inf: a NaN score stays NaN.
        x = mask_biased(x, m.closes ? kMaskedScore : m.bias * MFS_LOG2E);
      }
      sf[j].thread_elements()[e] = x;
      tile_max = max(tile_max, x);
    }
  }
  return tile_max;
}

// ---- the backward: 8 x 8 blocks of owned x streamed rows ------------------------------------------

// The states of a grid of 8 x 8 blocks, 2 bits each (block n at bits 2n, 2n + 1).
inline uint mask_block_state(uint states, int n) { return (states >> (2 * n)) & 3u; }

// The value of (row, key) in a block of state `state`: closed and open blocks read nothing.
inline MaskValue mask_value_in_block(uint state, const device uchar* mask,
                                     constant AttentionParams& p, int b, int h, int row, int key) {
  MaskValue m;
  m.closes = state == kMaskTileClosed;
  m.bias = 0.0f;
  if (state == kMaskTileMixed) {
    MSL_SIM_COUNT("mask_values_read", 1);
    m = mask_value(mask, mask_offset(p, b, h, row, key));
  }
  return m;
}
