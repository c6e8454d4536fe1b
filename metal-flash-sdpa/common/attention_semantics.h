// What a score is and which keys a query sees: written once, read by C++ and MSL alike.
//
// Only scalar functions of ints and floats live here (no pointers, so no address spaces), so the
// same text compiles as C++ for the cpu backend and as MSL for the Metal kernels. Kernels may
// vectorise around these functions but must not restate their rules.
#pragma once

#ifdef __METAL_VERSION__
#include <metal_stdlib>
#define MFS_TANH(x) metal::precise::tanh(x)
#else
#include <cmath>
#define MFS_TANH(x) std::tanh(x)
#endif

// Half-open range [begin, end) of key positions visible to one query row.
struct KeyRange {
  int begin;
  int end;
};

// Query `row` of a sequence with `seqlen_q` queries and `seqlen_k` keys sits at key position
// row + seqlen_k - seqlen_q (bottom-right alignment). A window of -1 is unbounded; causal is
// window_right = 0. The range may be empty (end <= begin): that row outputs zeros, lse = -inf.
inline KeyRange visible_keys(int row, int seqlen_q, int seqlen_k, int window_left,
                             int window_right) {
  int diagonal = row + seqlen_k - seqlen_q;
  KeyRange range;
  range.begin = 0;
  range.end = seqlen_k;
  if (window_left >= 0 && diagonal - window_left > range.begin) range.begin = diagonal - window_left;
  if (window_right >= 0 && diagonal + window_right + 1 < range.end) {
    range.end = diagonal + window_right + 1;
  }
  return range;
}

// The keys visible to any row of the query tile [row_begin, row_end): what a tiled kernel must
// visit. Rows' ranges move monotonically with the row, so the union is the outer hull.
inline KeyRange visible_keys_for_rows(int row_begin, int row_end, int seqlen_q, int seqlen_k,
                                      int window_left, int window_right) {
  KeyRange first = visible_keys(row_begin, seqlen_q, seqlen_k, window_left, window_right);
  KeyRange last = visible_keys(row_end - 1, seqlen_q, seqlen_k, window_left, window_right);
  KeyRange hull;
  hull.begin = first.begin;
  hull.end = last.end;
  return hull;
}

// softcap > 0: score <- softcap * tanh(score / softcap), on the scaled score, before any bias or
// mask, so masked keys stay at -inf.
inline float apply_softcap(float scaled_score, float softcap) {
  return softcap > 0.0f ? softcap * MFS_TANH(scaled_score / softcap) : scaled_score;
}

// ALiBi: score <- score - slope * |distance from the query's diagonal position|.
inline float alibi_bias(float slope, int row, int key, int seqlen_q, int seqlen_k) {
  int distance = row + seqlen_k - seqlen_q - key;
  if (distance < 0) distance = -distance;
  return -slope * (float)distance;
}

#undef MFS_TANH
