// The numbers flash-attn's S_dmask kernel (metal/attention_probabilities.metal) and its plan
// (metal_probabilities_plan.cpp) agree on: read by MSL and C++ alike.
#pragma once

#define MFS_BUF_PROBS 27  // S_dmask: fp32 [batch, heads_q, max_seqlen_q, max_seqlen_k]

// Threads of one threadgroup: one SIMD-group, one key each, of one (sequence, head, row).
#define MFS_PROBS_THREADS 32
