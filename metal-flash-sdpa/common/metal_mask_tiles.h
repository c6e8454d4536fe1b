// The numbers the Metal kernels and their plans agree on for torch's attn_mask (read by C++ and
// MSL, like metal_kernel_config.h): buffer and function-constant indices, and the shape of the
// per-call tile summary.
//
// The summary: one byte per 8 query rows x 8 keys of the mask's own extents (a dimension the
// mask broadcasts over, stride 0, has extent 1), the state of those values by
// attention_semantics.h (kMaskTileOpen / Closed / Mixed), laid out [batches][heads][row tiles]
// [key tiles]. 8 x 8 is the MMA fragment: the prefill's SIMD-group owns 8 rows and multiplies
// 8-key chunks, the backward's products are 8 x 8 blocks, so every kernel skips or reads whole
// summary tiles whatever its own tile sizes. Computed once per call by mfs_mask_tiles
// (attention_mask_summary.metal), before the attention kernels of the same encoder.
#pragma once

#include "attention_params.h"

#define MFS_BUF_MASK 23        // attn_mask, bound at its storage offset (any strides)
#define MFS_BUF_MASK_TILES 24  // the summary (uint8), scratch of the call
#define MFS_BUF_DMASK 25       // d loss / d attn_mask: fp32 [batch, heads_q, seqlen_q, seqlen_k]

#define MFS_FC_MASK_KIND 12  // int: AttentionMaskKind (kNoMask: no mask is read)
#define MFS_FC_MASK_GRAD 13  // bool: the backward writes the mask's gradient (kMaskGrad)

#define MFS_MASK_TILE 8             // rows and keys of one summary tile
#define MFS_MASK_SUMMARY_THREADS 64 // one thread per summary tile

// Summary tiles along one dimension of `extent` positions with element stride `stride`: one when
// the mask broadcasts over it.
constexpr int mfs_mask_tiles_along(mfs_i64 stride, int extent) {
  return stride != 0 ? (extent + MFS_MASK_TILE - 1) / MFS_MASK_TILE : 1;
}
// Entries along one of the mask's outer dimensions (batch, heads): one when broadcast.
constexpr int mfs_mask_extent(mfs_i64 stride, int extent) { return stride != 0 ? extent : 1; }
