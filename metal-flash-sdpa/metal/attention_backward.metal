// The backward pass (FlashAttention-2), planned by common/metal_backward_plan.cpp:
//   mfs_bwd_row_dot  D = rowsum(dO * O) per (row, head), into a float32 scratch;
//   mfs_bwd_dkdv     a threadgroup owns 16 keys of one KV head and loops over the GQA group's
//                    query heads and the query tiles that see its keys: dK and dV, no atomics;
//   mfs_bwd_dq       a threadgroup owns 16 query rows of one head and loops over the key tiles
//                    they see: dQ;
//   mfs_bwd_sinks    d s_aux per head, summed over every row in a fixed order.
// At head-dim tiles 32-96 (16-bit; float32 32-80) the plan runs the tiled passes by full-width rows
// (mfs_bwd_dkdv_rows, mfs_bwd_dq_rows, after mfs_bwd_dq below: 32 owned rows, 8 per SIMD-group
// over the whole head dim, P and dS in registers, one barrier per streamed tile).
// Elsewhere the two tiled passes share one shape (metal_backward_config.h): every
// SIMD-group keeps a head-dim share of the owned rows in registers, computes partial S and dP
// over it against the
// streamed tile (8x8 simdgroup_matrix MMAs, fp32), the partials are summed through threadgroup
// memory in a fixed order, each element is finished once (P, dS times d logit / d q.k, from the
// rules of common/attention_semantics.h applied by attention_kernel_common.h), and each
// SIMD-group accumulates its share of the gradients. Barriers per streamed tile:
//   two copies staged (16-bit dtypes, tiles up to 256: mfs_bwd_stream_buffers), two:
//     partial S, dP | finish P, dS into their own area and stage the next tile into the other
//     copy | accumulate (plus one per threadgroup, for its first tile);
//   one copy staged (float32, tiles up to 256), four:
//     stage the streamed tile | partial S, dP | finish P, dS | accumulate (then the next tile);
//   the streamed rows read into registers, each SIMD-group its share (tile 512), two:
//     read the share, partial S, dP | finish P, dS into their own area | accumulate.
// Gradients are written once, by the threadgroup owning their rows, in the input dtype.
#include "attention_mask_tiles.h"
#include "attention_tiles.h"
#include "attention_dropout.h"

#include "../common/metal_backward_config.h"

// One sequence's rows: the forward's sequence_rows (attention_kernel_common.h, the shared rule of
// common/sequence_bounds.h), with flash-attn 3's seqused_q / seqused_k (varlen slots whose first
// rows only count; never paged: the plan refuses it).
inline SequenceBounds bwd_sequence(constant AttentionParams& p, const device int* cu_seqlens_q,
                                   const device int* cu_seqlens_k, const device int* seqused_q,
                                   const device int* seqused_k, int b, uint lane) {
  return sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
}

// Element offsets (head excluded) of query row `row` and key `key` of sequence b. A varlen
// side's batch strides are 0 (q, dout, dq) or ignored (k, v: key_row_offset's rule).
inline long bwd_q_row(long batch_stride, long row_stride, const SequenceBounds s, int b, int row) {
  return (long)b * batch_stride + (long)(s.q_begin + row) * row_stride;
}
inline long bwd_k_row(long batch_stride, long row_stride, const SequenceBounds s, int b, int key) {
  return (mfs_varlen_k ? (long)0 : (long)b * batch_stride) + (long)(s.k_begin + key) * row_stride;
}
inline long bwd_lse_index(constant AttentionParams& p, const SequenceBounds s, int b, int h,
                          int row) {
  return (long)b * p.lse_batch_stride + (long)h * p.lse_head_stride + (long)(s.q_begin + row);
}
inline long bwd_d_index(constant AttentionParams& p, constant MetalBackwardArgs& a,
                        const SequenceBounds s, int b, int h, int row) {
  return ((long)b * a.d_rows_per_batch + s.q_begin + row) * p.heads_q + h;
}

// The lse of a row as the kernels use it: load_lse() reads the API's -inf / +inf as the finite
// sentinels (fast math may not compare or subtract an infinity), and probability() gives 0 in a
// row that saw no key; a NaN lse is kept, so NaN flows back as on the cpu.

