// The per-call summary of torch's attn_mask (common/metal_mask_tiles.h): one thread per 8 x 8
// tile of the mask's own extents reads its values once and writes their MaskTileState
// (attention_semantics.h), so that the attention kernels skip closed tiles and read no mask in
// open ones. Planned (first launch of a masked call's encoder) by metal_launch_plan.cpp and
// metal_backward_plan.cpp; grid (key tiles / MFS_MASK_SUMMARY_THREADS, row tiles, batches x heads).
#include "attention_mask_tiles.h"

[[kernel, max_total_threads_per_threadgroup(MFS_MASK_SUMMARY_THREADS)]] void mfs_mask_tiles(
    const device uchar* mask [[buffer(MFS_BUF_MASK)]],
    device uchar* tiles [[buffer(MFS_BUF_MASK_TILES)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]]) {
  const MaskSummary s = mask_summary(p);
  const int key_tile = (int)tg.x * MFS_MASK_SUMMARY_THREADS + (int)tid;
  if (key_tile >= s.key_tiles) return;
  const int row_tile = (int)tg.y;
  const int b = (int)tg.z / s.heads;
  const int h = (int)tg.z % s.heads;
  // The tile's values: 8 rows (one where the mask broadcasts over rows) x 8 keys (likewise).
  const int r0 = row_tile * MFS_MASK_TILE;
  const int r1 = min(p.mask_row_stride != 0 ? r0 + MFS_MASK_TILE : 1, p.seqlen_q);
  const int k0 = key_tile * MFS_MASK_TILE;
  const int k1 = min(p.mask_key_stride != 0 ? k0 + MFS_MASK_TILE : 1, p.seqlen_k);
  int state = kMaskTileOpen;  // a tile without values (an empty sequence) is never read
  bool first = true;
  for (int row = r0; row < r1; ++row) {
    const long row_at = mask_offset(p, b, h, row, 0);
    for (int key = k0; key < k1; ++key) {
      const int v = mask_value_tile_state(mask_value(mask, row_at + (long)key * p.mask_key_stride));
      state = first ? v : merge_mask_tile_states(state, v);
      first = false;
    }
  }
  tiles[mask_tile_index(s, b, h, row_tile, key_tile)] = (uchar)state;
}
