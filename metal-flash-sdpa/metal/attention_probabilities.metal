// flash-attn's S_dmask (return_attn_probs=True with dropout_p > 0) on the Metal build: every
// probability P = exp(score - lse) of the forward, from its lse, with the entries that dropout
// dropped negated. "For testing only" in flash-attn, so written plainly: one thread per
// (sequence, head, row, key), the raw q.k summed in fp32 from device memory. The score, the keys a
// row sees and the stream are the shared rules' (attention_kernel_common.h, attention_dropout.h);
// the sink needs no code (it is in lse). Entries outside a sequence (rows past seqlen_q, keys
// past seqlen_k) are 0, as the cpu build writes them (attention_probabilities.cpp), and so are
// the keys a row does not see and every key of a row that saw none (negated where dropped).
// Planned by metal_probabilities_plan.cpp: grid (key blocks of MFS_PROBS_THREADS, max_seqlen_q,
// batch x heads_q), contiguous K/V only (the plan refuses block_table).
#include "attention_dropout.h"

#include "../common/metal_probabilities_config.h"

template <typename T>
[[kernel, max_total_threads_per_threadgroup(MFS_PROBS_THREADS)]] void mfs_attention_probs(
    const device T* q [[buffer(MFS_BUF_Q)]],
    const device T* k [[buffer(MFS_BUF_K)]],
    const device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device float* alibi_slopes [[buffer(MFS_BUF_ALIBI)]],
    device float* probs [[buffer(MFS_BUF_PROBS)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint lane [[thread_index_in_threadgroup]]) {
  const int b = (int)tg.z / p.heads_q, h = (int)tg.z % p.heads_q;
  const int row = (int)tg.y;
  const int key = (int)tg.x * MFS_PROBS_THREADS + (int)lane;
  // Uniform loads: the whole SIMD-group, before any lane leaves.
  const SequenceRows s = sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  const ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);
  if (key >= p.max_seqlen_k) return;
  float value = 0.0f;
  if (row < s.seqlen_q && key < s.seqlen_k) {
    const KeyRange visible = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left,
                                          p.window_right);
    // The lse as a sentinel (load_lse: fast math sees no infinity); probability() gives 0 in a
    // row that saw no key, NaN for a NaN lse, as on the cpu.
    const float row_lse = load_lse(lse, lse_offset(p, s, b, h, row));
    float prob = 0.0f;
    if (key >= visible.begin && key < visible.end) {
      const int kv_head = h / (p.heads_q / p.heads_kv);
      const device T* q_row = q + q_row_offset(p, s, b, row) + (long)h * p.q_head_stride;
      const device T* k_row = k + key_row_offset(p, s, b, key, 0, p.k_batch_stride, p.k_row_stride) +
                              (long)kv_head * p.k_head_stride;
      float qk = 0.0f;
      for (int d = 0; d < p.head_dim; ++d) qk += float(q_row[d]) * float(k_row[d]);
      prob = probability(score_with_derivative(rule, qk, row, key).logit, row_lse);
    }
    const uint draw = dropout_draw(p.dropout_seed_lo, p.dropout_seed_hi, p.dropout_offset,
                                   dropout_query_token(p, s, b, row), (uint)h, (uint)key);
    value = dropout_keeps(draw, p.dropout_threshold) ? prob : -prob;
  }
  probs[(((long)b * p.heads_q + h) * p.max_seqlen_q + row) * p.max_seqlen_k + key] = value;
}

#define MFS_STR_(x) #x
#define MFS_STR(x) MFS_STR_(x)
#define MFS_INSTANTIATE_PROBS(T, tname)                                    \
  template [[host_name(MFS_STR(mfs_attention_probs_##tname))]] [[kernel]] \
  decltype(mfs_attention_probs<T>) mfs_attention_probs<T>;

MFS_INSTANTIATE_PROBS(float, f32)
MFS_INSTANTIATE_PROBS(half, f16)
MFS_INSTANTIATE_PROBS(bfloat, bf16)
