// The dropout mask as the cpu tile kernels apply it: the factor of every (row, key) entry, 1 / (1 - p)
// if kept and 0 if dropped, drawn from common/dropout_stream.h's stream (never restated here).
// Included by each tile kernel after its target pragma, with internal linkage, so every file's
// copy is compiled for its own instruction set: the draws of 16 blocks run as one loop over
// lanes, which the compiler turns into vector code (the 32 x 32 -> 64-bit products of Philox
// become vpmuludq on AVX2 and AVX-512).
#pragma once

#include "../common/dropout_stream.h"
#include "dropout_rule.h"

namespace {

constexpr int kDropoutLanes = 16;  // blocks drawn per call of dropout_blocks

// Block counters {key_block[i], token[i], head[i], offset} for 16 lanes i; word w of lane i's
// block goes to words[w][i].
inline void dropout_blocks(const DropoutRule& d, const uint32_t* key_block, const uint32_t* token,
                           const uint32_t* head, uint32_t words[4][kDropoutLanes]) {
  for (int i = 0; i < kDropoutLanes; ++i) {
    const DropoutBlock b = dropout_block(d.seed_lo, d.seed_hi, key_block[i], token[i], head[i], d.offset);
    words[0][i] = b.word[0];
    words[1][i] = b.word[1];
    words[2][i] = b.word[2];
    words[3][i] = b.word[3];
  }
}

inline float dropout_factor(const DropoutRule& d, uint32_t draw) {
  return dropout_keeps(draw, d.threshold) ? d.scale : 0.0f;
}

// z[j] = the factor of keys key_begin + j of one row, j < count (rows laid out along keys: the
// portable forward, the few-rows forward, the backward). 64 keys (16 blocks) per draw.
inline void dropout_row_factors(const DropoutRule& d, DropoutRow row, int key_begin, int count,
                                float* z) {
  uint32_t key_block[kDropoutLanes], token[kDropoutLanes], head[kDropoutLanes];
  uint32_t words[4][kDropoutLanes];
  for (int i = 0; i < kDropoutLanes; ++i) token[i] = row.token, head[i] = row.head;
  const int end = key_begin + count;
  for (int k = key_begin & ~3; k < end; k += 4 * kDropoutLanes) {
    for (int i = 0; i < kDropoutLanes; ++i) key_block[i] = uint32_t(k / 4 + i);
    dropout_blocks(d, key_block, token, head, words);
    // keys k + 4 i + w, those in [key_begin, end)
    const int lo = std::max(k, key_begin), hi = std::min(k + 4 * kDropoutLanes, end);
    for (int key = lo; key < hi; ++key) {
      const int j = key - k;
      z[key - key_begin] = dropout_factor(d, words[j & 3][j >> 2]);
    }
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

// s[j * stride + i] *= the factor of (rows[i], key key0 + j) for 16 rows i and keys j < count
// (rows laid out along a vector: the AVX-512 forward's s^T). One draw per 4 keys of 16 rows.
inline void apply_dropout_columns(const DropoutRule& d, const DropoutRow* rows, int key0,
                                  int count, float* s, int stride) {
  uint32_t key_block[kDropoutLanes], token[kDropoutLanes], head[kDropoutLanes];
  uint32_t words[4][kDropoutLanes];
  for (int i = 0; i < kDropoutLanes; ++i) token[i] = rows[i].token, head[i] = rows[i].head;
  for (int block = key0 >> 2; 4 * block < key0 + count; ++block) {
    for (int i = 0; i < kDropoutLanes; ++i) key_block[i] = uint32_t(block);
    dropout_blocks(d, key_block, token, head, words);
    for (int w = 0; w < 4; ++w) {
      const int j = 4 * block + w - key0;
      if (j < 0 || j >= count) continue;
      float* sj = s + size_t(j) * stride;
      for (int i = 0; i < kDropoutLanes; ++i) sj[i] *= dropout_factor(d, words[w][i]);
    }
  }
}

}  // namespace
