// What a score is and which keys a query sees: written once, read by C++ and MSL alike.
//
// Only scalar functions of ints and floats live here (no pointers, so no address spaces), so the
// same text compiles as C++ for the cpu backend and as MSL for the Metal kernels. Kernels may
// vectorise around these functions but must not restate their rules.
#pragma once

#ifdef __METAL_VERSION__
#include <metal_stdlib>
#define MFS_TANH(x) metal::precise::tanh(x)
#define MFS_EXP(x) metal::precise::exp(x)
#define MFS_LOG(x) metal::precise::log(x)
#define MFS_MAX(a, b) metal::max(a, b)
#define MFS_RULE inline
#else
#include <algorithm>
#include <cmath>
#define MFS_TANH(x) std::tanh(x)
#define MFS_EXP(x) std::exp(x)
#define MFS_LOG(x) std::log(x)
#define MFS_MAX(a, b) std::max(a, b)
// The rules' templates are inlined into their callers, so that a kernel compiled for a wider
// instruction set (a target pragma) computes them in its own registers.
#define MFS_RULE __attribute__((always_inline)) inline
#endif

// ---- the score of a removed key ----
//
// kMaskedScore is the score of a removed key (outside the window, a false boolean mask, a -inf
// bias) and the running max of a row that has seen no key; is_masked_score() tells it from a real
// score (and a no-key lse from a real one). The cpu keeps IEEE -inf. Metal does not: kernel-builder
// compiles with `metal -O2`, and fast math is Apple's default (-ffast-math; MTLMathMode.fast,
// unlike .relaxed, does not honour Inf and NaN), so the compiler may assume that no operand is
// infinite and fold any arithmetic or comparison with an infinity. There it is a finite value far
// below any score a kernel computes from finite inputs; the kernels turn it into -inf only as the
// bits they store in lse (attention_kernel_common.h's store_lse), as docs/API.md promises.
#ifdef __METAL_VERSION__
static constant constexpr const float kMaskedScore = -1.0e30f;
// Anything at or below this is kMaskedScore (or what exp rescaling left of it).
static constant constexpr const float kMaskedScoreAtMost = -1.0e29f;
// A score of +inf (a sink of +inf) in the kernels: finite for the same reason, and so large that
// it takes the whole softmax; anything at or above kScoreTakesAllAtLeast is it.
static constant constexpr const float kScoreTakesAll = 2.0e38f;
static constant constexpr const float kScoreTakesAllAtLeast = 1.0e38f;
#else
constexpr float kMaskedScore = -INFINITY;
constexpr float kMaskedScoreAtMost = -INFINITY;
constexpr float kScoreTakesAll = INFINITY;
constexpr float kScoreTakesAllAtLeast = INFINITY;
#endif
inline bool is_masked_score(float x) { return x <= kMaskedScoreAtMost; }
inline bool score_takes_all(float x) { return x >= kScoreTakesAllAtLeast; }

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

// The query rows of a sequence that see at least one key of [key_begin, key_end): the inverse of
// visible_keys, what a key-tile pass of the backward must visit. Empty when end <= begin.
inline KeyRange visible_queries_for_keys(int key_begin, int key_end, int seqlen_q, int seqlen_k,
                                         int window_left, int window_right) {
  // Row r sees key j iff diagonal - window_left <= j <= diagonal + window_right, diagonal =
  // r + seqlen_k - seqlen_q (each bound only when its window is >= 0).
  const int shift = seqlen_k - seqlen_q;
  KeyRange rows;
  rows.begin = 0;
  rows.end = seqlen_q;
  if (window_right >= 0 && key_begin - window_right - shift > rows.begin) {
    rows.begin = key_begin - window_right - shift;
  }
  if (window_left >= 0 && key_end - 1 + window_left - shift + 1 < rows.end) {
    rows.end = key_end - 1 + window_left - shift + 1;
  }
  if (key_end <= key_begin || rows.end < rows.begin) rows.end = rows.begin;
  return rows;
}

// ---- the score rules over any value type ----
//
// V is float, or in the cpu kernels a vector of floats (GCC/clang vector types such as __m512,
// whose operators work lane by lane and broadcast a float operand). `Math` gives what operators
// cannot: Math::tanh(V). The scalar functions below are these templates at V = float; vectorised
// kernels instantiate them with their own V and Math rather than restate the rules.

struct ScalarMath {
  static float tanh(float x) { return MFS_TANH(x); }
};

