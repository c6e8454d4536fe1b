// What every Metal attention kernel shares (MSL only): where a sequence's rows are, with every
// offset clamped to the tensors' sizes; how a key row is addressed (contiguous or paged); the
// score of one (query, key) pair (scale, softcap, ALiBi, in log2 units) and the mask; sinks.
// The rules themselves (which keys a query sees, softcap, ALiBi) are attention_semantics.h's:
// this header only applies them.
#pragma once

#include <metal_stdlib>

#include "../common/attention_params.h"
#include "../common/attention_semantics.h"
#include "../common/metal_kernel_config.h"
#include "../common/sequence_bounds.h"

using namespace metal;

// Design counters of the MSL simulator (tests/msl_sim: reported per launch as `events`, bounded by
// tests/test_metal_design.py). For Apple's compiler this is a macro that expands to nothing.
#ifndef MSL_SIM_COUNT
#define MSL_SIM_COUNT(name, n)
#endif
// Dead work (the simulator's counter): collectives and MMAs done for lanes whose results are
// discarded (a pair slot past the live pairs). Nothing for Apple's compiler.
#ifndef MSL_SIM_DEAD_WORK
#define MSL_SIM_DEAD_WORK(dead)
#endif

#define MFS_LOG2E 1.4426950408889634f
#define MFS_LN2 0.6931471805599453f
// Masked logits, the running max of a row that has seen no key yet, a sink of +inf: the finite
// sentinels of attention_semantics.h (kMaskedScore, kScoreTakesAll; fast math may assume that no
// value is infinite), in log2 units as in natural ones. Infinities exist only as the bits of an
// lse in memory: store_lse() writes them, load_lse() reads them back as the sentinels.
#define MFS_NEG_INF_BITS 0xff800000u
#define MFS_POS_INF_BITS 0x7f800000u

// The call's features, set per pipeline by the plan (metal_launch_plan.cpp): function constants
// (MSL spec 5.8, "Function Constants"), so a feature that is off leaves no branch or predicate
// in the kernels' loops and each combination compiles to its own pipeline.
constant int mfs_sink_dtype [[function_constant(MFS_FC_SINK_DTYPE)]];   // s_aux's dtype
constant bool mfs_varlen_q [[function_constant(MFS_FC_VARLEN_Q)]];
constant bool mfs_varlen_k [[function_constant(MFS_FC_VARLEN_K)]];
constant bool mfs_seqused_k [[function_constant(MFS_FC_SEQUSED_K)]];
constant bool mfs_seqused_q [[function_constant(MFS_FC_SEQUSED_Q)]];
constant bool mfs_paged_kv [[function_constant(MFS_FC_PAGED_KV)]];
constant bool mfs_alibi [[function_constant(MFS_FC_ALIBI)]];
constant bool mfs_softcap [[function_constant(MFS_FC_SOFTCAP)]];
constant bool mfs_sinks [[function_constant(MFS_FC_SINKS)]];
constant bool mfs_write_lse [[function_constant(MFS_FC_WRITE_LSE)]];
constant bool mfs_window [[function_constant(MFS_FC_WINDOW)]];       // causal or finite window
constant bool mfs_vector_kv [[function_constant(MFS_FC_VECTOR_KV)]];  // 4-element aligned k/v rows

// One sequence's rows, every value clamped to what exists in the tensors, whatever cu_seqlens /
// seqused_q / seqused_k hold: reading q rows [q_begin, q_begin + seqlen_q) and logical keys [0, seqlen_k)
// never leaves the buffers. The rule is sequence_bounds.h's, shared with the cpu backend; the
// kernels only load the offsets it needs.
using SequenceRows = SequenceBounds;

// A value every lane of the SIMD-group needs, loaded once by lane 0 and broadcast (uniform
// metadata: offsets, lengths, slopes). Must be reached by the whole SIMD-group.
template <typename T>
inline T uniform_load(const device T* src, long i, uint lane) {
  return simd_broadcast(lane == 0 ? src[i] : T(0), 0);
}
// The same for aligned groups of `lanes` lanes that each need their own value (decode's cohorts
// hold different heads): the group's first lane loads, the others take it by shuffle; with
// lanes = 32 it is uniform_load. Must be reached by the whole SIMD-group.
template <typename T>
inline T group_load(const device T* src, long i, uint lane, int lanes) {
  const ushort first = (ushort)((int)lane / lanes * lanes);
  return simd_shuffle((ushort)lane == first ? src[i] : T(0), first);
}

