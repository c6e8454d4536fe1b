// The things each backend (cpu, metal, simulated metal) provides to the shared entry points.
// Exactly one backend's definitions are linked into each build variant.
#pragma once

#include "attention_gradients.h"
#include "attention_inputs.h"

// The device type whose tensors this build runs on.
c10::DeviceType backend_device_type();

// Runs the forward pass described by `params` on checked tensors: writes every row of `out` (and
// `lse` when kWriteLse) that belongs to a sequence; with kClearRowsOutsideSequences also the rows
// of a varlen q past cu_seqlens_q[-1] and, with seqused_q, past each sequence's used rows in its
// slot (zeros, lse -inf).
void run_attention_forward(const AttentionParams& params, const AttentionTensors& tensors);

// kClearRowsOutsideSequences for a backend whose offsets the host can read (cpu tensors).
void clear_rows_outside_sequences_on_host(const AttentionTensors& tensors);

// flash-attn's S_dmask of a checked forward call with dropout (kDropout; contiguous K/V), from
// its lse (tensors.lse, the forward's): fills `probs`, fp32 [batch, heads_q, max_seqlen_q,
// max_seqlen_k], zero-filled, with P of every (sequence, head, row, key), negated where dropout
// dropped the entry; entries outside a sequence stay 0. The cpu build's is
// cpu/attention_probabilities.cpp, the Metal build's metal/attention_probabilities.metal.
void run_attention_probabilities(const AttentionParams& params, const AttentionTensors& tensors,
                                 const at::Tensor& probs);

// Runs the backward pass of the functional forward described by `params` (contiguous K/V, lse
// present): fills the zero-initialised gradients in `grads`. A backend without backward kernels
// raises, naming the op.
void run_attention_backward(const AttentionParams& params, const AttentionTensors& tensors,
                            const AttentionGradients& grads);