// softcap > 0: score <- softcap * tanh(score / softcap), on the scaled score, before any bias or
// mask, so masked keys stay at -inf.
template <class Math, typename V>
MFS_RULE V softcapped(V scaled_score, float softcap) {
  return softcap * Math::tanh(scaled_score / softcap);
}

// d(capped score) / d(scaled score) for softcap > 0, from the capped score: 1 - tanh^2.
template <typename V>
MFS_RULE V softcap_slope(V capped_score, float softcap) {
  const V t = capped_score / softcap;
  return 1.0f - t * t;
}

// ALiBi: score - slope * |distance|, distance = the query's diagonal position - the key.
template <typename V, typename S>
MFS_RULE V alibi_biased(V score, S slope, V abs_distance) {
  return score - slope * abs_distance;
}

// The same rules at V = float (used by the MSL kernels and the scalar loops of the cpu kernels).
inline float apply_softcap(float scaled_score, float softcap) {
  return softcap > 0.0f ? softcapped<ScalarMath>(scaled_score, softcap) : scaled_score;
}

// d(capped score) / d(scaled score), from the capped score: 1 - tanh^2 (1 without softcap).
inline float softcap_derivative(float capped_score, float softcap) {
  return softcap > 0.0f ? softcap_slope(capped_score, softcap) : 1.0f;
}

inline float alibi_bias(float slope, int row, int key, int seqlen_q, int seqlen_k) {
  int distance = row + seqlen_k - seqlen_q - key;
  if (distance < 0) distance = -distance;
  return alibi_biased(0.0f, slope, (float)distance);
}

// ---- finishing a row of the forward (online softmax state -> output scale and lse) ----
//
// NaN and Inf (docs/API.md, "NaN and Inf"): a score is computed from q, k, scale, softcap and
// ALiBi in IEEE arithmetic; a masked key's score is -inf whatever its inputs, so it never reaches
// the row. The running max m skips NaN scores (maxps, std::max and Metal's max all can), so:
//   every visible score -inf (or no visible key): l == 0, the row saw no key;
//   a visible score NaN: its exp(NaN - m) makes l and the accumulator NaN;
//   a visible score +inf: m = +inf and exp(inf - inf) makes l and the accumulator NaN.
// The value subtracted from the scores before exp: the running max, or 0 while it is
// kMaskedScore (then exp(-inf - 0) = 0 rather than exp(-inf - -inf) = NaN; in Metal, exp of the
// finite sentinel minus 0 underflows to 0 rather than being exp(0) = 1).
inline float softmax_reference(float running_max) {
  return is_masked_score(running_max) ? 0.0f : running_max;
}

// A row that has seen keys with running max m and running sum l = sum exp(score - m) is finished
// as out = accumulator * inv, lse = log-sum-exp of its logits. A sink joins the denominator only
// (its value is not added to the output). A row that sees no key (`sees_keys` false: the mask)
// outputs zeros and lse -inf, with or without a sink: inv = 0. A row whose every visible score
// is -inf (l == 0) does too without a sink; with one, the sink takes the whole softmax: out 0,
// lse = sink. A row with a NaN or +inf score (l NaN) outputs NaN;
// its lse is +inf if a score or the sink is +inf, else NaN. A sink of +inf takes the whole
// softmax: out 0, lse +inf; a NaN sink makes out and lse NaN.
struct RowFinish {
  float inv;  // multiplies the unnormalised output accumulator
  float lse;  // natural log
};

inline RowFinish finish_row(float m, float l, bool sees_keys, bool has_sink, float sink) {
  RowFinish f;
  if (!sees_keys || l == 0.0f) {
    const bool sink_alone = sees_keys && has_sink;
    f.inv = sink_alone && sink != sink ? sink : 0.0f;  // a NaN sink: NaN
    f.lse = sink_alone ? sink : kMaskedScore;
    return f;
  }
  if (!(l > 0.0f)) {  // NaN: a NaN or +inf score
    f.inv = l;
    f.lse = m == INFINITY || (has_sink && sink == INFINITY) ? INFINITY : l;
    return f;
  }
  f.inv = 1.0f / l;
  f.lse = m + MFS_LOG(l);
  if (has_sink) {
    if (sink == INFINITY) {
      f.inv = 0.0f;
      f.lse = INFINITY;
      return f;
    }
    const float mf = MFS_MAX(m, sink);
    const float scale = MFS_EXP(m - mf);
    const float denom = l * scale + MFS_EXP(sink - mf);  // NaN for a NaN sink
    f.inv = scale / denom;
    f.lse = mf + MFS_LOG(denom);
  }
  return f;
}

