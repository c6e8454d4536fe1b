// Every sequence of one call, resolved on the host from the (checked) offset tensors by the rule
// the Metal kernels use (common/sequence_bounds.h): shared by the cpu forward and backward.
#pragma once

#include <vector>

#include "../common/attention_inputs.h"
#include "../common/sequence_bounds.h"

using Sequence = SequenceBounds;

inline std::vector<Sequence> resolve_sequences(const AttentionParams& p, const AttentionTensors& t) {
  const int32_t* cu_q = p.flags & kVarlenQ ? t.cu_seqlens_q->data_ptr<int32_t>() : nullptr;
  const int32_t* cu_k = p.flags & kVarlenK ? t.cu_seqlens_k->data_ptr<int32_t>() : nullptr;
  const int32_t* used_k = p.flags & kSequsedK ? t.seqused_k->data_ptr<int32_t>() : nullptr;
  const int32_t* used_q = p.flags & kSequsedQ ? t.seqused_q->data_ptr<int32_t>() : nullptr;
  std::vector<Sequence> seqs(p.batch);
  for (int b = 0; b < p.batch; ++b) {
    SequenceOffsets o{};
    if (cu_q) o.cu_q_begin = cu_q[b], o.cu_q_end = cu_q[b + 1];
    if (cu_k) o.cu_k_begin = cu_k[b], o.cu_k_end = cu_k[b + 1];
    if (used_k) o.used_k = used_k[b];
    if (used_q) o.used_q = used_q[b];
    seqs[b] = sequence_bounds(p, o);
  }
  return seqs;
}
