// Dropout in the Metal kernels (MSL only): which (query, head, key) entries of P are dropped,
// drawn from common/dropout_stream.h's stream (the cpu build's), and what a kept probability is
// multiplied by (dropout_scale = 1 / (1 - p)). Only the prefill and the backward include it: the
// launch plan sends every call with dropout there (metal_launch_plan.cpp), never to decode.
// mfs_dropout off (a call without dropout) leaves no draw in the kernels.
#pragma once

#include "attention_kernel_common.h"

#include "../common/dropout_stream.h"

constant bool mfs_dropout [[function_constant(MFS_FC_DROPOUT)]];

// The stream's query token of row `row` of sequence b (dropout_stream.h's rule, with the
// call's function constant).
inline uint dropout_query_token(constant AttentionParams& p, const SequenceRows s, int b,
                                int row) {
  return dropout_query_token(mfs_varlen_q, s.q_begin, b, p.seqlen_q, row);
}

// Word i (0..3) of a block, by selects: a dynamically indexed thread array would live in
// memory, not registers.
inline uint dropout_word(const DropoutBlock block, uint i) {
  return i == 0 ? block.word[0] : i == 1 ? block.word[1] : i == 2 ? block.word[2] : block.word[3];
}

// The multiplier of one entry's probability: dropout_scale when the stream keeps it, 0 when it
// drops it (the backward's finishing step visits entries one by one).
inline float dropout_multiplier(constant AttentionParams& p, uint token, int head, int key) {
  const uint draw = dropout_draw(p.dropout_seed_lo, p.dropout_seed_hi, p.dropout_offset, token,
                                 (uint)head, (uint)key);
  return dropout_keeps(draw, p.dropout_threshold) ? p.dropout_scale : 0.0f;
}

// The prefill's P fragments after the row sums have taken them (lse and l are of the undropped
// softmax): this lane's two entries of each 8-key chunk j in [j_begin, j_end) (keys key0 + 8 j +
// fc and + 1 of its row) become P x dropout_scale or 0. One block serves both entries unless
// they straddle two (key0 not a multiple of 4: tiles start at a causal/window hull's edge).
template <int KC>
inline void dropout_fragments(thread simdgroup_float8x8 (&pf)[KC], constant AttentionParams& p,
                              uint token, int head, int key0, int fc, int j_begin, int j_end) {
#pragma unroll
  for (int j = 0; j < KC; ++j) {
    if (j < j_begin || j >= j_end) continue;  // P is 0 there and not multiplied
    const uint key = (uint)(key0 + j * 8 + fc);
    const DropoutBlock block = dropout_block(p.dropout_seed_lo, p.dropout_seed_hi, key >> 2,
                                             token, (uint)head, p.dropout_offset);
    const uint draw0 = dropout_word(block, key & 3u);
    uint draw1;
    if ((key & 3u) == 3u) {
      draw1 = dropout_block(p.dropout_seed_lo, p.dropout_seed_hi, (key + 1u) >> 2, token,
                            (uint)head, p.dropout_offset).word[0];
    } else {
      draw1 = dropout_word(block, (key & 3u) + 1u);
    }
    const float e0 = pf[j].thread_elements()[0], e1 = pf[j].thread_elements()[1];
    pf[j].thread_elements()[0] = dropout_keeps(draw0, p.dropout_threshold) ? e0 * p.dropout_scale : 0.0f;
    pf[j].thread_elements()[1] = dropout_keeps(draw1, p.dropout_threshold) ? e1 * p.dropout_scale : 0.0f;
  }
}
