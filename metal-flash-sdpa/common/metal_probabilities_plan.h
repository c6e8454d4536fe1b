// What to launch for flash-attn's S_dmask (return_attn_probs=True with dropout_p > 0) on the
// Metal build: plain C++, executed by the same two executors as the forward plan
// (metal/attention_metal.mm, sim/attention_sim.cpp).
//
// One launch, mfs_attention_probs_<dtype> (metal/attention_probabilities.metal): grid
// (max_seqlen_k / MFS_PROBS_THREADS rounded up, max_seqlen_q, batch x heads_q), one thread per
// entry of probs [batch, heads_q, max_seqlen_q, max_seqlen_k]; it reads q, k, the forward's lse
// and the offsets, and writes every entry.
#pragma once

#include <string>
#include <vector>

#include "metal_launch_plan.h"
#include "metal_probabilities_config.h"

// The plan of the S_dmask of a checked forward call with dropout (kDropout, kWriteLse). Throws
// std::invalid_argument for a call without dropout, and for paged K/V (block_table), which the
// cpu build does not cover either. An empty grid gives an empty plan.
LaunchPlan make_probabilities_plan(const AttentionParams& params, MfsDtype dtype,
                                   MfsDtype sinks_dtype, const PlanTarget& target = PlanTarget());

// Every kernel name the plan can pick.
std::vector<std::string> all_probabilities_plan_kernel_names();
