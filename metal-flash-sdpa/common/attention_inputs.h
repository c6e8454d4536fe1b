// Checking one attention call's tensors and turning them into AttentionParams: shared by every
// backend (cpu, Metal, the simulated Metal build), so that each backend sees the same contract.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "attention_params.h"

// The tensors of one call, after checking. `out` and `lse` are allocated (or given) by the caller
// of check_attention_inputs; `lse` is an empty tensor when it is not wanted.
struct AttentionTensors {
  at::Tensor q, k, v, out, lse;
  std::optional<at::Tensor> cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes,
      sinks;
  std::optional<at::Tensor> seqused_q;
  // torch's attn_mask as [batch, heads_q, seqlen_q, seqlen_k] (a view; broadcast dimensions have
  // stride 0), set by the scaled_dot_product_attention entry points (attention_sdpa.cpp).
  std::optional<at::Tensor> attn_mask;
};

// Everything an entry point passes down, as the op schema receives it.
struct AttentionArgs {
  at::Tensor q, k, v;
  std::optional<at::Tensor> out;  // given: written in place; absent: allocated
  std::optional<at::Tensor> cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes,
      sinks;
  int64_t max_seqlen_q, max_seqlen_k;
  double softmax_scale;
  double softcap;
  int64_t window_left, window_right;
  bool return_lse;
  // flash-attn 3: only the first seqused_q[b] queries of sequence b count (last, so that the
  // positional initialisers above need not name it).
  std::optional<at::Tensor> seqused_q = std::nullopt;
  // Dropout on the probabilities: p in [0, 1) and, with p > 0, the call's stream state, int64
  // cpu [3] = (seed_lo, seed_hi, offset) (dropout_stream.h; drawn by the Python entry points).
  double dropout_p = 0.0;
  std::optional<at::Tensor> dropout_seed = std::nullopt;
};

// Checks every argument (raising c10::Error / c10::ValueError naming the argument) before
// anything is allocated or written, then allocates what is missing and fills the params.
// `device_type` is the one device this backend runs on. Offsets stored on a device the host
// cannot read cheaply are not read; the kernels clamp against the tensor sizes instead.
AttentionTensors check_attention_inputs(const AttentionArgs& args, c10::DeviceType device_type,
                                        AttentionParams& params);
