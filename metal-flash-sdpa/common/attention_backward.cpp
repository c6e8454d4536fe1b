#include "attention_backward.h"

#include <c10/util/Exception.h>

#include "attention_backend.h"
#include "attention_gradients.h"

AttentionGradients check_attention_backward_inputs(const AttentionArgs& args, const at::Tensor& lse,
                                                   const at::Tensor& dout,
                                                   c10::DeviceType device_type,
                                                   AttentionParams& p, AttentionTensors& t) {
  TORCH_CHECK_VALUE(!args.block_table && (!args.seqused_k || args.cu_seqlens_k),
                    "the backward covers contiguous K/V only: paged block_table and seqused_k "
                    "without cu_seqlens_k (flash_attn_with_kvcache) have no gradient");
  t = check_attention_inputs(args, device_type, p);  // checks `out` (args.out) against q and v
  const at::Tensor& q = args.q;
  const bool varlen_q = args.cu_seqlens_q.has_value();
  const std::vector<int64_t> lse_shape =
      varlen_q ? std::vector<int64_t>{q.size(1), q.size(0)}
               : std::vector<int64_t>{q.size(0), q.size(2), q.size(1)};
  TORCH_CHECK(lse.device() == q.device(), "lse must be on q's device (", q.device(), "), got ",
              lse.device());
  TORCH_CHECK_VALUE(lse.scalar_type() == at::kFloat, "lse must be float32, got ",
                    lse.scalar_type());
  TORCH_CHECK_VALUE(lse.sizes() == at::IntArrayRef(lse_shape), "lse must have shape ",
                    at::IntArrayRef(lse_shape), " (the forward's, with return_lse), got ",
                    lse.sizes());
  TORCH_CHECK_VALUE(lse.stride(-1) == 1 || lse.size(-1) <= 1,
                    "lse must be contiguous in its last dimension, got strides ", lse.strides());
  TORCH_CHECK(dout.device() == q.device(), "dout must be on q's device (", q.device(), "), got ",
              dout.device());
  TORCH_CHECK_VALUE(dout.scalar_type() == q.scalar_type(), "dout must have q's dtype ",
                    q.scalar_type(), ", got ", dout.scalar_type());
  TORCH_CHECK_VALUE(dout.sizes() == t.out.sizes(), "dout must have out's shape ", t.out.sizes(),
                    ", got ", dout.sizes());

  t.lse = lse;
  p.flags |= kWriteLse;  // lse is there (read, not written, by the backward)
  p.lse_batch_stride = varlen_q ? 0 : lse.stride(0);
  p.lse_head_stride = lse.stride(varlen_q ? 0 : 1);

  AttentionGradients g;
  g.dout = dout.stride(-1) == 1 ? dout : dout.contiguous();
  g.dq = at::zeros(q.sizes(), q.options());
  g.dk = at::zeros(args.k.sizes(), args.k.options());
  g.dv = at::zeros(args.v.sizes(), args.v.options());
  g.ds_aux = args.sinks ? at::zeros({p.heads_q}, q.options().dtype(at::kFloat))
                        : at::empty({0}, q.options().dtype(at::kFloat));
  return g;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& cu_seqlens_q,
    const std::optional<at::Tensor>& cu_seqlens_k, const std::optional<at::Tensor>& alibi_slopes,
    const std::optional<at::Tensor>& s_aux, int64_t max_seqlen_q, int64_t max_seqlen_k,
    double softmax_scale, double softcap, int64_t window_left, int64_t window_right,
    const std::optional<at::Tensor>& seqused_q, const std::optional<at::Tensor>& seqused_k,
    double dropout_p, const std::optional<at::Tensor>& dropout_seed) {
  AttentionArgs args{q, k, v, out, cu_seqlens_q, cu_seqlens_k, seqused_k, std::nullopt,
                     alibi_slopes, s_aux, max_seqlen_q, max_seqlen_k, softmax_scale, softcap,
                     window_left, window_right, /*return_lse=*/false, seqused_q, dropout_p,
                     dropout_seed};
  AttentionParams params;
  AttentionTensors tensors;
  AttentionGradients g =
      check_attention_backward_inputs(args, lse, dout, backend_device_type(), params, tensors);
  // No query: dq is empty, dk, dv and ds_aux stay zero (and heads_q / heads_kv would be 0).
  if (q.numel() > 0) run_attention_backward(params, tensors, g);
  at::Tensor ds_aux = s_aux ? g.ds_aux.to(s_aux->scalar_type()) : g.ds_aux;
  return {g.dq, g.dk, g.dv, ds_aux};
}
