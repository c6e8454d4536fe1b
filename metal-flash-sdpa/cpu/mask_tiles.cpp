#include "mask_tiles.h"

#include <ATen/Parallel.h>

#include <algorithm>

MaskTiles summarize_mask(const AttentionParams& p, const AttentionTensors& t) {
  MaskTiles m;
  if (p.mask_kind == kNoMask || !t.attn_mask) return m;
  const at::Tensor& mask = *t.attn_mask;
  const int64_t esize = mask.element_size();
  m.reader.kind = p.mask_kind;
  m.reader.key_stride = p.mask_key_stride * esize;
  m.values = static_cast<const char*>(mask.data_ptr());
  m.batch_stride = p.mask_batch_stride * esize;
  m.head_stride = p.mask_head_stride * esize;
  m.row_stride = p.mask_row_stride * esize;
  // The mask's own extents: a broadcast dimension (stride 0) is summarised once.
  const int64_t nb = p.mask_batch_stride ? mask.size(0) : 1;
  const int64_t nh = p.mask_head_stride ? mask.size(1) : 1;
  const int64_t nr = p.mask_row_stride ? mask.size(2) : 1;
  const int64_t keys = p.mask_key_stride ? mask.size(3) : std::min<int64_t>(mask.size(3), 1);
  const int64_t tiles = std::max<int64_t>(1, (keys + kMaskTileKeys - 1) / kMaskTileKeys);
  m.reader.tile_stride = p.mask_key_stride ? 1 : 0;
  m.states = at::empty({nb, nh, nr, tiles}, mask.options().dtype(at::kByte).device(at::kCPU));
  m.state_row = p.mask_row_stride ? tiles : 0;
  m.state_head = p.mask_head_stride ? nr * tiles : 0;
  m.state_batch = p.mask_batch_stride ? nh * nr * tiles : 0;
  uint8_t* states = m.states.data_ptr<uint8_t>();
  const MaskReader reader = m.reader;
  at::parallel_for(0, nb * nh * nr, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / (nh * nr), h = (i / nr) % nh, r = i % nr;
      const MaskRow row{m.values + b * m.batch_stride + h * m.head_stride + r * m.row_stride,
                        nullptr};
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t k0 = tile * kMaskTileKeys, k1 = std::min(keys, k0 + kMaskTileKeys);
        int state = k0 < k1 ? mask_value_state(reader.bias(row, int(k0))) : int(kMaskTileOpen);
        for (int64_t j = k0 + 1; j < k1 && state != kMaskTileMixed; ++j) {
          state = merge_mask_tile_states(state, mask_value_state(reader.bias(row, int(j))));
        }
        states[i * tiles + tile] = uint8_t(state);
      }
    }
  });
  return m;
}
