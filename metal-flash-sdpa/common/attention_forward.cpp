#include "attention_forward.h"

#include "attention_backend.h"

#include <c10/util/Exception.h>

namespace {

// [first byte, one past the last byte] that `t` can reach through its strides.
std::pair<const char*, const char*> byte_extent(const at::Tensor& t) {
  const char* begin = static_cast<const char*>(t.data_ptr());
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return {begin, begin + (last + 1) * t.element_size()};
}

// The in-place form writes `out` while it reads the inputs: an `out` sharing bytes with one of
// them (out=k, out=q[1:]) would read what it already wrote. Refused when the byte ranges of the
// same storage overlap (conservative: interleaved views of one buffer count as overlapping).
void check_out_does_not_overlap(const AttentionArgs& a) {
  const at::Tensor& out = *a.out;
  if (out.numel() == 0) return;
  auto check = [&](const std::optional<at::Tensor>& t, const char* name) {
    if (!t || t->numel() == 0 || !out.storage().is_alias_of(t->storage())) return;
    const auto [ob, oe] = byte_extent(out);
    const auto [tb, te] = byte_extent(*t);
    TORCH_CHECK_VALUE(oe <= tb || te <= ob, "out must not overlap ", name,
                      " (the in-place entry point writes out while it reads ", name,
                      "): pass a separate output tensor");
  };
  check(a.q, "q");
  check(a.k, "k");
  check(a.v, "v");
  check(a.cu_seqlens_q, "cu_seqlens_q");
  check(a.cu_seqlens_k, "cu_seqlens_k");
  check(a.seqused_k, "seqused_k");
  check(a.block_table, "block_table");
  check(a.alibi_slopes, "alibi_slopes");
  check(a.sinks, "s_aux");
}

// The functional form asks the backend (kClearRowsOutsideSequences) to also return zeros and
// lse -inf in the rows of a varlen q past cu_seqlens_q[-1]: they belong to no sequence, and the
// caller must not see uninitialised memory. The in-place form leaves those rows alone.
AttentionTensors checked_run(const AttentionArgs& args, bool functional) {
  AttentionParams params;
  AttentionTensors tensors = check_attention_inputs(args, backend_device_type(), params);
  if (!functional) check_out_does_not_overlap(args);
  if (functional && (params.flags & kVarlenQ)) params.flags |= kClearRowsOutsideSequences;
  // No query (zero heads, rows or batch): nothing to compute, and the kernels' GQA group size
  // heads_q / heads_kv would be 0.
  if (tensors.q.numel() == 0) return tensors;
  run_attention_forward(params, tensors);
  return tensors;
}

}  // namespace

void clear_rows_outside_sequences_on_host(const AttentionTensors& t) {
  const at::Tensor& cu = *t.cu_seqlens_q;
  auto c = cu.accessor<int32_t, 1>();
  const int64_t batch = cu.size(0) - 1, rows = t.q.size(0);
  auto clear = [&](int64_t begin, int64_t end) {
    if (begin >= end) return;
    t.out.narrow(0, begin, end - begin).zero_();
    if (t.lse.numel() > 0) t.lse.narrow(1, begin, end - begin).fill_(-INFINITY);
  };
  // With seqused_q (checked: within each slot) the rest of each sequence's slot is no sequence's.
  if (t.seqused_q) {
    auto used = t.seqused_q->accessor<int32_t, 1>();
    for (int64_t b = 0; b < batch; ++b) clear(c[b] + used[b], c[b + 1]);
  }
  clear(c[batch], rows);
}

std::tuple<at::Tensor, at::Tensor> attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    const std::optional<at::Tensor>& seqused_k, const std::optional<at::Tensor>& block_table,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& sinks,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, double softcap,
    int64_t window_left, int64_t window_right, bool return_lse,
    const std::optional<at::Tensor>& seqused_q, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed) {
  AttentionArgs args{q, k, v, std::nullopt, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                     alibi_slopes, sinks, max_seqlen_q, max_seqlen_k, softmax_scale, softcap,
                     window_left, window_right, return_lse, seqused_q, dropout_p, dropout_seed};
  AttentionTensors t = checked_run(args, /*functional=*/true);
  return {t.out, t.lse};
}

at::Tensor attention_forward_into(
    at::Tensor& out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    const std::optional<at::Tensor>& seqused_k, const std::optional<at::Tensor>& block_table,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& sinks,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, double softcap,
    int64_t window_left, int64_t window_right, bool return_lse,
    const std::optional<at::Tensor>& seqused_q, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed) {
  AttentionArgs args{q, k, v, out, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                     alibi_slopes, sinks, max_seqlen_q, max_seqlen_k, softmax_scale, softcap,
                     window_left, window_right, return_lse, seqused_q, dropout_p, dropout_seed};
  return checked_run(args, /*functional=*/false).lse;
}

at::Tensor attention_dropout_probs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    const std::optional<at::Tensor>& seqused_k, const std::optional<at::Tensor>& block_table,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& sinks,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, double softcap,
    int64_t window_left, int64_t window_right, const std::optional<at::Tensor>& seqused_q,
    double dropout_p, const std::optional<at::Tensor>& dropout_seed, const at::Tensor& lse) {
  TORCH_CHECK_VALUE(dropout_p > 0.0, "dropout_probs is flash-attn's S_dmask of a call with "
                    "dropout_p > 0, got dropout_p = ", dropout_p);
  TORCH_CHECK_NOT_IMPLEMENTED(!block_table, "return_attn_probs=True with dropout_p > 0 is not "
                              "supported with paged K/V (block_table)");
  AttentionArgs args{q, k, v, std::nullopt, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                     alibi_slopes, sinks, max_seqlen_q, max_seqlen_k, softmax_scale, softcap,
                     window_left, window_right, /*return_lse=*/true, seqused_q, dropout_p,
                     dropout_seed};
  AttentionParams p;
  AttentionTensors t = check_attention_inputs(args, backend_device_type(), p);
  TORCH_CHECK_VALUE(lse.scalar_type() == at::kFloat && lse.sizes() == t.lse.sizes(),
                    "lse must be the forward's: float32 of shape ", t.lse.sizes(), ", got ",
                    lse.scalar_type(), " ", lse.sizes());
  at::Tensor probs = at::zeros({p.batch, p.heads_q, p.max_seqlen_q, p.max_seqlen_k},
                               q.options().dtype(at::kFloat));
  t.lse = lse.to(q.device()).contiguous();  // the forward's, in place of the one the checks allocated
  if (q.numel() > 0) run_attention_probabilities(p, t, probs);
  return probs.to(q.scalar_type());
}
