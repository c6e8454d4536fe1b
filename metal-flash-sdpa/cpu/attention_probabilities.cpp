// flash-attn's S_dmask (return_attn_probs=True with dropout_p > 0), on the cpu
// (run_attention_probabilities, attention_backend.h): every
// probability P of the forward, with the dropped entries' sign set. "For testing only" in
// flash-attn: written plainly, one (sequence, head) per work item, [batch, heads, max_q, max_k]
// materialised. P comes from the forward's lse by the backward's own step (finish_probabilities in
// backward_probabilities.h: softcap, ALiBi, windows, the sink's share of lse, rows that saw no
// key) and the mask from dropout_tiles.h, so no rule is restated here.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/attention_backend.h"
#include "backward_job.h"
#include "cpu_sequences.h"
// After backward_job.h, compiled for the baseline instruction set (internal linkage).
#include "backward_probabilities.h"

void run_attention_probabilities(const AttentionParams& p, const AttentionTensors& t,
                                 const at::Tensor& probs) {
  const std::vector<Sequence> seqs = resolve_sequences(p, t);
  const bool varlen_q = p.flags & kVarlenQ, varlen_k = p.flags & kVarlenK;
  // fp32 copies, each sequence's rows addressed through their own shapes.
  const at::Tensor q = t.q.to(at::kFloat).contiguous(), k = t.k.to(at::kFloat).contiguous();
  const at::Tensor lse32 = t.lse.contiguous();
  const int group = p.heads_q / p.heads_kv, hd = p.head_dim;
  const float* qd = q.data_ptr<float>();
  const float* kd = k.data_ptr<float>();
  const float* ld = lse32.data_ptr<float>();
  float* out = probs.data_ptr<float>();
  const int64_t max_q = probs.size(2), max_k = probs.size(3);
  const DropoutRule dropout = dropout_rule(p);
  BackwardJob job{};
  job.scale = p.scale;
  job.softcap = p.softcap;
  job.has_alibi = p.flags & kHasAlibi;
  job.dropout = DropoutRule{};  // P itself; the mask is read apart (its sign)
  const float* alibi = job.has_alibi ? t.alibi_slopes->data_ptr<float>() : nullptr;

  at::parallel_for(0, int64_t(p.batch) * p.heads_q, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kBackwardKeyTile), ds(kBackwardKeyTile), z(kBackwardKeyTile);
    for (int64_t item = begin; item < end; ++item) {
      const int b = int(item / p.heads_q), h = int(item % p.heads_q), kvh = h / group;
      const Sequence& seq = seqs[b];
      for (int row = 0; row < seq.seqlen_q; ++row) {
        const int64_t token = seq.q_begin + row;
        const int64_t q_row = varlen_q ? token : int64_t(b) * p.seqlen_q + row;
        const float* qrow = qd + (q_row * p.heads_q + h) * hd;
        BackwardRow r{};
        r.lse = ld[varlen_q ? int64_t(h) * p.q_rows + token
                            : (int64_t(b) * p.heads_q + h) * p.seqlen_q + row];
        const KeyRange range = visible_keys(row, seq.seqlen_q, seq.seqlen_k, p.window_left,
                                            p.window_right);
        r.key_begin = range.begin;
        r.key_end = range.end;
        r.diagonal = row + seq.seqlen_k - seq.seqlen_q;
        r.slope = alibi ? alibi[int64_t(b) * p.alibi_batch_stride + h] : 0.0f;
        float* dst = out + ((int64_t(b) * p.heads_q + h) * max_q + row) * max_k;
        for (int k0 = 0; k0 < seq.seqlen_k; k0 += kBackwardKeyTile) {
          const int n = std::min(kBackwardKeyTile, seq.seqlen_k - k0);
          for (int j = 0; j < n; ++j) {  // the raw product q.k, summed in double
            const int64_t key_row = varlen_k ? seq.k_begin + k0 + j
                                             : int64_t(b) * p.seqlen_k + k0 + j;
            const float* krow = kd + (key_row * p.heads_kv + kvh) * hd;
            double dot = 0.0;
            for (int d = 0; d < hd; ++d) dot += double(qrow[d]) * krow[d];
            s[j] = float(dot);
            ds[j] = 0.0f;
          }
          finish_probabilities(job, &r, 1, k0, n, n, s.data(), ds.data(), kBackwardKeyTile);
          dropout_row_factors(dropout, dropout_row(p, b, seq, row, h), k0, n, z.data());
          for (int j = 0; j < n; ++j) dst[k0 + j] = z[j] > 0.0f ? s[j] : -s[j];
        }
      }
    }
  });
}
