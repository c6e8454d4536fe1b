// flash-attn's S_dmask on the cpu (attention_probabilities.cpp).
#pragma once

#include <ATen/ATen.h>

#include "../common/attention_inputs.h"

// probs: fp32 [batch, heads_q, max_seqlen_q, max_seqlen_k], zero-filled; receives P of every
// (sequence, head, row, key) of the call (from the forward's `lse`), negated where dropout
// dropped the entry. Contiguous K/V only (no block_table).
void write_attention_probabilities(const AttentionParams& params, const AttentionTensors& tensors,
                                   const at::Tensor& lse, at::Tensor& probs);
