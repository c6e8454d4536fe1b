// The simulated Metal backend: the same LaunchPlan the Metal host executes
// (common/metal_launch_plan.cpp), executed by the project's MSL simulator (tests/msl_sim/) on CPU
// tensors. The kernels are the real .metal sources, translated to C++ by the simulator's source
// step at build time (scripts/build_local.py --variant sim). Nothing is decided here: binding,
// grids, function constants and scratch all come from the plan.
#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../common/attention_backend.h"
#include "../common/metal_plan_tensors.h"
#include "sim_dispatch.h"

c10::DeviceType backend_device_type() { return c10::DeviceType::CPU; }

namespace {

// Runs every launch of a plan; `tensor_of(PlanTensor, const char** name)` resolves a binding.
template <typename TensorOf>
void execute(const PlannedCall& call, TensorOf&& tensor_of) {
  for (const KernelLaunch& l : call.plan.launches) {
    SimLaunch launch;
    launch.kernel = l.kernel_name;
    for (const PlanFunctionConstant& fc : l.function_constants) launch.constants.push_back(fc);
    for (const PlanBuffer& b : l.buffers) {
      const char* name = "";
      const at::Tensor& t = tensor_of(b.tensor, &name);
      TORCH_CHECK(t.device().is_cpu(), name, " must be on cpu for the simulated Metal build");
      // The buffer is the tensor's storage from the tensor's own offset on, as Metal binds it
      // (setBuffer: storage, offset: storage_offset * element_size).
      const size_t offset = static_cast<size_t>(t.storage_offset()) * t.element_size();
      const size_t storage = t.storage().nbytes();
      SimBuffer buffer;
      buffer.index = b.index;
      buffer.name = name;
      buffer.dtype = c10::toString(t.scalar_type());
      buffer.data = static_cast<char*>(t.storage().mutable_data()) + offset;
      buffer.bytes = storage > offset ? storage - offset : 0;
      launch.buffers.push_back(buffer);
    }
    for (const PlanBytes& b : l.bytes) launch.bytes.push_back({b.index, b.bytes});
    std::memcpy(launch.threadgroups, l.threadgroups, sizeof launch.threadgroups);
    std::memcpy(launch.threads_per_threadgroup, l.threads_per_threadgroup,
                sizeof launch.threads_per_threadgroup);
    sim_dispatch(launch);
  }
}

}  // namespace

void run_attention_forward(const AttentionParams& params, const AttentionTensors& tensors) {
  const PlannedCall call = plan_forward_call(params, tensors);
  execute(call, [&](PlanTensor which, const char** name) -> const at::Tensor& {
    return plan_tensor(tensors, call, which, name);
  });
}

void run_attention_backward(const AttentionParams& params, const AttentionTensors& tensors,
                            const AttentionGradients& grads) {
  const PlannedCall call = plan_backward_call(params, tensors, grads);
  execute(call, [&](PlanTensor which, const char** name) -> const at::Tensor& {
    return plan_backward_tensor(tensors, grads, call, which, name);
  });
}

void run_attention_probabilities(const AttentionParams& params, const AttentionTensors& tensors,
                                 const at::Tensor& probs) {
  const PlannedCall call = plan_probabilities_call(params, tensors);
  execute(call, [&](PlanTensor which, const char** name) -> const at::Tensor& {
    return plan_probabilities_tensor(tensors, probs, call, which, name);
  });
}

// ---- test hook (simulated build only) --------------------------------------------------------
// Runs a call whose AttentionParams come from valid offsets, with other (adversarial) offset
// tensors bound in their place: what a GPU kernel faces when cu_seqlens / seqused_k /
// block_table hold garbage the host could not check. With the simulator's bounds checking on,
// any access outside a buffer fails the launch (tests/test_metal_design.py).
#include <torch/library.h>

namespace {

std::tuple<at::Tensor, at::Tensor> sim_forward_with_offsets(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k,
    const std::optional<at::Tensor>& seqused_k, const std::optional<at::Tensor>& block_table,
    int64_t max_seqlen_q, int64_t max_seqlen_k, bool causal,
    const std::optional<at::Tensor>& bound_cu_seqlens_q,
    const std::optional<at::Tensor>& bound_cu_seqlens_k,
    const std::optional<at::Tensor>& bound_seqused_k,
    const std::optional<at::Tensor>& bound_block_table,
    const std::optional<at::Tensor>& seqused_q, const std::optional<at::Tensor>& bound_seqused_q) {
  AttentionArgs args{q, k, v, std::nullopt, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table,
                     std::nullopt, std::nullopt, max_seqlen_q, max_seqlen_k,
                     1.0 / std::sqrt(static_cast<double>(q.size(-1))), 0.0, -1,
                     causal ? 0 : -1, true, seqused_q};
  AttentionParams params;
  AttentionTensors t = check_attention_inputs(args, backend_device_type(), params);
  if (params.flags & kVarlenQ) params.flags |= kClearRowsOutsideSequences;
  if (bound_cu_seqlens_q) t.cu_seqlens_q = bound_cu_seqlens_q;
  if (bound_cu_seqlens_k) t.cu_seqlens_k = bound_cu_seqlens_k;
  if (bound_seqused_k) t.seqused_k = bound_seqused_k;
  if (bound_block_table) t.block_table = bound_block_table;
  if (bound_seqused_q) t.seqused_q = bound_seqused_q;
  run_attention_forward(params, t);
  return {t.out, t.lse};
}

}  // namespace

// The namespace macro is expanded before TORCH_LIBRARY_* paste it.
#define MFS_SIM_LIBRARY_FRAGMENT(NAME, M) TORCH_LIBRARY_FRAGMENT(NAME, M)
#define MFS_SIM_LIBRARY_IMPL(NAME, KEY, M) TORCH_LIBRARY_IMPL(NAME, KEY, M)

MFS_SIM_LIBRARY_FRAGMENT(TORCH_EXTENSION_NAME, ops) {
  ops.def(
      "sim_forward_with_offsets(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q, "
      "Tensor? cu_seqlens_k, Tensor? seqused_k, Tensor? block_table, int max_seqlen_q, "
      "int max_seqlen_k, bool causal, Tensor? bound_cu_seqlens_q, Tensor? bound_cu_seqlens_k, "
      "Tensor? bound_seqused_k, Tensor? bound_block_table, Tensor? seqused_q=None, "
      "Tensor? bound_seqused_q=None) -> (Tensor out, Tensor lse)");
}

MFS_SIM_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, ops) {
  ops.impl("sim_forward_with_offsets", &sim_forward_with_offsets);
}
