#include "metal_probabilities_plan.h"

#include <stdexcept>

LaunchPlan make_probabilities_plan(const AttentionParams& p, MfsDtype dtype, MfsDtype sinks_dtype,
                                   const PlanTarget& target) {
  if (!(p.flags & kDropout) || !(p.flags & kWriteLse)) {
    throw std::invalid_argument("metal_probabilities_plan: S_dmask is of a call with dropout "
                                "and its lse");
  }
  if (p.flags & kPagedKV) {
    throw std::invalid_argument("metal_probabilities_plan: paged K/V (block_table) is not "
                                "covered");
  }
  LaunchPlan plan;
  KernelLaunch l;
  l.kernel_name = std::string("mfs_attention_probs_") + plan_dtype_suffix(dtype);
  l.kind = PlanKernel::Probabilities;
  l.function_constants = plan_feature_constants(p, sinks_dtype, target);
  l.bytes.push_back(plan_bytes_of(MFS_BUF_PARAMS, p));
  l.buffers.push_back({MFS_BUF_Q, PlanTensor::Q});
  l.buffers.push_back({MFS_BUF_K, PlanTensor::K});
  l.buffers.push_back({MFS_BUF_LSE, PlanTensor::Lse});
  l.buffers.push_back({MFS_BUF_PROBS, PlanTensor::Probs});
  // The offsets and slopes the call has; the others stay bound to 16 zero bytes (never read: the
  // flag is off), as the forward plan binds them.
  const struct {
    int index;
    PlanTensor tensor;
    bool present;
  } optional[] = {
      {MFS_BUF_CU_Q, PlanTensor::CuSeqlensQ, (p.flags & kVarlenQ) != 0},
      {MFS_BUF_CU_K, PlanTensor::CuSeqlensK, (p.flags & kVarlenK) != 0},
      {MFS_BUF_SEQUSED_Q, PlanTensor::SequsedQ, (p.flags & kSequsedQ) != 0},
      {MFS_BUF_SEQUSED_K, PlanTensor::SequsedK, (p.flags & kSequsedK) != 0},
      {MFS_BUF_ALIBI, PlanTensor::AlibiSlopes, (p.flags & kHasAlibi) != 0},
  };
  for (const auto& o : optional) {
    if (o.present) {
      l.buffers.push_back({o.index, o.tensor});
    } else {
      l.bytes.push_back({o.index, std::vector<uint8_t>(16, 0)});
    }
  }
  plan_set_grid(l, plan_ceil_div(p.max_seqlen_k, MFS_PROBS_THREADS), uint32_t(p.max_seqlen_q),
                uint32_t(p.batch) * uint32_t(p.heads_q), MFS_PROBS_THREADS);
  l.static_threadgroup_bytes = 0;
  if (l.threadgroups[0] > 0 && l.threadgroups[1] > 0 && l.threadgroups[2] > 0) {
    plan.launches.push_back(l);
  }
  return plan;
}

std::vector<std::string> all_probabilities_plan_kernel_names() {
  std::vector<std::string> names;
  for (MfsDtype dtype : {kMfsFloat32, kMfsFloat16, kMfsBFloat16}) {
    names.push_back(std::string("mfs_attention_probs_") + plan_dtype_suffix(dtype));
  }
  return names;
}
