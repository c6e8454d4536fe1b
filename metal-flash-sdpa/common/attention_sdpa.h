// The entry points behind torch.nn.functional.scaled_dot_product_attention's drop-in
// (torch-ext/metal_flash_sdpa/_sdpa.py): the fixed-length forward and backward with torch's
// attn_mask. The Python side has already mapped torch's layout, is_causal (top-left) and GQA
// onto the fixed-length form: q [batch, seqlen_q, heads_q, head_dim], k/v [batch, seqlen_k,
// heads_kv, head_dim(_v)], attn_mask [batch, heads_q, seqlen_q, seqlen_k] (a broadcast view).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

// Returns (out, lse); lse is empty unless return_lse. window_right is the causal bound (-1 off).
std::tuple<at::Tensor, at::Tensor> sdpa_forward(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v,
                                                const std::optional<at::Tensor>& attn_mask,
                                                double softmax_scale, int64_t window_right,
                                                bool return_lse, double dropout_p,
                                                const std::optional<at::Tensor>& dropout_seed);

// Returns (dq, dk, dv, dmask); dmask is fp32 [batch, heads_q, seqlen_q, seqlen_k] when mask_grad
// (a floating attn_mask that requires grad), an empty tensor otherwise.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sdpa_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& attn_mask,
    double softmax_scale, int64_t window_right, bool mask_grad, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed);
