// What to launch on the GPU for one backward call: plain C++, no Metal and no torch, executed by
// the same two executors as the forward plan (metal/attention_metal.mm, sim/attention_sim.cpp).
//
// Launches, in order (one encoder):
//   mfs_bwd_row_dot_<dtype>       D = rowsum(dO * O), float32, into Scratch0
//   mfs_bwd_dkdv_<dtype>_d<tile>  grid (key tiles of 16, heads_kv, batch): dK, dV
//   mfs_bwd_dq_<dtype>_d<tile>    grid (query tiles of 16, heads_q, batch): dQ
//   mfs_bwd_sinks                 with s_aux: d s_aux, one SIMD-group per query head
// Tiles, threads and threadgroup memory come from metal_backward_config.h.
#pragma once

#include <string>
#include <vector>

#include "metal_backward_config.h"
#include "metal_launch_plan.h"

// The plan of one backward call of the functional forward (contiguous K/V: no block_table, no
// seqused_k; lse present). `args` are the strides of dout, dq, dk, dv. Throws
// std::invalid_argument for what the backward does not cover. Launches with an empty grid are
// left out.
LaunchPlan make_backward_plan(const AttentionParams& params, const MetalBackwardArgs& args,
                              MfsDtype dtype, MfsDtype sinks_dtype,
                              const PlanTarget& target = PlanTarget());

// Every kernel name the backward plan can pick.
std::vector<std::string> all_backward_plan_kernel_names();
