#include "attention_sdpa.h"

#include <c10/util/Exception.h>

#include "attention_backend.h"
#include "attention_backward.h"
#include "attention_gradients.h"

namespace {

AttentionArgs sdpa_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        std::optional<at::Tensor> out, double softmax_scale, int64_t window_right,
                        bool return_lse, double dropout_p,
                        const std::optional<at::Tensor>& dropout_seed) {
  return AttentionArgs{q, k, v, std::move(out), std::nullopt, std::nullopt, std::nullopt,
                       std::nullopt, std::nullopt, std::nullopt, 0, 0, softmax_scale, 0.0,
                       /*window_left=*/-1, window_right, return_lse, std::nullopt, dropout_p,
                       dropout_seed};
}

AttentionMaskKind mask_kind(at::ScalarType t) {
  switch (t) {
    case at::kBool: return kMaskBool;
    case at::kFloat: return kMaskFloat32;
    case at::kHalf: return kMaskFloat16;
    case at::kBFloat16: return kMaskBFloat16;
    default:
      TORCH_CHECK_VALUE(false, "attn_mask must be bool, float32, float16 or bfloat16, got ", t);
  }
  return kNoMask;
}

// Checks attn_mask against the checked q/k and describes it in the params (strides in elements,
// 0 along broadcast dimensions: the broadcast is never materialised).
void attach_mask(const std::optional<at::Tensor>& attn_mask, AttentionParams& p,
                 AttentionTensors& t) {
  if (!attn_mask) return;
  const at::Tensor& m = *attn_mask;
  TORCH_CHECK(m.device() == t.q.device(), "attn_mask must be on q's device (", t.q.device(),
              "), got ", m.device());
  const AttentionMaskKind kind = mask_kind(m.scalar_type());
  const std::vector<int64_t> shape{t.q.size(0), t.q.size(2), t.q.size(1), t.k.size(1)};
  TORCH_CHECK_VALUE(m.sizes() == at::IntArrayRef(shape), "attn_mask must be [batch, heads_q, ",
                    "seqlen_q, seqlen_k] = ", at::IntArrayRef(shape), " here, got ", m.sizes());
  auto stride = [&](int d) { return m.size(d) == 1 ? int64_t(0) : m.stride(d); };
  p.mask_batch_stride = stride(0);
  p.mask_head_stride = stride(1);
  p.mask_row_stride = stride(2);
  p.mask_key_stride = stride(3);
  p.mask_kind = kind;
  t.attn_mask = m;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sdpa_forward(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v,
                                                const std::optional<at::Tensor>& attn_mask,
                                                double softmax_scale, int64_t window_right,
                                                bool return_lse, double dropout_p,
                                                const std::optional<at::Tensor>& dropout_seed) {
  // out is written through torch's layout [batch, heads, seqlen_q, head_dim_v] (contiguous, as
  // torch returns it), seen here as the fixed-length [batch, seqlen_q, heads, head_dim_v] view.
  std::optional<at::Tensor> out;
  if (q.dim() == 4 && v.dim() == 4) {  // otherwise the checks below name the bad shape
    out = at::empty({q.size(0), q.size(2), q.size(1), v.size(-1)}, q.options()).transpose(1, 2);
  }
  AttentionParams params;
  AttentionTensors t = check_attention_inputs(
      sdpa_args(q, k, v, out, softmax_scale, window_right, return_lse, dropout_p, dropout_seed),
      backend_device_type(), params);
  attach_mask(attn_mask, params, t);
  run_attention_forward(params, t);
  return {t.out, t.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sdpa_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& attn_mask,
    double softmax_scale, int64_t window_right, bool mask_grad, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed) {
  AttentionParams params;
  AttentionTensors t;
  AttentionGradients g = check_attention_backward_inputs(
      sdpa_args(q, k, v, out, softmax_scale, window_right, false, dropout_p, dropout_seed), lse,
      dout,
      backend_device_type(), params, t);
  attach_mask(attn_mask, params, t);
  TORCH_CHECK_VALUE(!mask_grad || (attn_mask && params.mask_kind != kMaskBool),
                    "mask_grad needs a floating attn_mask");
  if (mask_grad) {
    params.flags |= kMaskGrad;  // the Metal plan's function constant; the cpu reads g.dmask
    g.dmask = at::zeros({q.size(0), q.size(2), q.size(1), k.size(1)},
                        q.options().dtype(at::kFloat));
  }
  run_attention_backward(params, t, g);
  return {g.dq, g.dk, g.dv, mask_grad ? g.dmask : at::empty({0}, q.options().dtype(at::kFloat))};
}
