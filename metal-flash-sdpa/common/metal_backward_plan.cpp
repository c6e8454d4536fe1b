#include "metal_backward_plan.h"

#include <cstring>
#include <stdexcept>

namespace {


// The [[buffer]] indices each backward kernel declares (its signature in
// attention_backward.metal), each with the tensor bound there; an index whose tensor the call
// does not have (no cu_seqlens, no slopes) is bound to 16 zero bytes, never read (its function
// constant is off); a function-constant-guarded one whose constant is off (plan_buffer_absent)
// gets nothing.
std::vector<PlanBuffer> declared_buffers(PlanKernel kind) {
  switch (kind) {
    case PlanKernel::BackwardRowDot:
      return {{MFS_BUF_OUT, PlanTensor::Out}, {MFS_BUF_CU_Q, PlanTensor::CuSeqlensQ},
              {MFS_BUF_CU_K, PlanTensor::CuSeqlensK},
              {MFS_BUF_SEQUSED_Q, PlanTensor::SequsedQ}, {MFS_BUF_SEQUSED_K, PlanTensor::SequsedK},
              {MFS_BUF_DOUT, PlanTensor::Dout},
              {MFS_BUF_ROW_D, PlanTensor::Scratch0}};
    case PlanKernel::BackwardDkDv:
      return {{MFS_BUF_Q, PlanTensor::Q}, {MFS_BUF_K, PlanTensor::K}, {MFS_BUF_V, PlanTensor::V},
              {MFS_BUF_LSE, PlanTensor::Lse}, {MFS_BUF_CU_Q, PlanTensor::CuSeqlensQ},
              {MFS_BUF_CU_K, PlanTensor::CuSeqlensK},
              {MFS_BUF_SEQUSED_Q, PlanTensor::SequsedQ}, {MFS_BUF_SEQUSED_K, PlanTensor::SequsedK},
              {MFS_BUF_ALIBI, PlanTensor::AlibiSlopes},
              {MFS_BUF_DOUT, PlanTensor::Dout}, {MFS_BUF_DK, PlanTensor::Dk},
              {MFS_BUF_DV, PlanTensor::Dv}, {MFS_BUF_ROW_D, PlanTensor::Scratch0},
              {MFS_BUF_MASK, PlanTensor::Mask}, {MFS_BUF_MASK_TILES, PlanTensor::MaskTiles}};
    case PlanKernel::BackwardDq:
      return {{MFS_BUF_Q, PlanTensor::Q}, {MFS_BUF_K, PlanTensor::K}, {MFS_BUF_V, PlanTensor::V},
              {MFS_BUF_LSE, PlanTensor::Lse}, {MFS_BUF_CU_Q, PlanTensor::CuSeqlensQ},
              {MFS_BUF_CU_K, PlanTensor::CuSeqlensK},
              {MFS_BUF_SEQUSED_Q, PlanTensor::SequsedQ}, {MFS_BUF_SEQUSED_K, PlanTensor::SequsedK},
              {MFS_BUF_ALIBI, PlanTensor::AlibiSlopes},
              {MFS_BUF_DOUT, PlanTensor::Dout}, {MFS_BUF_DQ, PlanTensor::Dq},
              {MFS_BUF_ROW_D, PlanTensor::Scratch0},
              {MFS_BUF_MASK, PlanTensor::Mask}, {MFS_BUF_MASK_TILES, PlanTensor::MaskTiles},
              {MFS_BUF_DMASK, PlanTensor::DMask}};
    case PlanKernel::BackwardSinks:
      return {{MFS_BUF_LSE, PlanTensor::Lse}, {MFS_BUF_CU_Q, PlanTensor::CuSeqlensQ},
              {MFS_BUF_CU_K, PlanTensor::CuSeqlensK},
              {MFS_BUF_SEQUSED_Q, PlanTensor::SequsedQ}, {MFS_BUF_SEQUSED_K, PlanTensor::SequsedK},
              {MFS_BUF_SINKS, PlanTensor::Sinks},
              {MFS_BUF_DSINKS, PlanTensor::DSinks}, {MFS_BUF_ROW_D, PlanTensor::Scratch0}};
    default:
      throw std::invalid_argument("metal_backward_plan: not a backward kernel");
  }
}

// mask_read: the plan summarised attn_mask (plan_mask_summary), so the tiled passes read it.
bool call_has(const AttentionParams& p, PlanTensor t, bool mask_read) {
  switch (t) {
    case PlanTensor::Mask:
    case PlanTensor::MaskTiles: return mask_read;
    case PlanTensor::DMask: return mask_read && (p.flags & kMaskGrad);
    case PlanTensor::CuSeqlensQ: return p.flags & kVarlenQ;
    case PlanTensor::CuSeqlensK: return p.flags & kVarlenK;
    case PlanTensor::SequsedQ: return p.flags & kSequsedQ;
    case PlanTensor::SequsedK: return p.flags & kSequsedK;
    case PlanTensor::AlibiSlopes: return p.flags & kHasAlibi;
    case PlanTensor::Sinks: return p.flags & kHasSinks;
    default: return true;
  }
}

KernelLaunch backward_launch(const std::string& name, PlanKernel kind, const AttentionParams& p,
                             const MetalBackwardArgs& args, MfsDtype sinks_dtype,
                             const PlanTarget& target, bool mask_read, uint32_t x, uint32_t y,
                             uint32_t z, uint32_t threads, uint32_t tg_bytes) {
  KernelLaunch l;
  l.kernel_name = name;
  l.kind = kind;
  l.function_constants = plan_feature_constants(p, sinks_dtype, target);
  for (const PlanBuffer& b : declared_buffers(kind)) {
    if (plan_buffer_absent(l, b.index)) continue;
    if (call_has(p, b.tensor, mask_read)) {
      l.buffers.push_back(b);
    } else {
      l.bytes.push_back({b.index, std::vector<uint8_t>(16, 0)});
    }
  }
  l.bytes.push_back(plan_bytes_of(MFS_BUF_PARAMS, p));
  l.bytes.push_back(plan_bytes_of(MFS_BUF_BWD_ARGS, args));
  plan_set_grid(l, x, y, z, threads);
  l.static_threadgroup_bytes = tg_bytes;
  return l;
}

}  // namespace

