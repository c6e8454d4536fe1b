// The tensors of one backward call after checking, as the backends receive them, and the check
// itself: shared by every backend, so each sees the same contract.
#pragma once

#include "attention_inputs.h"

// The forward's tensors are in AttentionTensors (q, k, v, out, lse: the saved ones); these are
// the gradients. dq, dk, dv have the shapes of q, k, v (contiguous, zero-filled: rows outside
// every sequence and keys no query sees keep 0); ds_aux is fp32 [heads] (zero-filled) or empty.
struct AttentionGradients {
  at::Tensor dout;  // the incoming gradient of out, last dimension contiguous
  at::Tensor dq, dk, dv, ds_aux;
  // The gradient of a floating attn_mask, when asked for: fp32 [batch, heads_q, seqlen_q,
  // seqlen_k], zero-filled (the caller sums it over the mask's broadcast dimensions); undefined
  // otherwise.
  at::Tensor dmask;
};

// Checks the forward's arguments as the forward does (check_attention_inputs) and the saved
// out / lse and the incoming dout against them, raising c10::Error / c10::ValueError naming the
// argument; then allocates the gradients. params describe the forward, with lse's strides.
AttentionGradients check_attention_backward_inputs(const AttentionArgs& args, const at::Tensor& lse,
                                                   const at::Tensor& dout,
                                                   c10::DeviceType device_type,
                                                   AttentionParams& params,
                                                   AttentionTensors& tensors);
