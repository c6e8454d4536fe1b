// A plain scalar cpu forward: one query row at a time, two passes over its visible keys. It is the
// stand-in until the tiled kernel lands, kept short and obviously right.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "../common/attention_backend.h"
#include "../common/attention_semantics.h"

c10::DeviceType backend_device_type() { return c10::DeviceType::CPU; }

namespace {

struct SequenceExtent {
  int64_t q_start, k_start;  // q row / k row (non-paged) where the sequence starts
  int seqlen_q, seqlen_k;
};

SequenceExtent sequence_extent(const AttentionParams& p, const AttentionTensors& t, int b) {
  SequenceExtent s{};
  if (p.flags & kVarlenQ) {
    const int32_t* cu = t.cu_seqlens_q->data_ptr<int32_t>();
    s.q_start = cu[b];
    s.seqlen_q = cu[b + 1] - cu[b];
  } else {
    s.seqlen_q = p.seqlen_q;
  }
  if (p.flags & kVarlenK) {
    const int32_t* cu = t.cu_seqlens_k->data_ptr<int32_t>();
    s.k_start = (p.flags & kPagedKV) ? 0 : cu[b];
    s.seqlen_k = cu[b + 1] - cu[b];
  } else if (p.flags & kSequsedK) {
    s.seqlen_k = t.seqused_k->data_ptr<int32_t>()[b];
  } else {
    s.seqlen_k = p.seqlen_k;
  }
  return s;
}

template <typename T>
void forward(const AttentionParams& p, const AttentionTensors& t) {
  const T* q = t.q.data_ptr<T>();
  const T* k = t.k.data_ptr<T>();
  const T* v = t.v.data_ptr<T>();
  T* out = t.out.data_ptr<T>();
  float* lse = (p.flags & kWriteLse) ? t.lse.data_ptr<float>() : nullptr;
  const float* alibi = (p.flags & kHasAlibi) ? t.alibi_slopes->data_ptr<float>() : nullptr;
  const at::Tensor sinks = (p.flags & kHasSinks) ? t.sinks->to(at::kFloat) : at::Tensor();
  const int32_t* table = (p.flags & kPagedKV) ? t.block_table->data_ptr<int32_t>() : nullptr;
  const int group = p.heads_q / p.heads_kv;

  at::parallel_for(0, int64_t(p.batch) * p.heads_q, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, acc(p.head_dim_v);
    for (int64_t task = begin; task < end; ++task) {
      const int b = task / p.heads_q, h = task % p.heads_q, hk = h / group;
      const SequenceExtent s = sequence_extent(p, t, b);
      // Row j of the keys/values of sequence b (paged: through the block table).
      auto kv_offset = [&](int j, int64_t batch_stride, int64_t row_stride, int64_t head_stride) {
        if (table) {
          const int page = table[b * p.block_table_batch_stride + j / p.page_size];
          return page * batch_stride + (j % p.page_size) * row_stride + hk * head_stride;
        }
        return b * batch_stride + (s.k_start + j) * row_stride + hk * head_stride;
      };
      for (int i = 0; i < s.seqlen_q; ++i) {
        const int64_t row = s.q_start + i;
        const T* qi = q + b * p.q_batch_stride + row * p.q_row_stride + h * p.q_head_stride;
        T* oi = out + b * p.o_batch_stride + row * p.o_row_stride + h * p.o_head_stride;
        const KeyRange keys = visible_keys(i, s.seqlen_q, s.seqlen_k, p.window_left,
                                           p.window_right);
        const int n = keys.end > keys.begin ? keys.end - keys.begin : 0;
        scores.assign(n, 0.0f);
        float max_score = -INFINITY;
        for (int j = keys.begin; j < keys.end; ++j) {
          const T* kj = k + kv_offset(j, p.k_batch_stride, p.k_row_stride, p.k_head_stride);
          float dot = 0.0f;
          for (int d = 0; d < p.head_dim; ++d) dot += float(qi[d]) * float(kj[d]);
          float score = apply_softcap(dot * p.scale, p.softcap);
          if (alibi) {
            score += alibi_bias(alibi[b * p.alibi_batch_stride + h], i, j, s.seqlen_q,
                                s.seqlen_k);
          }
          scores[j - keys.begin] = score;
          max_score = std::max(max_score, score);
        }
        const float sink = sinks.defined() ? sinks.data_ptr<float>()[h] : -INFINITY;
        if (n > 0) max_score = std::max(max_score, sink);
        float denominator = n > 0 && sinks.defined() ? std::exp(sink - max_score) : 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int j = keys.begin; j < keys.end; ++j) {
          const float weight = std::exp(scores[j - keys.begin] - max_score);
          denominator += weight;
          const T* vj = v + kv_offset(j, p.v_batch_stride, p.v_row_stride, p.v_head_stride);
          for (int d = 0; d < p.head_dim_v; ++d) acc[d] += weight * float(vj[d]);
        }
        for (int d = 0; d < p.head_dim_v; ++d) oi[d] = T(n > 0 ? acc[d] / denominator : 0.0f);
        if (lse) {
          lse[b * p.lse_batch_stride + h * p.lse_head_stride + row] =
              n > 0 ? max_score + std::log(denominator) : -INFINITY;
        }
      }
    }
  });
}

}  // namespace

void run_attention_forward(const AttentionParams& params, const AttentionTensors& tensors) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors.q.scalar_type(),
                                  "attention_forward_cpu", [&] { forward<scalar_t>(params, tensors); });
}
