// The torch side of executing a LaunchPlan, shared by its two executors (the Metal host in
// metal/attention_metal.mm and the simulator executor in sim/attention_sim.cpp): the plan of one
// call, its scratch tensors, and which tensor each PlanTensor binding names.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "attention_gradients.h"
#include "attention_inputs.h"
#include "metal_backward_plan.h"
#include "metal_launch_plan.h"
#include "metal_probabilities_plan.h"

inline MfsDtype mfs_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kMfsFloat32;
    case at::kHalf: return kMfsFloat16;
    case at::kBFloat16: return kMfsBFloat16;
    default: TORCH_CHECK(false, "metal-flash-sdpa: unsupported dtype ", t);
  }
}

// A call's plan plus the scratch tensors it asked for (on q's device: float32, and the uint8
// summary of attn_mask's tiles).
struct PlannedCall {
  LaunchPlan plan;
  at::Tensor scratch0, scratch1, mask_tiles;
};

// Allocates the scratch tensors a plan asks for.
inline void allocate_scratch(PlannedCall& call, const at::Tensor& q) {
  for (const PlanScratch& s : call.plan.scratch) {
    if (s.tensor == PlanTensor::MaskTiles) {
      call.mask_tiles = at::empty({static_cast<int64_t>(s.bytes)}, q.options().dtype(at::kByte));
      continue;
    }
    at::Tensor buffer =
        at::empty({static_cast<int64_t>((s.bytes + 3) / 4)}, q.options().dtype(at::kFloat));
    (s.tensor == PlanTensor::Scratch0 ? call.scratch0 : call.scratch1) = buffer;
  }
}

// Whether every row of t starts on a 16-byte boundary of its buffer (the binding starts at the
// storage offset; buffers themselves are page aligned): then 16-byte loads (the prefill's 8
// half/bfloat elements, 4 float) and 4-element vector loads are aligned.
inline bool rows_vector_aligned(const at::Tensor& t) {
  const int64_t elems = 16 / static_cast<int64_t>(t.element_size());
  if (t.storage_offset() % elems != 0) return false;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) {
    if (t.size(d) > 1 && t.stride(d) % elems != 0) return false;
  }
  return true;
}

// gpu_cores: the executing GPU's core count (the simulated backend passes the plan's default).
inline PlannedCall plan_forward_call(const AttentionParams& params, const AttentionTensors& t,
                                     int gpu_cores = PlanTarget().gpu_cores) {
  PlannedCall call;
  const MfsDtype sinks = t.sinks ? mfs_dtype(t.sinks->scalar_type()) : kMfsFloat32;
  PlanTarget target;
  target.gpu_cores = gpu_cores;
  target.kv_vector_aligned = rows_vector_aligned(t.k) && rows_vector_aligned(t.v);
  target.q_vector_aligned = rows_vector_aligned(t.q);
  call.plan = make_forward_plan(params, mfs_dtype(t.q.scalar_type()), sinks, target);
  allocate_scratch(call, t.q);
  return call;
}

// The tensor a binding names, with a name for error messages.
inline const at::Tensor& plan_tensor(const AttentionTensors& t, const PlannedCall& call,
                                     PlanTensor which, const char** name) {
  switch (which) {
    case PlanTensor::Q: *name = "q"; return t.q;
    case PlanTensor::K: *name = "k"; return t.k;
    case PlanTensor::V: *name = "v"; return t.v;
    case PlanTensor::Out: *name = "out"; return t.out;
    case PlanTensor::Lse: *name = "lse"; return t.lse;
    case PlanTensor::CuSeqlensQ: *name = "cu_seqlens_q"; return t.cu_seqlens_q.value();
    case PlanTensor::CuSeqlensK: *name = "cu_seqlens_k"; return t.cu_seqlens_k.value();
    case PlanTensor::SequsedK: *name = "seqused_k"; return t.seqused_k.value();
    case PlanTensor::SequsedQ: *name = "seqused_q"; return t.seqused_q.value();
    case PlanTensor::BlockTable: *name = "block_table"; return t.block_table.value();
    case PlanTensor::AlibiSlopes: *name = "alibi_slopes"; return t.alibi_slopes.value();
    case PlanTensor::Sinks: *name = "s_aux"; return t.sinks.value();
    case PlanTensor::Scratch0: *name = "scratch0"; return call.scratch0;
    case PlanTensor::Scratch1: *name = "scratch1"; return call.scratch1;
    case PlanTensor::Mask: *name = "attn_mask"; return t.attn_mask.value();
    case PlanTensor::MaskTiles: *name = "attn_mask_tiles"; return call.mask_tiles;
    default: break;  // the backward's tensors: plan_backward_tensor
  }
  TORCH_CHECK(false, "metal-flash-sdpa: unknown plan tensor");
}

