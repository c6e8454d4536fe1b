// The dropout of one call as the cpu kernels see it (kDropout; the stream is
// common/dropout_stream.h's): the call's seed, offset, keep threshold and scale, and each query
// row's counter words. Included by tile_job.h and backward_job.h before any target pragma:
// plain data and baseline helpers, and dropout_stream.h, whose functions (like
// attention_semantics.h's) are then compiled for the baseline and inline into each ISA's
// kernels. The ISA-compiled code that draws the mask is dropout_tiles.h (dropout_avx512.h).
#pragma once

#include <cstdint>

#include "../common/attention_params.h"
#include "../common/dropout_stream.h"
#include "../common/sequence_bounds.h"

struct DropoutRule {
  bool on;  // kDropout: otherwise nothing is drawn and nothing is scaled
  uint32_t seed_lo, seed_hi, offset;
  uint32_t threshold;  // an entry is kept when its draw is >= threshold
  float scale;         // 1 / (1 - p): the factor of a kept probability
};

inline DropoutRule dropout_rule(const AttentionParams& p) {
  DropoutRule d{};
  d.on = (p.flags & kDropout) != 0;
  if (!d.on) return d;
  d.seed_lo = p.dropout_seed_lo;
  d.seed_hi = p.dropout_seed_hi;
  d.offset = p.dropout_offset;
  d.threshold = p.dropout_threshold;
  d.scale = p.dropout_scale;
  return d;
}

// The counter words of one query row of one head: {key / 4, token, head, offset}.
struct DropoutRow {
  uint32_t token, head;
};

// Row `row` of sequence `b`: its query token is dropout_stream.h's dropout_query_token.
inline DropoutRow dropout_row(const AttentionParams& p, int b, const SequenceBounds& s, int row,
                              int head) {
  return DropoutRow{dropout_query_token((p.flags & kVarlenQ) != 0, s.q_begin, b, p.seqlen_q, row),
                    static_cast<uint32_t>(head)};
}