inline SequenceRows sequence_rows(constant AttentionParams& p, const device int* cu_seqlens_q,
                                  const device int* cu_seqlens_k, const device int* seqused_q,
                                  const device int* seqused_k, int b, uint lane) {
  SequenceOffsets o;
  o.cu_q_begin = mfs_varlen_q ? uniform_load(cu_seqlens_q, b, lane) : 0;
  o.cu_q_end = mfs_varlen_q ? uniform_load(cu_seqlens_q, b + 1, lane) : 0;
  o.cu_k_begin = mfs_varlen_k ? uniform_load(cu_seqlens_k, b, lane) : 0;
  o.cu_k_end = mfs_varlen_k ? uniform_load(cu_seqlens_k, b + 1, lane) : 0;
  o.used_k = mfs_seqused_k ? uniform_load(seqused_k, b, lane) : 0;
  o.used_q = mfs_seqused_q ? uniform_load(seqused_q, b, lane) : 0;
  return sequence_bounds(p, o);
}

// Paged K/V: the page holding logical key `key` (< seqlen_k) of sequence b, from block_table,
// clamped to [0, num_pages). Kernels look each row's page up once per tile (pages[] in
// threadgroup memory), not once per 8-element chunk.
inline int key_page(constant AttentionParams& p, const device int* block_table, int b, int key) {
  const int page_index = key / p.page_size;  // < max_pages_per_seq since key < seqlen_k
  return clamp_to(block_table[(long)b * p.block_table_batch_stride + page_index], 0,
                   p.num_pages - 1);
}

// Element offset of logical key `key` of sequence b in k or v (their batch/page and row
// strides), head excluded. `page` is key_page(...) when paged, ignored otherwise.
inline long key_row_offset(constant AttentionParams& p, const SequenceRows s, int b, int key,
                           int page, long batch_stride, long row_stride) {
  if (mfs_paged_kv) {
    return (long)page * batch_stride + (long)(key % p.page_size) * row_stride;
  }
  const long batch_offset = mfs_varlen_k ? (long)0 : (long)b * batch_stride;
  return batch_offset + (long)(s.k_begin + key) * row_stride;
}

// Element offsets of query row `row` of sequence b (head excluded) in q, out and lse.
inline long q_row_offset(constant AttentionParams& p, const SequenceRows s, int b, int row) {
  return (long)b * p.q_batch_stride + (long)(s.q_begin + row) * p.q_row_stride;
}
inline long o_row_offset(constant AttentionParams& p, const SequenceRows s, int b, int row) {
  return (long)b * p.o_batch_stride + (long)(s.q_begin + row) * p.o_row_stride;
}
inline long lse_offset(constant AttentionParams& p, const SequenceRows s, int b, int h, int row) {
  return (long)b * p.lse_batch_stride + (long)h * p.lse_head_stride + (long)(s.q_begin + row);
}

// How a raw q.k turns into a log2-domain logit for one query head of one sequence.
struct ScoreRule {
  float scale;       // softmax_scale (natural units)
  float scale_log2;  // softmax_scale * log2(e): the whole rule when there is no softcap/ALiBi
  float softcap;
  float slope;       // ALiBi slope of this head (0 without ALiBi)
  int seqlen_q, seqlen_k;
};

// `lanes`: the aligned lane groups that share h (32: the whole SIMD-group).
inline ScoreRule score_rule(constant AttentionParams& p, const device float* alibi_slopes,
                            const SequenceRows s, int b, int h, uint lane, int lanes = 32) {
  ScoreRule r;
  r.scale = p.scale;
  r.scale_log2 = p.scale * MFS_LOG2E;
  r.softcap = p.softcap;
  const long slope_at = (long)b * p.alibi_batch_stride + h;
  r.slope = mfs_alibi ? group_load(alibi_slopes, slope_at, lane, lanes) : 0.0f;
  r.seqlen_q = s.seqlen_q;
  r.seqlen_k = s.seqlen_k;
  return r;
}

// The log2-domain logit of query `row` and key `key` (a visible key: no mask).
inline float score_log2(const ScoreRule r, float qk, int row, int key) {
  if (!mfs_softcap && !mfs_alibi) return qk * r.scale_log2;
  float x = mfs_softcap ? apply_softcap(qk * r.scale, r.softcap) : qk * r.scale;
  if (mfs_alibi) x += alibi_bias(r.slope, row, key, r.seqlen_q, r.seqlen_k);
  return x * MFS_LOG2E;
}

// The same with the mask: kMaskedScore when the key is outside `visible`. Kernels call it only on
// tiles that a mask or a bound can cut (diagonal, window and sequence-end tiles); the simulator
// counts each evaluation.
inline float logit_log2(const ScoreRule r, float qk, int row, int key, const KeyRange visible) {
  MSL_SIM_COUNT("mask_evaluations", 1);
  if (key < visible.begin || key >= visible.end) return kMaskedScore;
  return score_log2(r, qk, row, key);
}

