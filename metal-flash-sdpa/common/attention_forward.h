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

// flash-attn's S_dmask (return_attn_probs=True with dropout_p > 0): fp32 [batch, heads,
// max_seqlen_q, max_seqlen_k] (fixed length: seqlen_q, seqlen_k), the forward's probabilities P
// (from its `lse`), negated where dropout dropped the entry, 0 outside each sequence's rows and
// keys. The cpu build only; paged K/V (block_table) refused.
at::Tensor attention_dropout_probs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    const std::optional<at::Tensor>& seqused_k, const std::optional<at::Tensor>& block_table,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& sinks,
    int64_t max_seqlen_q, int64_t max_seqlen_k, double softmax_scale, double softcap,
    int64_t window_left, int64_t window_right, const std::optional<at::Tensor>& seqused_q,
    double dropout_p, const std::optional<at::Tensor>& dropout_seed, const at::Tensor& lse);
