// The backward entry point behind the op schema (torch-ext/torch_binding.cpp): gradients of the
// functional forward (flash_attn_varlen_func / flash_attn_func) with respect to q, k, v and s_aux.
// Paged K/V and kv-cache calls have no backward (the Python autograd formula refuses them);
// seqused_q / seqused_k (flash-attn 3, with cu_seqlens) do.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

// Returns (dq, dk, dv, ds_aux) in the dtypes and shapes of q, k, v, s_aux; ds_aux is an empty
// tensor without s_aux. `out` and `lse` (fp32, with the sink) are the forward's.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, const std::optional<at::Tensor>& cu_seqlens_q,
    const std::optional<at::Tensor>& cu_seqlens_k, const std::optional<at::Tensor>& alibi_slopes,
    const std::optional<at::Tensor>& s_aux, int64_t max_seqlen_q, int64_t max_seqlen_k,
    double softmax_scale, double softcap, int64_t window_left, int64_t window_right,
    const std::optional<at::Tensor>& seqused_q, const std::optional<at::Tensor>& seqused_k,
    double dropout_p, const std::optional<at::Tensor>& dropout_seed);