// The sink logit of head h in log2 units (s_aux may be float32, float16 or bfloat16). A sink of
// +inf (recognised by its bits: fast math may not compare with it) or one too large for log2 units
// becomes kScoreTakesAll, which takes the whole softmax (every finite score's exp2(x - it) is 0,
// its own is 1); NaN stays NaN.
inline float sink_log2(const device float* sinks, int h, uint lane, int sink_dtype) {
  float s = 0.0f;
  if (lane == 0) {
    if (sink_dtype == kMfsFloat16) {
      s = float(((const device half*)sinks)[h]);
    } else if (sink_dtype == kMfsBFloat16) {
      s = float(((const device bfloat*)sinks)[h]);
    } else {
      s = sinks[h];
    }
  }
  s = simd_broadcast(s, 0);
  if (as_type<uint>(s) == MFS_POS_INF_BITS) return kScoreTakesAll;
  return s > kScoreTakesAll * MFS_LN2 ? kScoreTakesAll : s * MFS_LOG2E;
}

// Online-softmax state of one query row, in log2 units: running max m and denominator l.
// With sinks, the sink starts the row: m = sink, l = exp2(sink - m) = 1.
struct RowState {
  float m;
  float l;
};

inline RowState row_state_start(bool with_sink, float sink) {
  RowState st;
  st.m = with_sink ? sink : kMaskedScore;
  st.l = with_sink ? 1.0f : 0.0f;
  return st;
}

// The base the row's exponentials are taken against: attention_semantics.h's softmax_reference
// (m, or 0 while the row has seen no key: every exp2(kMaskedScore - 0) underflows to 0).
inline float softmax_base(float m) { return softmax_reference(m); }

// What a finished row's output accumulator is multiplied by, by finish_row()'s rule: 1 / l; 0
// for a row that saw no key; NaN when l is NaN (a NaN or +inf score, or a NaN sink, which only
// the denominator holds).
inline float row_inv(float l, bool no_visible_key) {
  return (no_visible_key || l == 0.0f) ? 0.0f : 1.0f / l;
}

// Natural-log LSE of a finished row, by finish_row()'s rule (attention_semantics.h), in the
// sentinels: kMaskedScore (-inf) for a row that sees no key (also with a sink); kScoreTakesAll
// (+inf) when the sink was +inf (m reaches kScoreTakesAll); NaN when a score was NaN (l is NaN:
// the max skips NaN, exp2 does not). store_lse() writes it.
inline float row_lse(const RowState st, bool no_visible_key) {
  if (no_visible_key || st.l == 0.0f) return kMaskedScore;
  if (score_takes_all(st.m)) return kScoreTakesAll;
  return (st.m + log2(st.l)) * MFS_LN2;
}

// Where the sentinels become docs/API.md's infinities: lse element `at` is written as bits, by
// an integer select, so no floating-point operation ever sees an infinity. load_lse() is the
// inverse, for the kernels that read an lse back (the backward).
inline void store_lse(device float* lse, long at, float v) {
  const uint bits = is_masked_score(v) ? MFS_NEG_INF_BITS
                                       : (score_takes_all(v) ? MFS_POS_INF_BITS : as_type<uint>(v));
  ((device uint*)lse)[at] = bits;
}
inline float load_lse(const device float* lse, long at) {
  const uint bits = ((const device uint*)lse)[at];
  if (bits == MFS_NEG_INF_BITS) return kMaskedScore;
  return bits == MFS_POS_INF_BITS ? kScoreTakesAll : as_type<float>(bits);
}

// ---- the backward's view of the score rule ----
// The natural-units logit of a visible (query, key) pair and its derivative with respect to q.k:
// the scale times softcap's derivative (ALiBi adds a constant). dS times this reaches dq and dk.
struct ScoreWithDerivative {
  float logit;
  float dlogit_dqk;
};
inline ScoreWithDerivative score_with_derivative(const ScoreRule r, float qk, int row, int key) {
  ScoreWithDerivative s;
  s.logit = qk * r.scale;
  s.dlogit_dqk = r.scale;
  if (mfs_softcap) {
    s.logit = apply_softcap(s.logit, r.softcap);
    s.dlogit_dqk *= softcap_derivative(s.logit, r.softcap);
  }
  if (mfs_alibi) s.logit += alibi_bias(r.slope, row, key, r.seqlen_q, r.seqlen_k);
  return s;
}
