// The per-tile summary of one call's attn_mask, computed once per call (one read of the mask):
// for every query row the mask really has (broadcast rows share one) and every kMaskTileKeys
// keys, whether the tile is open, closed or mixed. Kernels skip closed tiles and read no mask in
// open ones. Shared by the cpu forward and backward.
#pragma once

#include <ATen/ATen.h>

#include "../common/attention_inputs.h"
#include "mask_reader.h"

struct MaskTiles {
  MaskReader reader;
  at::Tensor states;  // uint8 [mask batch, mask heads, mask rows, key tiles] (own extents)
  const char* values = nullptr;
  int64_t batch_stride = 0, head_stride = 0, row_stride = 0;  // bytes, 0 when broadcast
  int64_t state_batch = 0, state_head = 0, state_row = 0;     // entries, 0 when broadcast

  // The mask row of query `row` of sequence b, head h (q head).
  MaskRow row(int b, int h, int row) const {
    if (!reader.present()) return MaskRow{nullptr, nullptr};
    return MaskRow{values + b * batch_stride + h * head_stride + row * row_stride,
                   states.data_ptr<uint8_t>() + b * state_batch + h * state_head + row * state_row};
  }
};

// An empty summary (reader.present() false) when the call has no mask.
MaskTiles summarize_mask(const AttentionParams& p, const AttentionTensors& t);