// ---- the backward pass (FlashAttention-2), per row and per (row, key) ----

// A row whose lse is -inf (kMaskedScore) saw no key: its output is zero and nothing flows back
// through it. A NaN or +inf lse is not that: its row's output is NaN, and NaN flows back
// (D = rowsum(dO * O)).
inline bool row_saw_no_key(float lse) { return is_masked_score(lse); }

// The probability of a visible key (or of the sink, given its logit) from the row's lse, which
// includes the sink. 0 for a row that saw no key.
inline float probability(float logit, float lse) {
  return row_saw_no_key(lse) ? 0.0f : MFS_EXP(logit - lse);
}

// dS = P * (dP - D), with dP = dO . v and D = rowsum(dO * O): the gradient of the loss with
// respect to the score (after softcap and ALiBi). Multiply by softcap_derivative and the scale
// to reach q.k.
inline float score_gradient(float p, float dp, float row_d) { return p * (dp - row_d); }

// The contribution of one row to d s_aux[h]: the sink's logit only enters the denominator, so
// d out / d sink = -p_sink * out, and d loss / d sink = -p_sink * rowsum(dO * O).
// A sink of +inf has lse +inf and probability 1 (exp(inf - inf) would be NaN).
inline float sink_gradient(float sink, float lse, float row_d) {
  const bool sink_takes_all = score_takes_all(sink) && score_takes_all(lse);
  const float p_sink = sink_takes_all ? 1.0f : probability(sink, lse);
  return -p_sink * row_d;
}

// ---- attn_mask (torch's scaled_dot_product_attention) ----
//
// Every mask value is a bias on the score: a floating mask is added to the score after the scale
// (and after softcap and ALiBi, which torch's SDPA never combines with it); a boolean mask keeps a
// key where it is true and removes it (-inf) where it is false. A row left with no key outputs
// zeros and lse -inf, as torch's math path returns zeros for a fully masked row.
inline float boolean_mask_bias(bool keep) { return keep ? 0.0f : kMaskedScore; }

template <typename V, typename B>
MFS_RULE V mask_biased(V score, B bias) {
  return score + bias;
}

// A finite floating mask value as the kernels add it. The cpu adds it as it is, as torch does.
// Metal raises it to -2^95 (kLargestMaskBias) at least: there a bias of torch.finfo(float32).min
// (what transformers writes for padding) would overflow to -inf in log2 units, below
// kMaskedScore, and its key would count as removed; raised, it stays a score, so torch's answers
// hold: in a row where every key has such a bias all scores round to one value (a score is far
// below an ulp there) and the softmax is uniform, the mean of V; in a row with any ordinary score
// such a key's probability is exp(-4e28) = 0. (Distinct biases below -2^95 in one row tie here,
// where torch keeps the largest.) -2^95 * log2(e) = -5.7e28 stays above kMaskedScoreAtMost, and
// times ln(2) rounds back to -2^95: the backward's logit and lse agree bit for bit, as on the cpu.
// A NaN stays NaN (the comparison is false), and so does +inf (its score makes the row NaN).
#ifdef __METAL_VERSION__
static constant constexpr const float kLargestMaskBias = 39614081257132168796771975168.0f;  // 2^95
inline float mask_bias_in_range(float bias) {
  return bias < -kLargestMaskBias ? -kLargestMaskBias : bias;
}
#else
inline float mask_bias_in_range(float bias) { return bias; }
#endif

// A tile of mask values (rows x keys), summarised once per call so that kernels skip closed
// tiles (no product, no read) and read no mask in open ones.
enum MaskTileState {
  kMaskTileOpen = 0,    // every bias is 0 (every key kept): the mask need not be read
  kMaskTileClosed = 1,  // every bias is -inf (every key removed): the tile is invisible
  kMaskTileMixed = 2,   // read the mask value by value
};

inline int mask_value_state(float bias) {
  return bias == 0.0f ? kMaskTileOpen : (is_masked_score(bias) ? kMaskTileClosed : kMaskTileMixed);
}

// The state of the union of two tiles' values.
inline int merge_mask_tile_states(int a, int b) { return a == b ? a : kMaskTileMixed; }

// d loss / d bias of a kept key is the score gradient dS = P (dP - D) itself (score_gradient):
// the bias enters the logit with slope 1.

#undef MFS_TANH
#undef MFS_EXP
#undef MFS_LOG
#undef MFS_MAX
#undef MFS_RULE