LaunchPlan make_backward_plan(const AttentionParams& p, const MetalBackwardArgs& args,
                              MfsDtype dtype, MfsDtype sinks_dtype, const PlanTarget& target) {
  if ((p.flags & kPagedKV) || ((p.flags & kSequsedK) && !(p.flags & kVarlenK))) {
    throw std::invalid_argument(
        "metal_backward_plan: the backward covers contiguous K/V only (no block_table, no "
        "seqused_k without cu_seqlens_k)");
  }
  if (!(p.flags & kWriteLse)) {
    throw std::invalid_argument("metal_backward_plan: the backward needs the forward's lse");
  }
  if (p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0) {
    throw std::invalid_argument("metal_backward_plan: heads_q must be a multiple of heads_kv");
  }
  const int tile = mfs_head_dim_tile(p.head_dim > p.head_dim_v ? p.head_dim : p.head_dim_v);
  if (tile == 0 || p.head_dim % 8 != 0 || p.head_dim_v % 8 != 0) {
    throw std::invalid_argument("metal_backward_plan: head dims must be multiples of 8 up to 512");
  }
  LaunchPlan plan;
  // D: one float per (query row, head) of the tensor.
  const int64_t rows = (p.flags & kVarlenQ) ? int64_t(p.q_rows) : int64_t(p.batch) * p.q_rows;
  if (rows <= 0 || p.heads_q <= 0 || p.batch <= 0) return plan;  // no query: every gradient 0
  plan.scratch.push_back({PlanTensor::Scratch0, uint64_t(rows) * p.heads_q * 4});

  const std::string sfx = plan_dtype_suffix(dtype);
  const std::string dim = "_d" + std::to_string(tile);
  const int eb = dtype == kMfsFloat32 ? 4 : 2;
  const bool mask_read = p.mask_kind != kNoMask &&
                         plan_mask_summary(p, plan_feature_constants(p, sinks_dtype, target), plan);
  plan.launches.push_back(backward_launch(
      "mfs_bwd_row_dot_" + sfx, PlanKernel::BackwardRowDot, p, args, sinks_dtype, target, mask_read,
      plan_ceil_div(p.max_seqlen_q, MFS_BWD_DOT_ROWS), p.heads_q, p.batch, MFS_BWD_DOT_THREADS, 0));
  // dK/dV and dQ: by full-width rows (no partials, one barrier a streamed tile) where the
  // accumulators fit a SIMD-group's registers and the tiles threadgroup memory, else by head-dim
  // shares.
  const bool rows_kernels = mfs_bwd_rows_tile(tile, eb);
  const std::string pass = rows_kernels ? "_rows_" : "_";
  const int own = rows_kernels ? MFS_BWD_ROWS_OWN : MFS_BWD_OWN;
  const int threads = rows_kernels ? MFS_BWD_ROWS_THREADS : mfs_bwd_threads(tile);
  const uint32_t tg_bytes = static_cast<uint32_t>(
      rows_kernels ? mfs_bwd_rows_tg_bytes(tile, eb) : mfs_bwd_tg_bytes(tile, eb));
  plan.launches.push_back(backward_launch(
      "mfs_bwd_dkdv" + pass + sfx + dim, PlanKernel::BackwardDkDv, p, args, sinks_dtype, target,
      mask_read, plan_ceil_div(p.max_seqlen_k, own), p.heads_kv, p.batch, threads, tg_bytes));
  plan.launches.push_back(backward_launch(
      "mfs_bwd_dq" + pass + sfx + dim, PlanKernel::BackwardDq, p, args, sinks_dtype, target,
      mask_read, plan_ceil_div(p.max_seqlen_q, own), p.heads_q, p.batch, threads, tg_bytes));
  if (p.flags & kHasSinks) {
    plan.launches.push_back(backward_launch("mfs_bwd_sinks", PlanKernel::BackwardSinks, p, args,
                                            sinks_dtype, target, mask_read, 1, p.heads_q, 1,
                                            MFS_BWD_SINK_THREADS, 0));
  }
  std::vector<KernelLaunch> kept;
  for (KernelLaunch& l : plan.launches) {
    if (l.threadgroups[0] && l.threadgroups[1] && l.threadgroups[2]) kept.push_back(l);
  }
  plan.launches = kept;
  return plan;
}

std::vector<std::string> all_backward_plan_kernel_names() {
  std::vector<std::string> names;
  for (MfsDtype dtype : {kMfsFloat32, kMfsFloat16, kMfsBFloat16}) {
    const std::string sfx = plan_dtype_suffix(dtype);
    const int eb = dtype == kMfsFloat32 ? 4 : 2;
    names.push_back("mfs_bwd_row_dot_" + sfx);
    for (int i = 0; i < MFS_NUM_HEAD_DIM_TILES; ++i) {
      const std::string dim = "_d" + std::to_string(mfs_head_dim_tile_at(i));
      const std::string rows = mfs_bwd_rows_tile(mfs_head_dim_tile_at(i), eb) ? "rows_" : "";
      names.push_back("mfs_bwd_dkdv_" + rows + sfx + dim);
      names.push_back("mfs_bwd_dq_" + rows + sfx + dim);
    }
  }
  names.push_back("mfs_bwd_sinks");
  names.push_back("mfs_mask_tiles");
  return names;
}
