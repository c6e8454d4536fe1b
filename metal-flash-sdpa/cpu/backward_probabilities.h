// P and dS of one block of rows x keys of the backward pass, from the block's products
// S = Q K^T and dP = dO V^T: the rules of attention_semantics.h (softcap, ALiBi, the lse that
// includes the sink, rows that saw no key) and the dropout mask (dropout_tiles.h) applied element
// by element. Shared by every backward tile kernel (backward_tile_kernel.h and the AVX512_BF16
// one); included after the including file's target pragma, with internal linkage, so each file's copy keeps its own instruction set.
#pragma once

#include "dropout_tiles.h"
#include "exp_nonpositive.h"

namespace {

// exp(logit - lse); a key the mask removed (logit -inf) has P = 0 whatever lse is (-inf - -inf
// is NaN). Branch-free (an integer select) so that the loops calling it vectorise.
inline float logit_probability(float logit, float lse) {
  return bits_float(float_bits(exp_nonpositive(logit - lse)) & ~negative_infinity_lanes(logit));
}

// finish_probabilities on keys [k0, k0 + n) of one tile of the mask summary (k0 a multiple of
// kMaskTileKeys, n <= kMaskTileKeys); columns up to `width` are written.
inline void finish_mask_tile(const BackwardJob& job, const BackwardRow* rows, int m, int k0,
                             int n, int width, float* p_block, float* ds_block, int ld) {
  for (int i = 0; i < m; ++i) {
    const BackwardRow& row = rows[i];
    float* p = p_block + size_t(i) * ld;
    float* ds = ds_block + size_t(i) * ld;
    const int lo = std::max(row.key_begin, k0) - k0, hi = std::min(row.key_end, k0 + n) - k0;
    const int mask_state = lo < hi ? job.mask.tile_state(row.mask, k0 / kMaskTileKeys) : kMaskTileClosed;
    if (lo >= hi || row_saw_no_key(row.lse) || mask_state == kMaskTileClosed) {
      std::fill(p, p + width, 0.0f);
      std::fill(ds, ds + width, 0.0f);
      continue;
    }
    for (int j = 0; j < lo; ++j) p[j] = ds[j] = 0.0f;
    for (int j = hi; j < width; ++j) p[j] = ds[j] = 0.0f;
    // Dropout, regenerated as the forward drew it: each entry's factor z (1 / (1 - p) or 0)
    // multiplies dP before dS (the output saw z P) and P after (dV += (z P)^T dO).
    float z[kMaskTileKeys];
    if (job.dropout.on) {
      dropout_row_factors(job.dropout, row.dropout, k0 + lo, hi - lo, z);
      for (int j = lo; j < hi; ++j) ds[j] *= z[j - lo];
    }
    const bool read_mask = mask_state == kMaskTileMixed;
    float bias[kMaskTileKeys];  // the mixed tile's attn_mask biases, read with vector loops
    if (read_mask) {
      std::fill(bias + lo, bias + hi, 0.0f);
      job.mask.add_biases(row.mask, k0 + lo, hi - lo, bias + lo);
    }
    if (job.softcap > 0.0f || job.has_alibi) {
      for (int j = lo; j < hi; ++j) {
        const float capped = apply_softcap(job.scale * p[j], job.softcap);
        float logit = capped + (job.has_alibi ? alibi_bias(row.slope, row.diagonal, k0 + j, 0, 0) : 0.0f);
        if (read_mask) logit = mask_biased(logit, bias[j]);
        const float prob = logit_probability(logit, row.lse);
        const float dlogit = score_gradient(prob, ds[j], row.d);
        p[j] = prob;
        ds[j] = dlogit * softcap_derivative(capped, job.softcap) * job.scale;
        if (row.dmask) row.dmask[k0 + j] = dlogit;  // the bias's slope is 1
      }
    } else if (read_mask || row.dmask) {
      // The same rules without softcap and ALiBi, in loops without calls or float compares, which
      // GCC vectorises for every instruction set (exp_nonpositive.h): a mixed tile's biases
      // (bias[] is 0 in an open one) are one more operand.
      if (!read_mask) std::fill(bias + lo, bias + hi, 0.0f);
      const float scale = job.scale, lse = row.lse, d = row.d;
      for (int j = lo; j < hi; ++j) {
        const float logit = mask_biased(scale * p[j], bias[j]);
        const float prob = logit_probability(logit, lse);
        p[j] = prob;
        ds[j] = score_gradient(prob, ds[j], d);  // d loss / d logit
      }
      if (row.dmask) std::copy(ds + lo, ds + hi, row.dmask + k0 + lo);  // the bias's slope is 1
      for (int j = lo; j < hi; ++j) ds[j] *= scale;
    } else {  // no mask: the same loop without biases
      const float scale = job.scale, lse = row.lse, d = row.d;
      for (int j = lo; j < hi; ++j) {
        const float prob = exp_nonpositive(scale * p[j] - lse);
        p[j] = prob;
        ds[j] = score_gradient(prob, ds[j], d) * scale;
      }
    }
    if (job.dropout.on) {
      for (int j = lo; j < hi; ++j) p[j] *= z[j - lo];
    }
  }
}

// On entry p holds S and ds holds dP of rows [0, m) (job rows rows[0..m)) and keys
// [k0, k0 + n) in columns [0, n), rows `ld` floats apart; columns up to `width` are written.
// On return p holds P and ds the gradient with respect to the raw product q.k (dS times the
// softcap derivative and the scale). Invisible keys, padding keys and rows that saw no key get
// P = dS = 0. k0 is a multiple of kMaskTileKeys; the block may span several tiles of the mask
// summary (a backward key tile is two), each finished with its own state.
inline void finish_probabilities(const BackwardJob& job, const BackwardRow* rows, int m, int k0,
                                 int n, int width, float* p_block, float* ds_block, int ld) {
  // The rows' mask values of the block, one cache line each and far apart: asked for all at
  // once, so that their misses overlap instead of stalling one row after the other.
  for (int i = 0; i < m; ++i) job.mask.prefetch(rows[i].mask, k0, n);
  for (int t = 0; t < width; t += kMaskTileKeys) {
    const int tile_keys = std::max(0, std::min(n - t, kMaskTileKeys));
    finish_mask_tile(job, rows, m, k0 + t, tile_keys, std::min(width - t, kMaskTileKeys),
                     p_block + t, ds_block + t, ld);
  }
}

}  // namespace