// ---- D = rowsum(dO * O) ------------------------------------------------------------------------
template <typename T>
[[kernel, max_total_threads_per_threadgroup(MFS_BWD_DOT_THREADS)]] void mfs_bwd_row_dot(
    const device T* out [[buffer(MFS_BUF_OUT)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device T* dout [[buffer(MFS_BUF_DOUT)]],
    device float* row_d [[buffer(MFS_BUF_ROW_D)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalBackwardArgs& a [[buffer(MFS_BUF_BWD_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  const int b = (int)tg.z;
  const int h = (int)tg.y;
  const SequenceBounds s = bwd_sequence(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  constexpr int NSG = MFS_BWD_DOT_THREADS / 32;
  for (int i = (int)sg; i < MFS_BWD_DOT_ROWS; i += NSG) {
    const int row = (int)tg.x * MFS_BWD_DOT_ROWS + i;
    if (row >= s.seqlen_q) break;  // the whole SIMD-group
    const device T* o_row = out + bwd_q_row(p.o_batch_stride, p.o_row_stride, s, b, row) +
                            (long)h * p.o_head_stride;
    const device T* do_row = dout + bwd_q_row(a.dout_batch_stride, a.dout_row_stride, s, b, row) +
                             (long)h * a.dout_head_stride;
    float acc = 0.0f;
    for (int e = (int)lane; e < p.head_dim_v; e += 32) acc += float(o_row[e]) * float(do_row[e]);
    acc = simd_sum(acc);
    if (lane == 0) row_d[bwd_d_index(p, a, s, b, h, row)] = acc;
  }
}

// ---- d s_aux[h] = sum over rows of sink_gradient ------------------------------------------------
[[kernel, max_total_threads_per_threadgroup(MFS_BWD_SINK_THREADS)]] void mfs_bwd_sinks(
    const device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device float* sinks [[buffer(MFS_BUF_SINKS)]],
    device float* dsinks [[buffer(MFS_BUF_DSINKS)]],
    const device float* row_d [[buffer(MFS_BUF_ROW_D)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalBackwardArgs& a [[buffer(MFS_BUF_BWD_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]]) {
  const int h = (int)tg.y;
  const float sink = sink_log2(sinks, h, lane, mfs_sink_dtype) * MFS_LN2;
  float acc = 0.0f;  // lane i sums rows i, i + 32, ... of every sequence in order: fixed order
  for (int b = 0; b < p.batch; ++b) {
    const SequenceBounds s = bwd_sequence(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
    for (int row = (int)lane; row < s.seqlen_q; row += 32) {
      // A row that saw no key adds nothing (a huge sink's exp(sink - lse) would be inf there, and
      // inf * 0 is NaN); a NaN lse adds NaN.
      const float l = load_lse(lse, bwd_lse_index(p, s, b, h, row));
      if (row_saw_no_key(l)) continue;
      acc += sink_gradient(sink, l, row_d[bwd_d_index(p, a, s, b, h, row)]);
    }
  }
  acc = simd_sum(acc);
  if (lane == 0) dsinks[h] = acc;
}

// ---- the tiled passes' shared steps ---------------------------------------------------------------

// Stages `ST` rows [first, first + ST) of one head of q/dout (dk/dv pass) or k/v (dq pass) into a
// row-major tile; rows at or past `end` are zeroed (their elements are masked, and 0 x NaN
// would not be 0). Each 8-element chunk is stored as two 4-element vectors (the tile's rows are
// 16-byte multiples, mfs_bwd_ld, and the tile 16-byte aligned): one element per store put a
// SIMD-group's 32 lanes on 8 banks (4-way); vectors of consecutive chunks fill the banks.
template <typename T, int SLOTS>
inline void bwd_stage(threadgroup T* tile, int ld, const thread StageSlot (&slots)[SLOTS],
                      const device T* base, long row_stride, int first, int end) {
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) {
    const int r = slots[n].row;
    if (r < 0) continue;
    threadgroup vec<T, 4>* dst = (threadgroup vec<T, 4>*)(tile + r * ld + slots[n].chunk * 8);
    Chunk8<T> c;
    if (first + r >= end) {
      c.lo = c.hi = vec<T, 4>(T(0.0f));
    } else {
      c = load_chunk8(base + (long)(first + r) * row_stride + slots[n].chunk * 8);
    }
    dst[0] = c.lo;
    dst[1] = c.hi;
  }
}

// The fragments of one operand's rows [first, first + OC * 8) on the chunks of this SIMD-group's
// share, in the input dtype, f[o][c] = rows o, chunk c (the streamed rows, when not staged);
// rows at or past `end` and chunks past `chunks` are 0.
template <typename T, int OC, int DC>
inline void bwd_load_rows(thread FragStore<T> (&f)[OC][DC], const device T* base,
                          long row_stride, int first, int end, int c_lo, int chunks, int fr,
                          int fc) {
#pragma unroll
  for (int o = 0; o < OC; ++o) {
    const int r = first + o * 8 + fr;
    const device T* src = base + (long)r * row_stride;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      float e0 = 0.0f, e1 = 0.0f;
      if (r < end && c_lo + c < chunks) {
        e0 = float(src[(c_lo + c) * 8 + fc]);
        e1 = float(src[(c_lo + c) * 8 + fc + 1]);
      }
      f[o][c] = frag_store<T>(e0, e1);
    }
  }
}

// The same rows' fragments transposed, f[o][c] = (chunk c, rows o): the owned rows, the right
// operand of the partial products (streamed rows x owned rows^T). A lane's two elements are in
// two rows, each checked against `end`.
template <typename T, int OC, int DC>
inline void bwd_load_rows_transposed(thread FragStore<T> (&f)[OC][DC], const device T* base,
                                     long row_stride, int first, int end, int c_lo, int chunks,
                                     int fr, int fc) {
#pragma unroll
  for (int o = 0; o < OC; ++o) {
    const int r = first + o * 8 + fc;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      float e0 = 0.0f, e1 = 0.0f;
      if (c_lo + c < chunks) {
        const int col = (c_lo + c) * 8 + fr;
        if (r < end) e0 = float(base[(long)r * row_stride + col]);
        if (r + 1 < end) e1 = float(base[(long)(r + 1) * row_stride + col]);
      }
      f[o][c] = frag_store<T>(e0, e1);
    }
  }
}

// Fragment (streamed rows sc, head-dim chunk c of this SIMD-group's share) of a streamed operand:
// from its threadgroup tile when staged, else from the registers bwd_load_rows filled.
template <typename T, bool STAGED, int SC, int DC>
inline simdgroup_float8x8 bwd_streamed(const threadgroup T* tile, int ld,
                                       const thread FragStore<T> (&regs)[SC][DC], int sc, int c,
                                       int c_lo, int fr, int fc) {
  if (STAGED) return frag_load(tile, ld, sc * 8, (c_lo + c) * 8, fr, fc);
  return frag_widen(regs[sc][c]);
}

// Partial X = A.B^T over this SIMD-group's head-dim share, A the owned rows (a_t: their
// transposed fragments, registers), B the streamed rows, computed as (B.A^T)^T and written
// transposed to partial[OWN][LDP] (rows of ST + padding, mfs_bwd_partial_ld). 8x8 blocks that no visible (row, key) pair touches (`live`) are neither
// computed nor written: the finishing step does not read them (every element is masked).
template <typename T, bool STAGED, int OC, int DC, int SC, int LDP>
inline void bwd_partial_product(threadgroup float* partial, const thread FragStore<T> (&a_t)[OC][DC],
                                const threadgroup T* b_tile, int ld,
                                const thread FragStore<T> (&b_regs)[SC][DC], int c_lo, int chunks,
                                const thread bool (&live)[OC][SC], int fr, int fc) {
#pragma unroll
  for (int o = 0; o < OC; ++o) {
#pragma unroll
    for (int sc = 0; sc < SC; ++sc) {
      if (!live[o][sc]) continue;
      simdgroup_float8x8 x = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        if (c_lo + c >= chunks) continue;
        const simdgroup_float8x8 bf =
            bwd_streamed<T, STAGED, SC, DC>(b_tile, ld, b_regs, sc, c, c_lo, fr, fc);
        const simdgroup_float8x8 af = frag_widen(a_t[o][c]);
        simdgroup_multiply_accumulate(x, bf, af, x);
      }
      // x holds (streamed sc * 8 + fr, owned o * 8 + fc and + 1): stored transposed.
      threadgroup float* dst = partial + (o * 8 + fc) * LDP + sc * 8 + fr;
      dst[0] = x.thread_elements()[0];
      dst[LDP] = x.thread_elements()[1];
    }
  }
}

// acc[o][c] += X[o rows][all streamed] . streamed rows[all][c], X from threadgroup floats
// [OWN][LDP] (blocks that are not `live` are 0 in X: skipped).
template <typename T, bool STAGED, int OC, int DC, int SC, int LDP>
inline void bwd_accumulate(thread simdgroup_float8x8 (&acc)[OC][DC], const threadgroup float* x,
                           const threadgroup T* tile, int ld,
                           const thread FragStore<T> (&regs)[SC][DC], int c_lo, int chunks,
                           const thread bool (&live)[OC][SC], int fr, int fc) {
#pragma unroll
  for (int o = 0; o < OC; ++o) {
#pragma unroll
    for (int sc = 0; sc < SC; ++sc) {
      if (!live[o][sc]) continue;
      const simdgroup_float8x8 xf = frag_load(x, LDP, o * 8, sc * 8, fr, fc);
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        if (c_lo + c >= chunks) continue;
        const simdgroup_float8x8 tf =
            bwd_streamed<T, STAGED, SC, DC>(tile, ld, regs, sc, c, c_lo, fr, fc);
        simdgroup_multiply_accumulate(acc[o][c], xf, tf, acc[o][c]);
      }
    }
  }
}

// Writes the owned rows' accumulators (rows < end, chunks < chunks) in the input dtype.
template <typename T, int OC, int DC>
inline void bwd_store_owned(device T* base, long row_stride, const thread simdgroup_float8x8 (&acc)[OC][DC],
                            int first, int end, int c_lo, int chunks, int fr, int fc) {
#pragma unroll
  for (int o = 0; o < OC; ++o) {
    const int r = first + o * 8 + fr;
    if (r >= end) continue;
    device T* dst = base + (long)r * row_stride;
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      if (c_lo + c >= chunks) continue;
      dst[(c_lo + c) * 8 + fc] = T(acc[o][c].thread_elements()[0]);
      dst[(c_lo + c) * 8 + fc + 1] = T(acc[o][c].thread_elements()[1]);
    }
  }
}

// What attn_mask and dropout make of one (row, key) entry of the finishing step, decided once
// per entry (both passes call it the same way): whether it takes part (`visible`, and a value
// of its mask block that does not close it), its mask bias (finite; 0 without a mask or in an
// open block) and its dropout multiplier (attention_dropout.h: 1 / (1 - p) or 0; 1 without
// dropout). Nothing is read for an entry that does not take part: no mask value outside mixed
// blocks, no draw for a hidden or closed entry.
struct EntryTerms {
  bool live;
  float bias;
  float drop;
};
inline EntryTerms bwd_entry_terms(constant AttentionParams& p, const SequenceBounds s,
                                  const device uchar* mask, uint mask_states, int block,
                                  bool visible, int b, int h, int row, int key) {
  EntryTerms t;
  t.live = visible;
  t.bias = 0.0f;
  t.drop = 1.0f;
  if (mfs_mask_kind != kNoMask && visible) {
    const MaskValue m =
        mask_value_in_block(mask_block_state(mask_states, block), mask, p, b, h, row, key);
    t.live = !m.closes;
    t.bias = m.bias;
  }
  if (mfs_dropout && t.live) {
    t.drop = dropout_multiplier(p, dropout_query_token(p, s, b, row), h, key);
  }
  return t;
}

// One element of the owned x streamed tile, finished: the sum of the SIMD-groups' partial S and
// dP in a fixed order, then P and dS x d logit / d q.k for an entry that takes part (`t.live`),
// 0 otherwise. The partials are summed share by share of the prefill's head-dim split (SHARES
// runs of consecutive SIMD-groups, each run summed from 0, the runs' sums added in order): each
// SIMD-group's partial is one of the prefill's S groups (mfs_score_group_chunks), so these are
// the additions the forward made, S has its bits and exp(S - lse) cancels their rounding.
// P x drop is what the forward multiplied V by, so it feeds dV, and dS = P (dP x drop - D),
// D = rowsum(dO * O) being the dropped output's (FlashAttention-2's backward with dropout).
struct FinishedElement {
  float p;
  float dqk;
  float dlogit;  // dS itself: d loss / d attn_mask's bias (slope 1)
};
// One entry finished from its S and dP (both kernels' one copy of the rule).
inline FinishedElement bwd_finish_entry(const ScoreRule rule, float s, float dp, int row, int key,
                                        float lse, float row_d, const EntryTerms t) {
  FinishedElement e;
  e.p = 0.0f;
  e.dqk = 0.0f;
  e.dlogit = 0.0f;
  if (!t.live) return e;
  const ScoreWithDerivative x = score_with_derivative(rule, s, row, key);
  const float logit = mfs_mask_kind != kNoMask ? mask_biased(x.logit, t.bias) : x.logit;
  const float prob = probability(logit, lse);
  e.p = prob * t.drop;  // dropout: the output saw drop * P
  e.dlogit = score_gradient(prob, dp * t.drop, row_d);
  e.dqk = e.dlogit * x.dlogit_dqk;
  return e;
}
template <int NSG, int SHARES, int TILE>
inline FinishedElement bwd_finish(const threadgroup float* partial, int j, const ScoreRule rule,
                                  int row, int key, float lse, float row_d, const EntryTerms t) {
  static_assert(NSG % SHARES == 0, "the forward's shares are runs of whole SIMD-groups");
  float s = 0.0f, dp = 0.0f, share_s = 0.0f, share_dp = 0.0f;
#pragma unroll
  for (int g = 0; g < NSG; ++g) {
    share_s += partial[(2 * g) * TILE + j];
    share_dp += partial[(2 * g + 1) * TILE + j];
    if ((g + 1) % (NSG / SHARES) == 0) {
      s += share_s;
      dp += share_dp;
      share_s = 0.0f;
      share_dp = 0.0f;
    }
  }
  // The partials are summed for every entry, also those that take no part (their blocks may not
  // have been computed): branching around the sums made ptxas spill dQ at tile 512 under its
  // 512-thread bound (registers.py, `mask` corner).
  return bwd_finish_entry(rule, s, dp, row, key, lse, row_d, t);
}

inline bool bwd_visible(constant AttentionParams& p, const SequenceBounds s, int row, int key) {
  const KeyRange r = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  return key >= r.begin && key < r.end;
}

// Whether some row of [row_lo, row_hi) sees some key of [key_lo, key_hi) (conservative: the
// rows' hull; uniform over a SIMD-group, so it may skip MMAs).
inline bool bwd_block_live(constant AttentionParams& p, const SequenceBounds s, int row_lo,
                           int row_hi, int key_lo, int key_hi) {
  if (row_lo >= row_hi || key_lo >= key_hi) return false;
  const KeyRange hull = visible_keys_for_rows(row_lo, row_hi, s.seqlen_q, s.seqlen_k,
                                              p.window_left, p.window_right);
  return max(hull.begin, key_lo) < min(hull.end, key_hi);
}

// The lse and D of streamed query rows [first, first + ST) of head h (threads tid < ST, one row
// each): rows at or past `end` get the masked sentinel and 0.
inline void bwd_stage_row_terms(threadgroup float* row_lse, threadgroup float* row_dot,
                                const device float* lse, const device float* row_d,
                                constant AttentionParams& p, constant MetalBackwardArgs& a,
                                const SequenceBounds s, int b, int h, int first, int end, int st,
                                int tid) {
  if (tid < st) {
    const int row = first + tid;
    const bool live = row < end;
    row_lse[tid] = live ? load_lse(lse, bwd_lse_index(p, s, b, h, row)) : kMaskedScore;
    row_dot[tid] = live ? row_d[bwd_d_index(p, a, s, b, h, row)] : 0.0f;
  }
}

// Stages query tile [first, first + ST) of head h for the dk/dv pass: its Q and dO rows into
// `pair` (Q, then dO, ST rows of `ld` each) and their lse and D into `terms` (TERMS_LD each).
template <typename T, int SLOTS, int ST, int TERMS_LD = MFS_BWD_OWN>
inline void bwd_stage_queries(threadgroup T* pair, int ld, threadgroup float* terms,
                              const thread StageSlot (&q_slots)[SLOTS],
                              const thread StageSlot (&do_slots)[SLOTS], const device T* q,
                              const device T* dout, const device float* lse,
                              const device float* row_d, constant AttentionParams& p,
                              constant MetalBackwardArgs& a, const SequenceBounds s, int b, int h,
                              int first, int end, int tid) {
  const device T* q_base = q + bwd_q_row(p.q_batch_stride, p.q_row_stride, s, b, 0) +
                           (long)h * p.q_head_stride;
  const device T* do_base = dout + bwd_q_row(a.dout_batch_stride, a.dout_row_stride, s, b, 0) +
                            (long)h * a.dout_head_stride;
  bwd_stage<T, SLOTS>(pair, ld, q_slots, q_base, p.q_row_stride, first, end);
  bwd_stage<T, SLOTS>(pair + ST * ld, ld, do_slots, do_base, a.dout_row_stride, first, end);
  bwd_stage_row_terms(terms, terms + TERMS_LD, lse, row_d, p, a, s, b, h, first, end, ST, tid);
}

// The owned rows of a full-width-rows SIMD-group (8 rows [first, first + 8) of one head, `chunks`
// chunks) staged once into its own threadgroup area (tiles above 64, mfs_bwd_rows_owned_staged):
// by its 32 lanes, read back only by the same SIMD-group (after the first streamed tile's
// barrier); rows at or past `end` are zeros.
template <typename T, int D>
inline void bwd_stage_owned(threadgroup T* tile, const device T* base, long row_stride, int first,
                            int end, int chunks, uint lane) {
  constexpr int SLOTS = (8 * (D / 8) + 31) / 32;
  StageSlot slots[SLOTS];
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) slots[n] = stage_slot((int)lane, n, 32, 8, chunks);
  bwd_stage<T, SLOTS>(tile, mfs_bwd_ld(D, (int)sizeof(T)), slots, base, row_stride, first, end);
}

// Fragment (the 8 owned rows, chunk c) of an owned operand of a full-width-rows SIMD-group: from
// its threadgroup area when staged, else from the registers bwd_load_rows filled (the same
// elements: row fr, columns fc and fc + 1).
template <typename T, bool OWNED_STAGED, int DC>
inline simdgroup_float8x8 bwd_owned(const threadgroup T* tile, int ld,
                                    const thread FragStore<T> (&regs)[1][DC], int c, int fr,
                                    int fc) {
  if (OWNED_STAGED) return frag_load(tile, ld, 0, c * 8, fr, fc);
  return frag_widen(regs[0][c]);
}

// ---- dK, dV: a threadgroup owns 16 keys of one KV head -------------------------------------------
template <typename T, int D>
[[kernel, max_total_threads_per_threadgroup(mfs_bwd_threads(D))]] void mfs_bwd_dkdv(
    const device T* q [[buffer(MFS_BUF_Q)]],
    const device T* k [[buffer(MFS_BUF_K)]],
    const device T* v [[buffer(MFS_BUF_V)]],
    const device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device float* alibi_slopes [[buffer(MFS_BUF_ALIBI)]],
    const device T* dout [[buffer(MFS_BUF_DOUT)]],
    device T* dk [[buffer(MFS_BUF_DK)]],
    device T* dv [[buffer(MFS_BUF_DV)]],
    const device float* row_d [[buffer(MFS_BUF_ROW_D)]],
    const device uchar* mask [[buffer(MFS_BUF_MASK)]],
    const device uchar* mask_tiles [[buffer(MFS_BUF_MASK_TILES)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalBackwardArgs& a [[buffer(MFS_BUF_BWD_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int ES = sizeof(T);
  constexpr int OWN = MFS_BWD_OWN;
  constexpr int ST = mfs_bwd_stream(D);
  constexpr int NSG = mfs_bwd_simdgroups(D);
  constexpr int NT = mfs_bwd_threads(D);
  constexpr int LD = mfs_bwd_ld(D, ES);
  constexpr int DC = mfs_bwd_chunks_per_sg(D);
  constexpr int OC = OWN / 8;
  constexpr int SC = ST / 8;
  constexpr int LDP = mfs_bwd_partial_ld(D);  // row stride of the partial / finished areas
  constexpr int SLOTS = (ST * (D / 8) + NT - 1) / NT;
  constexpr bool STAGED = mfs_bwd_staged(D);
  constexpr bool DOUBLE = mfs_bwd_stream_buffers(D, ES) == 2;  // two barriers per tile
  static_assert(mfs_bwd_tg_bytes(D, ES) <= 32768, "dk/dv threadgroup memory");
  // The streamed Q and dO tiles (staged; double-buffered: two pairs), the partial S / dP, the
  // finished P^T / dS^T (one pair staged: slot 0 of the partials), the streamed rows' lse, D (a
  // pair per buffer).
  threadgroup float4 storage[mfs_bwd_tg_bytes(D, ES) / 16];  // 16-byte aligned
  threadgroup T* tiles = (threadgroup T*)storage;
  threadgroup float* partial = (threadgroup float*)(tiles + mfs_bwd_stream_tile_elems(D, ES));
  threadgroup float* finished =
      mfs_bwd_finished_floats(D, ES) == 0 ? partial : partial + mfs_bwd_partial_floats(D);
  threadgroup float* row_terms =
      partial + mfs_bwd_partial_floats(D) + mfs_bwd_finished_floats(D, ES);

  const int b = (int)tg.z;
  const int hk = (int)tg.y;
  const int k0 = (int)tg.x * OWN;
  const SequenceBounds s = bwd_sequence(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  if (k0 >= s.seqlen_k) return;  // the whole threadgroup: past this sequence's keys
  const int k_end = min(k0 + OWN, s.seqlen_k);
  const int qc = p.head_dim / 8;
  const int vc = p.head_dim_v / 8;
  const int c_lo = (int)sg * DC;
  const int fr = frag_row(lane);
  const int fc = frag_col(lane);
  const int group = p.heads_q / p.heads_kv;

  // The owned keys' K and V (this SIMD-group's head-dim share, transposed) and their dK, dV
  // accumulators.
  const device T* k_base = k + bwd_k_row(p.k_batch_stride, p.k_row_stride, s, b, 0) +
                           (long)hk * p.k_head_stride;
  const device T* v_base = v + bwd_k_row(p.v_batch_stride, p.v_row_stride, s, b, 0) +
                           (long)hk * p.v_head_stride;
  FragStore<T> kf[OC][DC], vf[OC][DC];
  bwd_load_rows_transposed<T, OC, DC>(kf, k_base, p.k_row_stride, k0, k_end, c_lo, qc, fr, fc);
  bwd_load_rows_transposed<T, OC, DC>(vf, v_base, p.v_row_stride, k0, k_end, c_lo, vc, fr, fc);
  simdgroup_float8x8 dkf[OC][DC], dvf[OC][DC];
#pragma unroll
  for (int o = 0; o < OC; ++o) {
#pragma unroll
    for (int c = 0; c < DC; ++c) {
      dkf[o][c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
      dvf[o][c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    }
  }

  StageSlot q_slots[SLOTS], do_slots[SLOTS];
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) {
    q_slots[n] = stage_slot((int)tid, n, NT, ST, qc);
    do_slots[n] = stage_slot((int)tid, n, NT, ST, vc);
  }
  // The query rows that see some owned key: the inverse of the visible-keys rule.
  const KeyRange rows =
      visible_queries_for_keys(k0, k_end, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const MaskSummary mask_s = mask_summary(p);

  // The streamed tiles, one per (query head of the group, query tile of `rows`), in that order.
  // Double-buffered, tile t is in buffer t % 2 and tile t + 1 is staged while t is finished.
  int h = hk * group;
  int q0 = rows.begin;
  ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);
  if (DOUBLE && rows.begin < rows.end) {
    bwd_stage_queries<T, SLOTS, ST>(tiles, LD, row_terms, q_slots, do_slots, q, dout, lse, row_d,
                                    p, a, s, b, h, q0, rows.end, (int)tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the first query tile is staged
  }
  for (int t = 0; rows.begin < rows.end; ++t) {  // no query row sees the keys: no tile
    if (tid == 0) MSL_SIM_COUNT("bwd_stream_tiles", 1);
    const int buf = DOUBLE ? t % 2 : 0;
    threadgroup T* q_tile = tiles + buf * 2 * ST * LD;
    threadgroup T* do_tile = q_tile + ST * LD;
    threadgroup float* stream_lse = row_terms + buf * 2 * OWN;
    threadgroup float* stream_d = stream_lse + OWN;
    // The next tile: the next query tile of this head, or the first of the next head.
    const bool head_ends = q0 + ST >= rows.end;
    const int next_h = head_ends ? h + 1 : h;
    const int next_q0 = head_ends ? rows.begin : q0 + ST;
    const bool more = next_h < (hk + 1) * group;

    // (1) Single-buffered: stage the query tile's Q and dO (or read this SIMD-group's share of
    // them), and its rows' lse and D.
    FragStore<T> qs[SC][DC], dos[SC][DC];
    if (!DOUBLE) {
      if (STAGED) {
        bwd_stage_queries<T, SLOTS, ST>(tiles, LD, row_terms, q_slots, do_slots, q, dout, lse,
                                        row_d, p, a, s, b, h, q0, rows.end, (int)tid);
        threadgroup_barrier(mem_flags::mem_threadgroup);  // the query tile is staged
      } else {
        const device T* q_base = q + bwd_q_row(p.q_batch_stride, p.q_row_stride, s, b, 0) +
                                 (long)h * p.q_head_stride;
        const device T* do_base =
            dout + bwd_q_row(a.dout_batch_stride, a.dout_row_stride, s, b, 0) +
            (long)h * a.dout_head_stride;
        bwd_load_rows<T, SC, DC>(qs, q_base, p.q_row_stride, q0, rows.end, c_lo, qc, fr, fc);
        bwd_load_rows<T, SC, DC>(dos, do_base, a.dout_row_stride, q0, rows.end, c_lo, vc, fr, fc);
        bwd_stage_row_terms(stream_lse, stream_d, lse, row_d, p, a, s, b, h, q0, rows.end, ST,
                            (int)tid);
      }
    }

    // (2) Partial S^T = K.Q^T and dP^T = V.dO^T over this SIMD-group's head-dim share, on the
    // 8x8 (keys, rows) blocks with a visible pair.
    bool live[OC][SC];
    uint mask_states = 0u;  // attn_mask: each block's state (not live: never read)
#pragma unroll
    for (int o = 0; o < OC; ++o) {
#pragma unroll
      for (int sc = 0; sc < SC; ++sc) {
        live[o][sc] = bwd_block_live(p, s, q0 + sc * 8, min(q0 + sc * 8 + 8, rows.end),
                                     k0 + o * 8, min(k0 + o * 8 + 8, k_end));
        if (mfs_mask_kind != kNoMask && live[o][sc]) {  // attn_mask: closed blocks are not live
          const int state = mask_range_state(mask_tiles, mask_s, b, h, q0 + sc * 8,
                                             min(q0 + sc * 8 + 8, rows.end), k0 + o * 8,
                                             min(k0 + o * 8 + 8, k_end));
          live[o][sc] = state != kMaskTileClosed;
          mask_states |= (uint)state << (2 * (o * SC + sc));
        }
      }
    }
    bwd_partial_product<T, STAGED, OC, DC, SC, LDP>(partial + (2 * (int)sg) * OWN * LDP, kf,
                                                   q_tile, LD, qs, c_lo, qc, live, fr, fc);
    bwd_partial_product<T, STAGED, OC, DC, SC, LDP>(partial + (2 * (int)sg + 1) * OWN * LDP, vf,
                                                   do_tile, LD, dos, c_lo, vc, live, fr, fc);
    // Every partial is written (and, not staged, the streamed rows' lse and D; every SIMD-group
    // is past the last tile's accumulation, which read the finished area and, double-buffered,
    // the buffer the next tile is staged into).
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // (3) Finish each (key, row) element once: P^T and dS^T into the finished area (one buffer
    // staged: slot 0 of the partials, each element read, then overwritten by the thread owning
    // it). Double-buffered: stage the next tile into the other buffer meanwhile.
    for (int i = (int)tid; i < OWN * ST; i += NT) {
      const int key = k0 + i / ST;
      const int st = i % ST;
      const int j = (i / ST) * LDP + st;  // the element in the padded areas
      const int row = q0 + st;
      const bool visible = key < k_end && row < rows.end && bwd_visible(p, s, row, key);
      const EntryTerms et = bwd_entry_terms(p, s, mask, mask_states, ((key - k0) / 8) * SC + st / 8,
                                            visible, b, h, row, key);
      const FinishedElement e = bwd_finish<NSG, mfs_prefill_dsplit(D), OWN * LDP>(
          partial, j, rule, row, key, stream_lse[st], stream_d[st], et);
      finished[j] = e.p;
      finished[OWN * LDP + j] = e.dqk;
    }
    if (DOUBLE && more) {
      threadgroup T* next_pair = tiles + (1 - buf) * 2 * ST * LD;
      threadgroup float* next_terms = row_terms + (1 - buf) * 2 * OWN;
      bwd_stage_queries<T, SLOTS, ST>(next_pair, LD, next_terms, q_slots, do_slots, q, dout, lse,
                                      row_d, p, a, s, b, next_h, next_q0, rows.end, (int)tid);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // P^T, dS^T complete (and the next tile)

    // (4) dV += P^T.dO and dK += dS^T.Q on this SIMD-group's share.
    bwd_accumulate<T, STAGED, OC, DC, SC, LDP>(dvf, finished, do_tile, LD, dos, c_lo, vc, live,
                                              fr, fc);
    bwd_accumulate<T, STAGED, OC, DC, SC, LDP>(dkf, finished + OWN * LDP, q_tile, LD, qs, c_lo,
                                              qc, live, fr, fc);
    if (STAGED && !DOUBLE) threadgroup_barrier(mem_flags::mem_threadgroup);  // may be restaged
    if (!more) break;
    if (next_h != h) rule = score_rule(p, alibi_slopes, s, b, next_h, lane);
    h = next_h;
    q0 = next_q0;
  }

  bwd_store_owned<T, OC, DC>(dk + bwd_k_row(a.dk_batch_stride, a.dk_row_stride, s, b, 0) +
                                 (long)hk * a.dk_head_stride,
                             a.dk_row_stride, dkf, k0, k_end, c_lo, qc, fr, fc);
  bwd_store_owned<T, OC, DC>(dv + bwd_k_row(a.dv_batch_stride, a.dv_row_stride, s, b, 0) +
                                 (long)hk * a.dv_head_stride,
                             a.dv_row_stride, dvf, k0, k_end, c_lo, vc, fr, fc);
}

// ---- dQ: a threadgroup owns 16 query rows of one head ---------------------------------------------
template <typename T, int D>
[[kernel, max_total_threads_per_threadgroup(mfs_bwd_threads(D))]] void mfs_bwd_dq(
    const device T* q [[buffer(MFS_BUF_Q)]],
    const device T* k [[buffer(MFS_BUF_K)]],
    const device T* v [[buffer(MFS_BUF_V)]],
    const device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device float* alibi_slopes [[buffer(MFS_BUF_ALIBI)]],
    const device T* dout [[buffer(MFS_BUF_DOUT)]],
    device T* dq [[buffer(MFS_BUF_DQ)]],
    const device float* row_d [[buffer(MFS_BUF_ROW_D)]],
    const device uchar* mask [[buffer(MFS_BUF_MASK)]],
    const device uchar* mask_tiles [[buffer(MFS_BUF_MASK_TILES)]],
    device float* dmask [[buffer(MFS_BUF_DMASK), function_constant(mfs_mask_grad)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalBackwardArgs& a [[buffer(MFS_BUF_BWD_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int ES = sizeof(T);
  constexpr int OWN = MFS_BWD_OWN;
  constexpr int ST = mfs_bwd_stream(D);
  constexpr int NSG = mfs_bwd_simdgroups(D);
  constexpr int NT = mfs_bwd_threads(D);
  constexpr int LD = mfs_bwd_ld(D, ES);
  constexpr int DC = mfs_bwd_chunks_per_sg(D);
  constexpr int OC = OWN / 8;
  constexpr int SC = ST / 8;
  constexpr int LDP = mfs_bwd_partial_ld(D);  // row stride of the partial / finished areas
  constexpr int SLOTS = (ST * (D / 8) + NT - 1) / NT;
  constexpr bool STAGED = mfs_bwd_staged(D);
  constexpr bool DOUBLE = mfs_bwd_stream_buffers(D, ES) == 2;  // two barriers per tile
  static_assert(mfs_bwd_tg_bytes(D, ES) <= 32768, "dq threadgroup memory");
  // The streamed K and V tiles (staged; double-buffered: two pairs), the partial S / dP, the
  // finished dS (one pair staged: slot 0 of the partials), the owned rows' lse and D.
  threadgroup float4 storage[mfs_bwd_tg_bytes(D, ES) / 16];  // 16-byte aligned
  threadgroup T* tiles = (threadgroup T*)storage;
  threadgroup float* partial = (threadgroup float*)(tiles + mfs_bwd_stream_tile_elems(D, ES));
  threadgroup float* finished =
      mfs_bwd_finished_floats(D, ES) == 0 ? partial : partial + mfs_bwd_partial_floats(D);
  threadgroup float* own_lse =
      partial + mfs_bwd_partial_floats(D) + mfs_bwd_finished_floats(D, ES);
  threadgroup float* own_d = own_lse + OWN;

  const int b = (int)tg.z;
  const int h = (int)tg.y;
  const int row0 = (int)tg.x * OWN;
  const SequenceBounds s = bwd_sequence(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  if (row0 >= s.seqlen_q) return;  // the whole threadgroup: past this sequence's queries
  const int rows_end = min(row0 + OWN, s.seqlen_q);
  const int hk = h / (p.heads_q / p.heads_kv);
  const int qc = p.head_dim / 8;
  const int vc = p.head_dim_v / 8;
  const int c_lo = (int)sg * DC;
  const int fr = frag_row(lane);
  const int fc = frag_col(lane);

  // The owned rows' Q and dO (this SIMD-group's head-dim share, transposed), their dQ
  // accumulators, and their lse and D (read after the first tile's barriers).
  FragStore<T> qf[OC][DC], df[OC][DC];
  bwd_load_rows_transposed<T, OC, DC>(
      qf, q + bwd_q_row(p.q_batch_stride, p.q_row_stride, s, b, 0) + (long)h * p.q_head_stride,
      p.q_row_stride, row0, rows_end, c_lo, qc, fr, fc);
  bwd_load_rows_transposed<T, OC, DC>(
      df, dout + bwd_q_row(a.dout_batch_stride, a.dout_row_stride, s, b, 0) +
              (long)h * a.dout_head_stride,
      a.dout_row_stride, row0, rows_end, c_lo, vc, fr, fc);
  simdgroup_float8x8 dqf[OC][DC];
#pragma unroll
  for (int o = 0; o < OC; ++o) {
#pragma unroll
    for (int c = 0; c < DC; ++c) dqf[o][c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }
  if ((int)tid < OWN) {
    const int row = row0 + (int)tid;
    const bool live = row < rows_end;
    own_lse[tid] = live ? load_lse(lse, bwd_lse_index(p, s, b, h, row)) : kMaskedScore;
    own_d[tid] = live ? row_d[bwd_d_index(p, a, s, b, h, row)] : 0.0f;
  }
  const ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);

  StageSlot k_slots[SLOTS], v_slots[SLOTS];
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) {
    k_slots[n] = stage_slot((int)tid, n, NT, ST, qc);
    v_slots[n] = stage_slot((int)tid, n, NT, ST, vc);
  }
  const device T* k_base = k + bwd_k_row(p.k_batch_stride, p.k_row_stride, s, b, 0) +
                           (long)hk * p.k_head_stride;
  const device T* v_base = v + bwd_k_row(p.v_batch_stride, p.v_row_stride, s, b, 0) +
                           (long)hk * p.v_head_stride;
  const KeyRange hull =
      visible_keys_for_rows(row0, rows_end, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const MaskSummary mask_s = mask_summary(p);

  // Double-buffered, key tile t is in buffer t % 2 and tile t + 1 is staged while t is finished.
  if (DOUBLE && hull.begin < hull.end) {
    bwd_stage<T, SLOTS>(tiles, LD, k_slots, k_base, p.k_row_stride, hull.begin, hull.end);
    bwd_stage<T, SLOTS>(tiles + ST * LD, LD, v_slots, v_base, p.v_row_stride, hull.begin, hull.end);
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the first key tile is staged
  }
  for (int k0 = hull.begin, t = 0; k0 < hull.end; k0 += ST, ++t) {
    if (tid == 0) MSL_SIM_COUNT("bwd_stream_tiles", 1);
    const int buf = DOUBLE ? t % 2 : 0;
    threadgroup T* k_tile = tiles + buf * 2 * ST * LD;
    threadgroup T* v_tile = k_tile + ST * LD;
    const bool more = k0 + ST < hull.end;
    // (1) Single-buffered: stage the key tile's K and V (or read this SIMD-group's share of
    // them).
    FragStore<T> ks[SC][DC], vs[SC][DC];
    if (!DOUBLE) {
      if (STAGED) {
        bwd_stage<T, SLOTS>(k_tile, LD, k_slots, k_base, p.k_row_stride, k0, hull.end);
        bwd_stage<T, SLOTS>(v_tile, LD, v_slots, v_base, p.v_row_stride, k0, hull.end);
        threadgroup_barrier(mem_flags::mem_threadgroup);  // the key tile is staged
      } else {
        bwd_load_rows<T, SC, DC>(ks, k_base, p.k_row_stride, k0, hull.end, c_lo, qc, fr, fc);
        bwd_load_rows<T, SC, DC>(vs, v_base, p.v_row_stride, k0, hull.end, c_lo, vc, fr, fc);
      }
    }

    // (2) Partial S = Q.K^T and dP = dO.V^T over this SIMD-group's head-dim share, on the 8x8
    // (rows, keys) blocks with a visible pair.
    bool live[OC][SC];
    uint mask_states = 0u;  // attn_mask: each block's state (not live: never read)
#pragma unroll
    for (int o = 0; o < OC; ++o) {
#pragma unroll
      for (int sc = 0; sc < SC; ++sc) {
        live[o][sc] = bwd_block_live(p, s, row0 + o * 8, min(row0 + o * 8 + 8, rows_end),
                                     k0 + sc * 8, min(k0 + sc * 8 + 8, hull.end));
        if (mfs_mask_kind != kNoMask && live[o][sc]) {  // attn_mask: closed blocks are not live
          const int state = mask_range_state(mask_tiles, mask_s, b, h, row0 + o * 8,
                                             min(row0 + o * 8 + 8, rows_end), k0 + sc * 8,
                                             min(k0 + sc * 8 + 8, hull.end));
          live[o][sc] = state != kMaskTileClosed;
          mask_states |= (uint)state << (2 * (o * SC + sc));
        }
      }
    }
    bwd_partial_product<T, STAGED, OC, DC, SC, LDP>(partial + (2 * (int)sg) * OWN * LDP, qf,
                                                   k_tile, LD, ks, c_lo, qc, live, fr, fc);
    bwd_partial_product<T, STAGED, OC, DC, SC, LDP>(partial + (2 * (int)sg + 1) * OWN * LDP, df,
                                                   v_tile, LD, vs, c_lo, vc, live, fr, fc);
    // Every partial is written (every SIMD-group is past the last tile's accumulation, which
    // read the finished area and, double-buffered, the buffer the next tile is staged into).
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // (3) Finish each (row, key) element once: dS into the finished area (one buffer staged:
    // slot 0). Double-buffered: stage the next key tile into the other buffer meanwhile.
    for (int i = (int)tid; i < OWN * ST; i += NT) {
      const int o = i / ST;
      const int j = o * LDP + i % ST;  // the element in the padded areas
      const int row = row0 + o;
      const int key = k0 + i % ST;
      const bool visible = row < rows_end && key < hull.end && bwd_visible(p, s, row, key);
      const EntryTerms et = bwd_entry_terms(p, s, mask, mask_states, (o / 8) * SC + (i % ST) / 8,
                                            visible, b, h, row, key);
      const FinishedElement e = bwd_finish<NSG, mfs_prefill_dsplit(D), OWN * LDP>(
          partial, j, rule, row, key, own_lse[o], own_d[o], et);
      finished[j] = e.dqk;
      // d attn_mask = dS, written once per visible kept (row, key) by the threadgroup owning the
      // row (the rest of the zero-filled gradient stays 0: P = 0 there).
      if (mfs_mask_grad && et.live) {
        dmask[(((long)b * p.heads_q + h) * p.seqlen_q + row) * p.seqlen_k + key] = e.dlogit;
      }
    }
    if (DOUBLE && more) {
      threadgroup T* next = tiles + (1 - buf) * 2 * ST * LD;
      bwd_stage<T, SLOTS>(next, LD, k_slots, k_base, p.k_row_stride, k0 + ST, hull.end);
      bwd_stage<T, SLOTS>(next + ST * LD, LD, v_slots, v_base, p.v_row_stride, k0 + ST, hull.end);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // dS is complete (and the next key tile)

    // (4) dQ += dS.K on this SIMD-group's share.
    bwd_accumulate<T, STAGED, OC, DC, SC, LDP>(dqf, finished, k_tile, LD, ks, c_lo, qc, live, fr,
                                              fc);
    if (STAGED && !DOUBLE) threadgroup_barrier(mem_flags::mem_threadgroup);  // may be restaged
  }

  bwd_store_owned<T, OC, DC>(dq + bwd_q_row(a.dq_batch_stride, a.dq_row_stride, s, b, 0) +
                                 (long)h * a.dq_head_stride,
                             a.dq_row_stride, dqf, row0, rows_end, c_lo, qc, fr, fc);
}

// ---- dK, dV by full-width rows: the tiles mfs_bwd_rows_tile picks (16-bit <= 96, f32 <= 80) ----
// A threadgroup owns 32 keys of one KV head; SIMD-group g owns keys [k0 + 8 g, k0 + 8 g + 8) over
// the whole head dim (K and V as fragments in the input dtype, dK and dV in fp32) and, for each
// 8-row block of the streamed query tile, computes S^T = K.Q^T and dP^T = V.dO^T (Q^T, dO^T read
// as transposed fragments of the row-major tiles), finishes its lane's two entries of P and dS in
// registers (bwd_entry_terms, bwd_finish_entry: the other kernels' rules) and multiplies them as
// the left operand: dV += P^T.dO, dK += dS^T.Q. Nothing but the streamed tiles goes through
// threadgroup memory. S^T is summed in the prefill's groups of head-dim chunks
// (mfs_score_group_chunks, each group from zero, the groups added in order, all in one
// SIMD-group as the prefill does below tile 192), so S has the forward's bits. The streamed
// tiles are double-buffered, one barrier per tile: tile t + 1 is staged into the copy every
// SIMD-group finished reading before that barrier, while tile t is multiplied.
template <typename T, int D>
[[kernel, max_total_threads_per_threadgroup(MFS_BWD_ROWS_THREADS)]] void mfs_bwd_dkdv_rows(
    const device T* q [[buffer(MFS_BUF_Q)]],
    const device T* k [[buffer(MFS_BUF_K)]],
    const device T* v [[buffer(MFS_BUF_V)]],
    const device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device float* alibi_slopes [[buffer(MFS_BUF_ALIBI)]],
    const device T* dout [[buffer(MFS_BUF_DOUT)]],
    device T* dk [[buffer(MFS_BUF_DK)]],
    device T* dv [[buffer(MFS_BUF_DV)]],
    const device float* row_d [[buffer(MFS_BUF_ROW_D)]],
    const device uchar* mask [[buffer(MFS_BUF_MASK)]],
    const device uchar* mask_tiles [[buffer(MFS_BUF_MASK_TILES)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalBackwardArgs& a [[buffer(MFS_BUF_BWD_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int ES = sizeof(T);
  constexpr int NT = MFS_BWD_ROWS_THREADS;
  constexpr int OWN = MFS_BWD_ROWS_OWN;
  constexpr int ST = mfs_bwd_rows_stream(D, ES);
  constexpr int SC = ST / 8;
  constexpr int LD = mfs_bwd_ld(D, ES);
  constexpr int DC = D / 8;
  constexpr int G = mfs_score_group_chunks(D);  // S's groups of chunks: the prefill's
  constexpr int SLOTS = (ST * DC + NT - 1) / NT;
  constexpr bool OWNED_STAGED = mfs_bwd_rows_owned_staged(D);
  static_assert(mfs_bwd_rows_tile(D, ES) && mfs_prefill_dsplit(D) == 1,
                "one SIMD-group sums every S group, as the prefill does unsplit");
  static_assert(OWN == 8 * (NT / 32), "8 owned keys per SIMD-group");
  static_assert(mfs_bwd_rows_tg_bytes(D, ES) <= 32768, "dk/dv threadgroup memory");
  // Two copies of the streamed Q and dO tiles, then both copies' lse and D, then (tiles above
  // 64) each SIMD-group's owned K and V rows.
  threadgroup float4 storage[mfs_bwd_rows_tg_bytes(D, ES) / 16];  // 16-byte aligned
  threadgroup T* tiles = (threadgroup T*)storage;
  threadgroup float* row_terms = (threadgroup float*)(tiles + 2 * 2 * ST * LD);
  threadgroup T* own_k =
      OWNED_STAGED ? (threadgroup T*)(row_terms + 2 * 2 * ST) + (int)sg * 2 * 8 * LD : tiles;
  threadgroup T* own_v = own_k + 8 * LD;

  const int b = (int)tg.z;
  const int hk = (int)tg.y;
  const int k0 = (int)tg.x * OWN;
  const SequenceBounds s = bwd_sequence(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  if (k0 >= s.seqlen_k) return;  // the whole threadgroup: past this sequence's keys
  const int k_end = min(k0 + OWN, s.seqlen_k);
  const int sk0 = k0 + 8 * (int)sg;  // this SIMD-group's keys
  const int sk_end = min(sk0 + 8, k_end);
  const int qc = p.head_dim / 8;
  const int vc = p.head_dim_v / 8;
  const int fr = frag_row(lane);
  const int fc = frag_col(lane);
  const int group = p.heads_q / p.heads_kv;

  const KeyRange rows =
      visible_queries_for_keys(k0, k_end, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);

  // This SIMD-group's keys' K and V over the whole head dim (registers up to tile 64, else its
  // threadgroup area), and their dK, dV accumulators.
  const device T* k_base = k + bwd_k_row(p.k_batch_stride, p.k_row_stride, s, b, 0) +
                           (long)hk * p.k_head_stride;
  const device T* v_base = v + bwd_k_row(p.v_batch_stride, p.v_row_stride, s, b, 0) +
                           (long)hk * p.v_head_stride;
  FragStore<T> kf[1][DC], vf[1][DC];
  if (!OWNED_STAGED) {
    bwd_load_rows<T, 1, DC>(kf, k_base, p.k_row_stride, sk0, k_end, 0, qc, fr, fc);
    bwd_load_rows<T, 1, DC>(vf, v_base, p.v_row_stride, sk0, k_end, 0, vc, fr, fc);
  } else if (rows.begin < rows.end) {  // read after the first streamed tile's barrier
    bwd_stage_owned<T, D>(own_k, k_base, p.k_row_stride, sk0, k_end, qc, lane);
    bwd_stage_owned<T, D>(own_v, v_base, p.v_row_stride, sk0, k_end, vc, lane);
  }
  simdgroup_float8x8 dkf[1][DC], dvf[1][DC];
#pragma unroll
  for (int c = 0; c < DC; ++c) {
    dkf[0][c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    dvf[0][c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }

  StageSlot q_slots[SLOTS], do_slots[SLOTS];
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) {
    q_slots[n] = stage_slot((int)tid, n, NT, ST, qc);
    do_slots[n] = stage_slot((int)tid, n, NT, ST, vc);
  }
  const MaskSummary mask_s = mask_summary(p);

  // The streamed tiles, one per (query head of the group, query tile of `rows`), in that order;
  // tile t in copy t % 2.
  int h = hk * group;
  int q0 = rows.begin;
  ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);
  if (rows.begin < rows.end) {
    bwd_stage_queries<T, SLOTS, ST, ST>(tiles, LD, row_terms, q_slots, do_slots, q, dout, lse,
                                        row_d, p, a, s, b, h, q0, rows.end, (int)tid);
  }
  for (int t = 0; rows.begin < rows.end; ++t) {  // no query row sees the keys: no tile
    if (tid == 0) MSL_SIM_COUNT("bwd_stream_tiles", 1);
    const int buf = t % 2;
    const threadgroup T* q_tile = tiles + buf * 2 * ST * LD;
    const threadgroup T* do_tile = q_tile + ST * LD;
    const threadgroup float* stream_lse = row_terms + buf * 2 * ST;
    const threadgroup float* stream_d = stream_lse + ST;
    const bool head_ends = q0 + ST >= rows.end;
    const int next_h = head_ends ? h + 1 : h;
    const int next_q0 = head_ends ? rows.begin : q0 + ST;
    const bool more = next_h < (hk + 1) * group;
    // Tile t is staged, and every SIMD-group is past tile t - 1, whose copy takes tile t + 1.
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (more) {
      threadgroup T* next_rows = tiles + (1 - buf) * 2 * ST * LD;
      threadgroup float* next_row_terms = row_terms + (1 - buf) * 2 * ST;
      bwd_stage_queries<T, SLOTS, ST, ST>(next_rows, LD, next_row_terms, q_slots, do_slots, q,
                                          dout, lse, row_d, p, a, s, b, next_h, next_q0, rows.end,
                                          (int)tid);
    }

#pragma unroll
    for (int sc = 0; sc < SC; ++sc) {
      // The 8 x 8 (keys, rows) block: skipped when no pair in it is visible or attn_mask closes it.
      const int r0 = q0 + sc * 8;
      const int r_end = min(r0 + 8, rows.end);
      bool live = bwd_block_live(p, s, r0, r_end, sk0, sk_end);
      uint mask_states = 0u;
      if (mfs_mask_kind != kNoMask && live) {
        mask_states = (uint)mask_range_state(mask_tiles, mask_s, b, h, r0, r_end, sk0, sk_end);
        live = mask_states != (uint)kMaskTileClosed;
      }
      if (!live) continue;

      // S^T = K.Q^T in the prefill's groups of chunks; dP^T = V.dO^T.
      simdgroup_float8x8 s_t = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
      for (int c0 = 0; c0 < DC; c0 += G) {
        if (c0 >= qc) continue;
        simdgroup_float8x8 part = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
        for (int c = c0; c < c0 + G && c < DC; ++c) {
          if (c >= qc) continue;
          const simdgroup_float8x8 kc = bwd_owned<T, OWNED_STAGED, DC>(own_k, LD, kf, c, fr, fc);
          const simdgroup_float8x8 q_t = frag_load_transposed(q_tile, LD, c * 8, sc * 8, fr, fc);
          simdgroup_multiply_accumulate(part, kc, q_t, part);
        }
        s_t.thread_elements()[0] += part.thread_elements()[0];
        s_t.thread_elements()[1] += part.thread_elements()[1];
      }
      simdgroup_float8x8 dp_t = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        if (c >= vc) continue;
        const simdgroup_float8x8 vc_f = bwd_owned<T, OWNED_STAGED, DC>(own_v, LD, vf, c, fr, fc);
        const simdgroup_float8x8 do_t = frag_load_transposed(do_tile, LD, c * 8, sc * 8, fr, fc);
        simdgroup_multiply_accumulate(dp_t, vc_f, do_t, dp_t);
      }

      // The lane's two entries (key sk0 + fr; rows r0 + fc, r0 + fc + 1) finished in registers.
      simdgroup_float8x8 p_t, ds_t;
      const int key = sk0 + fr;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int row = r0 + fc + e;
        const bool visible = key < k_end && row < rows.end && bwd_visible(p, s, row, key);
        const EntryTerms et = bwd_entry_terms(p, s, mask, mask_states, 0, visible, b, h, row, key);
        const FinishedElement fe =
            bwd_finish_entry(rule, s_t.thread_elements()[e], dp_t.thread_elements()[e], row, key,
                             stream_lse[sc * 8 + fc + e], stream_d[sc * 8 + fc + e], et);
        p_t.thread_elements()[e] = fe.p;
        ds_t.thread_elements()[e] = fe.dqk;
      }

      // dV += P^T.dO and dK += dS^T.Q over the whole head dim.
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        if (c >= vc) continue;
        const simdgroup_float8x8 doc = frag_load(do_tile, LD, sc * 8, c * 8, fr, fc);
        simdgroup_multiply_accumulate(dvf[0][c], p_t, doc, dvf[0][c]);
      }
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        if (c >= qc) continue;
        const simdgroup_float8x8 qc_f = frag_load(q_tile, LD, sc * 8, c * 8, fr, fc);
        simdgroup_multiply_accumulate(dkf[0][c], ds_t, qc_f, dkf[0][c]);
      }
    }
    if (!more) break;
    if (next_h != h) rule = score_rule(p, alibi_slopes, s, b, next_h, lane);
    h = next_h;
    q0 = next_q0;
  }

  bwd_store_owned<T, 1, DC>(dk + bwd_k_row(a.dk_batch_stride, a.dk_row_stride, s, b, 0) +
                                (long)hk * a.dk_head_stride,
                            a.dk_row_stride, dkf, sk0, k_end, 0, qc, fr, fc);
  bwd_store_owned<T, 1, DC>(dv + bwd_k_row(a.dv_batch_stride, a.dv_row_stride, s, b, 0) +
                                (long)hk * a.dv_head_stride,
                            a.dv_row_stride, dvf, sk0, k_end, 0, vc, fr, fc);
}

// ---- dQ by full-width rows: the tiles mfs_bwd_rows_tile picks (16-bit <= 96, f32 <= 80) -------
// The same shape for dQ: a threadgroup owns 32 query rows of one head; SIMD-group g owns rows
// [row0 + 8 g, row0 + 8 g + 8) over the whole head dim (Q and dO as fragments in the input dtype,
// dQ in fp32, each lane's row's lse and D in registers) and, for each 8-key block of the streamed
// key tile, computes S = Q.K^T (the prefill's own product, in its groups of chunks) and
// dP = dO.V^T, finishes its lane's two entries of dS in registers and multiplies dQ += dS.K. The
// K and V tiles are double-buffered, one barrier per streamed tile.
template <typename T, int D>
[[kernel, max_total_threads_per_threadgroup(MFS_BWD_ROWS_THREADS)]] void mfs_bwd_dq_rows(
    const device T* q [[buffer(MFS_BUF_Q)]],
    const device T* k [[buffer(MFS_BUF_K)]],
    const device T* v [[buffer(MFS_BUF_V)]],
    const device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device float* alibi_slopes [[buffer(MFS_BUF_ALIBI)]],
    const device T* dout [[buffer(MFS_BUF_DOUT)]],
    device T* dq [[buffer(MFS_BUF_DQ)]],
    const device float* row_d [[buffer(MFS_BUF_ROW_D)]],
    const device uchar* mask [[buffer(MFS_BUF_MASK)]],
    const device uchar* mask_tiles [[buffer(MFS_BUF_MASK_TILES)]],
    device float* dmask [[buffer(MFS_BUF_DMASK), function_constant(mfs_mask_grad)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalBackwardArgs& a [[buffer(MFS_BUF_BWD_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int ES = sizeof(T);
  constexpr int NT = MFS_BWD_ROWS_THREADS;
  constexpr int OWN = MFS_BWD_ROWS_OWN;
  constexpr int ST = mfs_bwd_rows_stream(D, ES);
  constexpr int SC = ST / 8;
  constexpr int LD = mfs_bwd_ld(D, ES);
  constexpr int DC = D / 8;
  constexpr int G = mfs_score_group_chunks(D);  // S's groups of chunks: the prefill's
  constexpr int SLOTS = (ST * DC + NT - 1) / NT;
  constexpr bool OWNED_STAGED = mfs_bwd_rows_owned_staged(D);
  static_assert(mfs_bwd_rows_tile(D, ES) && mfs_prefill_dsplit(D) == 1,
                "one SIMD-group sums every S group, as the prefill does unsplit");
  static_assert(OWN == 8 * (NT / 32), "8 owned rows per SIMD-group");
  static_assert(mfs_bwd_rows_tg_bytes(D, ES) <= 32768, "dq threadgroup memory");
  // Two copies of the streamed K and V tiles (the layout's lse / D area is not used here), then
  // (tiles above 64) each SIMD-group's owned Q and dO rows.
  threadgroup float4 storage[mfs_bwd_rows_tg_bytes(D, ES) / 16];  // 16-byte aligned
  threadgroup T* tiles = (threadgroup T*)storage;
  threadgroup T* own_q =
      OWNED_STAGED ? (threadgroup T*)((threadgroup float*)(tiles + 2 * 2 * ST * LD) + 2 * 2 * ST) +
                         (int)sg * 2 * 8 * LD
                   : tiles;
  threadgroup T* own_do = own_q + 8 * LD;

  const int b = (int)tg.z;
  const int h = (int)tg.y;
  const int row0 = (int)tg.x * OWN;
  const SequenceBounds s = bwd_sequence(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  if (row0 >= s.seqlen_q) return;  // the whole threadgroup: past this sequence's queries
  const int rows_end = min(row0 + OWN, s.seqlen_q);
  const int sr0 = row0 + 8 * (int)sg;  // this SIMD-group's rows
  const int sr_end = min(sr0 + 8, rows_end);
  const int hk = h / (p.heads_q / p.heads_kv);
  const int qc = p.head_dim / 8;
  const int vc = p.head_dim_v / 8;
  const int fr = frag_row(lane);
  const int fc = frag_col(lane);

  const KeyRange hull =
      visible_keys_for_rows(row0, rows_end, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);

  // This SIMD-group's rows' Q and dO over the whole head dim (registers up to tile 64, else its
  // threadgroup area), their dQ accumulators, and the lse and D of the lane's row (sr0 + fr).
  const device T* q_base =
      q + bwd_q_row(p.q_batch_stride, p.q_row_stride, s, b, 0) + (long)h * p.q_head_stride;
  const device T* do_base = dout + bwd_q_row(a.dout_batch_stride, a.dout_row_stride, s, b, 0) +
                            (long)h * a.dout_head_stride;
  FragStore<T> qf[1][DC], df[1][DC];
  if (!OWNED_STAGED) {
    bwd_load_rows<T, 1, DC>(qf, q_base, p.q_row_stride, sr0, rows_end, 0, qc, fr, fc);
    bwd_load_rows<T, 1, DC>(df, do_base, a.dout_row_stride, sr0, rows_end, 0, vc, fr, fc);
  } else if (hull.begin < hull.end) {  // read after the first key tile's barrier
    bwd_stage_owned<T, D>(own_q, q_base, p.q_row_stride, sr0, rows_end, qc, lane);
    bwd_stage_owned<T, D>(own_do, do_base, a.dout_row_stride, sr0, rows_end, vc, lane);
  }
  simdgroup_float8x8 dqf[1][DC];
#pragma unroll
  for (int c = 0; c < DC; ++c) dqf[0][c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  const int row = sr0 + fr;
  const float row_lse = row < rows_end ? load_lse(lse, bwd_lse_index(p, s, b, h, row)) : kMaskedScore;
  const float row_dot = row < rows_end ? row_d[bwd_d_index(p, a, s, b, h, row)] : 0.0f;
  const ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);

  StageSlot k_slots[SLOTS], v_slots[SLOTS];
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) {
    k_slots[n] = stage_slot((int)tid, n, NT, ST, qc);
    v_slots[n] = stage_slot((int)tid, n, NT, ST, vc);
  }
  const device T* k_base = k + bwd_k_row(p.k_batch_stride, p.k_row_stride, s, b, 0) +
                           (long)hk * p.k_head_stride;
  const device T* v_base = v + bwd_k_row(p.v_batch_stride, p.v_row_stride, s, b, 0) +
                           (long)hk * p.v_head_stride;
  const MaskSummary mask_s = mask_summary(p);

  // Key tile t in copy t % 2.
  if (hull.begin < hull.end) {
    bwd_stage<T, SLOTS>(tiles, LD, k_slots, k_base, p.k_row_stride, hull.begin, hull.end);
    bwd_stage<T, SLOTS>(tiles + ST * LD, LD, v_slots, v_base, p.v_row_stride, hull.begin, hull.end);
  }
  for (int k0 = hull.begin, t = 0; k0 < hull.end; k0 += ST, ++t) {
    if (tid == 0) MSL_SIM_COUNT("bwd_stream_tiles", 1);
    const int buf = t % 2;
    const threadgroup T* k_tile = tiles + buf * 2 * ST * LD;
    const threadgroup T* v_tile = k_tile + ST * LD;
    // Tile t is staged, and every SIMD-group is past tile t - 1, whose copy takes tile t + 1.
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (k0 + ST < hull.end) {
      threadgroup T* next_keys = tiles + (1 - buf) * 2 * ST * LD;
      bwd_stage<T, SLOTS>(next_keys, LD, k_slots, k_base, p.k_row_stride, k0 + ST, hull.end);
      bwd_stage<T, SLOTS>(next_keys + ST * LD, LD, v_slots, v_base, p.v_row_stride, k0 + ST,
                          hull.end);
    }

#pragma unroll
    for (int sc = 0; sc < SC; ++sc) {
      // The 8 x 8 (rows, keys) block: skipped when no pair in it is visible or attn_mask closes it.
      const int kk0 = k0 + sc * 8;
      const int kk_end = min(kk0 + 8, hull.end);
      bool live = bwd_block_live(p, s, sr0, sr_end, kk0, kk_end);
      uint mask_states = 0u;
      if (mfs_mask_kind != kNoMask && live) {
        mask_states = (uint)mask_range_state(mask_tiles, mask_s, b, h, sr0, sr_end, kk0, kk_end);
        live = mask_states != (uint)kMaskTileClosed;
      }
      if (!live) continue;

      // S = Q.K^T in the prefill's groups of chunks; dP = dO.V^T.
      simdgroup_float8x8 sf = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
      for (int c0 = 0; c0 < DC; c0 += G) {
        if (c0 >= qc) continue;
        simdgroup_float8x8 part = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
        for (int c = c0; c < c0 + G && c < DC; ++c) {
          if (c >= qc) continue;
          const simdgroup_float8x8 qc_f = bwd_owned<T, OWNED_STAGED, DC>(own_q, LD, qf, c, fr, fc);
          const simdgroup_float8x8 k_t = frag_load_transposed(k_tile, LD, c * 8, sc * 8, fr, fc);
          simdgroup_multiply_accumulate(part, qc_f, k_t, part);
        }
        sf.thread_elements()[0] += part.thread_elements()[0];
        sf.thread_elements()[1] += part.thread_elements()[1];
      }
      simdgroup_float8x8 dpf = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        if (c >= vc) continue;
        const simdgroup_float8x8 doc = bwd_owned<T, OWNED_STAGED, DC>(own_do, LD, df, c, fr, fc);
        const simdgroup_float8x8 v_t = frag_load_transposed(v_tile, LD, c * 8, sc * 8, fr, fc);
        simdgroup_multiply_accumulate(dpf, doc, v_t, dpf);
      }

      // The lane's two entries (row sr0 + fr; keys kk0 + fc, kk0 + fc + 1) finished in registers.
      simdgroup_float8x8 dsf;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = kk0 + fc + e;
        const bool visible = row < rows_end && key < hull.end && bwd_visible(p, s, row, key);
        const EntryTerms et = bwd_entry_terms(p, s, mask, mask_states, 0, visible, b, h, row, key);
        const FinishedElement fe = bwd_finish_entry(rule, sf.thread_elements()[e],
                                                    dpf.thread_elements()[e], row, key, row_lse,
                                                    row_dot, et);
        dsf.thread_elements()[e] = fe.dqk;
        // d attn_mask = dS, written once per visible kept (row, key) by the threadgroup owning the
        // row (the rest of the zero-filled gradient stays 0: P = 0 there).
        if (mfs_mask_grad && et.live) {
          dmask[(((long)b * p.heads_q + h) * p.seqlen_q + row) * p.seqlen_k + key] = fe.dlogit;
        }
      }

      // dQ += dS.K over the whole head dim.
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        if (c >= qc) continue;
        const simdgroup_float8x8 kc = frag_load(k_tile, LD, sc * 8, c * 8, fr, fc);
        simdgroup_multiply_accumulate(dqf[0][c], dsf, kc, dqf[0][c]);
      }
    }
  }

  bwd_store_owned<T, 1, DC>(dq + bwd_q_row(a.dq_batch_stride, a.dq_row_stride, s, b, 0) +
                                (long)h * a.dq_head_stride,
                            a.dq_row_stride, dqf, sr0, rows_end, 0, qc, fr, fc);
}

#define MFS_BWD_STR_(x) #x
#define MFS_BWD_STR(x) MFS_BWD_STR_(x)

#define MFS_INSTANTIATE_BWD_TILED(T, tname, D)                                \
  template [[host_name(MFS_BWD_STR(mfs_bwd_dkdv_##tname##_d##D))]] [[kernel]] \
  decltype(mfs_bwd_dkdv<T, D>) mfs_bwd_dkdv<T, D>;                             \
  template [[host_name(MFS_BWD_STR(mfs_bwd_dq_##tname##_d##D))]] [[kernel]]   \
  decltype(mfs_bwd_dq<T, D>) mfs_bwd_dq<T, D>;

#define MFS_INSTANTIATE_BWD_TILED_DTYPES(D)   \
  MFS_INSTANTIATE_BWD_TILED(float, f32, D)    \
  MFS_INSTANTIATE_BWD_TILED(half, f16, D)     \
  MFS_INSTANTIATE_BWD_TILED(bfloat, bf16, D)

// Tiles up to 64 (mfs_bwd_rows_tile): dK/dV and dQ by full-width rows.
#define MFS_INSTANTIATE_BWD_ROWS(T, tname, D)                                     \
  template [[host_name(MFS_BWD_STR(mfs_bwd_dkdv_rows_##tname##_d##D))]] [[kernel]] \
  decltype(mfs_bwd_dkdv_rows<T, D>) mfs_bwd_dkdv_rows<T, D>;                       \
  template [[host_name(MFS_BWD_STR(mfs_bwd_dq_rows_##tname##_d##D))]] [[kernel]]   \
  decltype(mfs_bwd_dq_rows<T, D>) mfs_bwd_dq_rows<T, D>;

#define MFS_INSTANTIATE_BWD_ROWS_DTYPES(D) \
  MFS_INSTANTIATE_BWD_ROWS(float, f32, D)  \
  MFS_INSTANTIATE_BWD_ROWS(half, f16, D)   \
  MFS_INSTANTIATE_BWD_ROWS(bfloat, bf16, D)

// Tile 96: by full-width rows in 16-bit dtypes, by head-dim shares in float32 (whose
// owned rows and two streamed copies do not fit 32 KiB: metal_backward_config.h).
#define MFS_INSTANTIATE_BWD_ROWS_16BIT(D) \
  MFS_INSTANTIATE_BWD_ROWS(half, f16, D)  \
  MFS_INSTANTIATE_BWD_ROWS(bfloat, bf16, D)
#define MFS_INSTANTIATE_BWD_TILED_F32(D) MFS_INSTANTIATE_BWD_TILED(float, f32, D)

#define MFS_INSTANTIATE_BWD_ROW_DOT(T, tname)                                \
  template [[host_name(MFS_BWD_STR(mfs_bwd_row_dot_##tname))]] [[kernel]]   \
  decltype(mfs_bwd_row_dot<T>) mfs_bwd_row_dot<T>;

MFS_INSTANTIATE_BWD_ROW_DOT(float, f32)
MFS_INSTANTIATE_BWD_ROW_DOT(half, f16)
MFS_INSTANTIATE_BWD_ROW_DOT(bfloat, bf16)

// Keep in step with mfs_head_dim_tile_at() and mfs_bwd_rows_tile() (test_metal_design.py checks
// every plan pick exists).
MFS_INSTANTIATE_BWD_ROWS_DTYPES(32)
MFS_INSTANTIATE_BWD_ROWS_DTYPES(64)
MFS_INSTANTIATE_BWD_ROWS_DTYPES(72)
MFS_INSTANTIATE_BWD_ROWS_DTYPES(80)
MFS_INSTANTIATE_BWD_ROWS_16BIT(96)
MFS_INSTANTIATE_BWD_TILED_F32(96)
MFS_INSTANTIATE_BWD_TILED_DTYPES(128)
MFS_INSTANTIATE_BWD_TILED_DTYPES(192)
MFS_INSTANTIATE_BWD_TILED_DTYPES(256)
MFS_INSTANTIATE_BWD_TILED_DTYPES(512)