// ---- the backward ----------------------------------------------------------------------------

// Strides of a [batch, rows, heads, dim] or (varlen) [rows, heads, dim] tensor, batch 0 if varlen.
inline void rows_heads_strides(const at::Tensor& t, bool varlen, mfs_i64& batch, mfs_i64& row,
                               mfs_i64& head) {
  batch = varlen ? 0 : t.stride(0);
  row = t.stride(varlen ? 0 : 1);
  head = t.stride(varlen ? 1 : 2);
}

// The backward plan of a checked call (check_attention_backward_inputs), its D scratch
// allocated. Every row the kernels stage (q, k, v, dout) must be 4-element aligned for vector
// loads.
inline PlannedCall plan_backward_call(const AttentionParams& params, const AttentionTensors& t,
                                      const AttentionGradients& g,
                                      int gpu_cores = PlanTarget().gpu_cores) {
  const bool varlen_q = params.flags & kVarlenQ;
  const bool varlen_k = params.flags & kVarlenK;
  MetalBackwardArgs args;
  rows_heads_strides(g.dout, varlen_q, args.dout_batch_stride, args.dout_row_stride,
                     args.dout_head_stride);
  rows_heads_strides(g.dq, varlen_q, args.dq_batch_stride, args.dq_row_stride,
                     args.dq_head_stride);
  rows_heads_strides(g.dk, varlen_k, args.dk_batch_stride, args.dk_row_stride,
                     args.dk_head_stride);
  rows_heads_strides(g.dv, varlen_k, args.dv_batch_stride, args.dv_row_stride,
                     args.dv_head_stride);
  args.d_rows_per_batch = varlen_q ? 0 : params.q_rows;
  PlanTarget target;
  target.gpu_cores = gpu_cores;
  target.kv_vector_aligned = rows_vector_aligned(t.q) && rows_vector_aligned(t.k) &&
                             rows_vector_aligned(t.v) && rows_vector_aligned(g.dout);
  const MfsDtype sinks = t.sinks ? mfs_dtype(t.sinks->scalar_type()) : kMfsFloat32;
  PlannedCall call;
  call.plan = make_backward_plan(params, args, mfs_dtype(t.q.scalar_type()), sinks, target);
  allocate_scratch(call, t.q);
  return call;
}

// The tensor a backward binding names: the gradients, else the forward's (plan_tensor).
inline const at::Tensor& plan_backward_tensor(const AttentionTensors& t,
                                              const AttentionGradients& g,
                                              const PlannedCall& call, PlanTensor which,
                                              const char** name) {
  switch (which) {
    case PlanTensor::Dout: *name = "dout"; return g.dout;
    case PlanTensor::Dq: *name = "dq"; return g.dq;
    case PlanTensor::Dk: *name = "dk"; return g.dk;
    case PlanTensor::Dv: *name = "dv"; return g.dv;
    case PlanTensor::DSinks: *name = "ds_aux"; return g.ds_aux;
    case PlanTensor::DMask: *name = "dmask"; return g.dmask;
    default: return plan_tensor(t, call, which, name);
  }
}

// ---- flash-attn's S_dmask -------------------------------------------------------------------

// The S_dmask plan of a checked forward call with dropout (metal_probabilities_plan.h).
inline PlannedCall plan_probabilities_call(const AttentionParams& params, const AttentionTensors& t) {
  const MfsDtype sinks = t.sinks ? mfs_dtype(t.sinks->scalar_type()) : kMfsFloat32;
  PlanTarget target;
  target.kv_vector_aligned = rows_vector_aligned(t.k);
  PlannedCall call;
  call.plan = make_probabilities_plan(params, mfs_dtype(t.q.scalar_type()), sinks, target);
  return call;
}

// The tensor an S_dmask binding names: `probs`, else the forward's (plan_tensor).
inline const at::Tensor& plan_probabilities_tensor(const AttentionTensors& t,
                                                   const at::Tensor& probs,
                                                   const PlannedCall& call, PlanTensor which,
                                                   const char** name) {
  if (which == PlanTensor::Probs) {
    *name = "S_dmask";
    return probs;
  }
  return plan_tensor(t, call, which, name);
}
