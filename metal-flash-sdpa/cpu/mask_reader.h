// torch's attn_mask as the cpu tile kernels read it: one query row's mask values and the states of
// its key tiles (common/attention_semantics.h's MaskTileState), summarised once per call by
// mask_tiles.cpp. Included by tile_job.h, before any target pragma (baseline ISA).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "../common/attention_params.h"
#include "../common/attention_semantics.h"

// Keys per tile of the summary: the portable forward's key block and the backward's key tile
// (both static_assert it), so a kernel's block is one summary tile.
constexpr int kMaskTileKeys = 64;

// One query row (of one sequence and one head) of the mask.
struct MaskRow {
  const char* values;    // the row's value for key 0
  const uint8_t* tiles;  // the state of the row's key tile 0
};

struct MaskReader {
  int kind = kNoMask;      // AttentionMaskKind
  int64_t key_stride = 0;  // bytes between keys' values (0: broadcast along keys)
  int tile_stride = 0;     // entries between tiles' states (0: broadcast along keys)

  bool present() const { return kind != kNoMask; }

  // The state of key tile `tile` (keys [tile * kMaskTileKeys, ...)) of the row.
  int tile_state(const MaskRow& row, int tile) const {
    return present() ? row.tiles[int64_t(tile) * tile_stride] : int(kMaskTileOpen);
  }

  // s[j] = mask_biased(s[j], bias of key k0 + j) for j in [0, n): a loop per kind, so that a
  // mask contiguous along keys is read with vector loads.
  template <typename Fn>
  static void each(const char* at, int64_t stride, int n, Fn&& fn) {
    for (int j = 0; j < n; ++j) fn(j, at + j * stride);
  }
  void add_biases(const MaskRow& row, int k0, int n, float* s) const {
    const char* at = row.values + int64_t(k0) * key_stride;
    switch (kind) {
      case kMaskBool:
        if (key_stride == 1) {
          const uint8_t* m = reinterpret_cast<const uint8_t*>(at);
          // Added, not assigned: a NaN score stays NaN at a removed key, as in torch's math path.
          for (int j = 0; j < n; ++j) s[j] = mask_biased(s[j], m[j] ? 0.0f : -INFINITY);
          return;
        }
        return each(at, key_stride, n, [&](int j, const char* p) {
          s[j] = mask_biased(s[j], boolean_mask_bias(*reinterpret_cast<const uint8_t*>(p) != 0));
        });
      case kMaskFloat32:
        if (key_stride == 4) {
          const float* m = reinterpret_cast<const float*>(at);
          for (int j = 0; j < n; ++j) s[j] = mask_biased(s[j], m[j]);
          return;
        }
        return each(at, key_stride, n, [&](int j, const char* p) {
          s[j] = mask_biased(s[j], *reinterpret_cast<const float*>(p));
        });
      default:
        for (int j = 0; j < n; ++j) s[j] = mask_biased(s[j], bias(row, k0 + j));
    }
  }

  // Asks the cache for the row's values of keys [k0, k0 + n) (the next block's, read later):
  // a kernel reads many rows' masks at once, too many streams for the hardware prefetcher.
  void prefetch(const MaskRow& row, int k0, int n) const {
    if (!present() || key_stride == 0) return;
    const char* at = row.values + int64_t(k0) * key_stride;
    for (int64_t o = 0; o < int64_t(n) * key_stride; o += 64) __builtin_prefetch(at + o);
  }

  // The bias of key `key` of the row (attention_semantics.h: boolean_mask_bias, or the value).
  float bias(const MaskRow& row, int key) const {
    const char* at = row.values + int64_t(key) * key_stride;
    switch (kind) {
      case kMaskBool: return boolean_mask_bias(*reinterpret_cast<const uint8_t*>(at) != 0);
      case kMaskFloat32: return *reinterpret_cast<const float*>(at);
      case kMaskFloat16: return float(*reinterpret_cast<const c10::Half*>(at));
      case kMaskBFloat16: return float(*reinterpret_cast<const c10::BFloat16*>(at));
      default: return 0.0f;
    }
  }
};
