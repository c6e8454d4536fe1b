// The forward entry points behind the op schema (torch-ext/torch_binding.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

// Functional form: allocates and returns (out, lse); lse is empty unless return_lse.
std::tuple<at::Tensor, at::Tensor> attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    const std::optional<at::Tensor>& seqused_k, const std::optional<at::Tensor>& block_table,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& sinks,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, double softcap,
    int64_t window_left, int64_t window_right, bool return_lse,
    const std::optional<at::Tensor>& seqused_q, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed);

// In-place form: writes `out` (only the rows of its sequences) and returns lse.
at::Tensor attention_forward_into(
    at::Tensor& out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    const std::optional<at::Tensor>& seqused_k, const std::optional<at::Tensor>& block_table,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& sinks,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, double softcap,
    int64_t window_left, int64_t window_right, bool return_lse,
    const std::optional<at::Tensor>& seqused_q, double dropout_p,
    const std::optional<at::Tensor>& dropout_seed);
