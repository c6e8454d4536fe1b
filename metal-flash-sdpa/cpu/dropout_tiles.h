// The dropout mask as the cpu tile kernels apply it: the factor of every (row, key) entry,
// 1 / (1 - p) if kept and 0 if dropped, drawn from common/dropout_stream.h's stream.
// Included by each tile kernel after its target pragma, with internal linkage, so every file's
// copy is compiled for its own instruction set: the draws of 16 blocks run as one loop over
// lanes, which the compiler turns into vector code (the 32 x 32 -> 64-bit products of Philox
// become vpmuludq on AVX2, vpmullq on AVX-512). The AVX-512 forward's layout (16 rows per
// vector) has its own, hand-vectorised draw: dropout_avx512.h.
#pragma once

#include "dropout_rule.h"  // and dropout_stream.h, compiled for the baseline (inlined here)

namespace {

constexpr int kDropoutLanes = 16;  // blocks drawn per vector loop

// z[j] = the factor of keys key_begin + j of one row, j < count (rows laid out along keys: the
// portable forward, the few-rows forward, the backward). 64 keys (16 blocks) per draw, written in
// key order (the 4 words of each block interleaved), then compared in one vector loop: 3.5x
// faster than picking each key's word from the lanes.
inline void dropout_row_factors(const DropoutRule& d, DropoutRow row, int key_begin, int count,
                                float* z) {
  uint32_t draws[4 * kDropoutLanes];
  const uint32_t threshold = d.threshold;
  const float scale = d.scale;
  const int end = key_begin + count;
  for (int k = key_begin & ~3; k < end; k += 4 * kDropoutLanes) {
    for (int i = 0; i < kDropoutLanes; ++i) {
      const DropoutBlock b =
          dropout_block(d.seed_lo, d.seed_hi, uint32_t(k / 4 + i), row.token, row.head, d.offset);
      draws[4 * i + 0] = b.word[0];
      draws[4 * i + 1] = b.word[1];
      draws[4 * i + 2] = b.word[2];
      draws[4 * i + 3] = b.word[3];
    }
    // keys [lo, hi) of this draw: those in [key_begin, end)
    const int lo = std::max(k, key_begin), hi = std::min(k + 4 * kDropoutLanes, end);
    const uint32_t* draw = draws + (lo - k);
    float* factor = z + (lo - key_begin);
    for (int j = 0; j < hi - lo; ++j) factor[j] = dropout_keeps(draw[j], threshold) ? scale : 0.0f;
  }
}

// p[j] *= the factor of key key_begin + j of one row, j < count.
inline void apply_dropout_row(const DropoutRule& d, DropoutRow row, int key_begin, int count,
                              float* p) {
  float z[4 * kDropoutLanes];
  for (int j0 = 0; j0 < count; j0 += 4 * kDropoutLanes) {
    const int n = std::min(count - j0, 4 * kDropoutLanes);
    dropout_row_factors(d, row, key_begin + j0, n, z);
    for (int j = 0; j < n; ++j) p[j0 + j] *= z[j];
  }
}

}  // namespace
