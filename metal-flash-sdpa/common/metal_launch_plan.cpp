#include "metal_launch_plan.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace {

const char* dtype_suffix(MfsDtype dtype) {
  switch (dtype) {
    case kMfsFloat32: return "f32";
    case kMfsFloat16: return "f16";
    case kMfsBFloat16: return "bf16";
  }
  throw std::invalid_argument("metal_launch_plan: unknown dtype");
}

int dtype_bytes(MfsDtype dtype) { return dtype == kMfsFloat32 ? 4 : 2; }


// The tensors of the call present in these params, bound at their [[buffer]] indices.
std::vector<PlanBuffer> call_buffers(const AttentionParams& p, bool inputs) {
  std::vector<PlanBuffer> buffers;
  if (inputs) {
    buffers.push_back({MFS_BUF_Q, PlanTensor::Q});
    buffers.push_back({MFS_BUF_K, PlanTensor::K});
    buffers.push_back({MFS_BUF_V, PlanTensor::V});
  }
  buffers.push_back({MFS_BUF_OUT, PlanTensor::Out});
  if (p.flags & kWriteLse) buffers.push_back({MFS_BUF_LSE, PlanTensor::Lse});
  if (p.flags & kVarlenQ) buffers.push_back({MFS_BUF_CU_Q, PlanTensor::CuSeqlensQ});
  if (p.flags & kVarlenK) buffers.push_back({MFS_BUF_CU_K, PlanTensor::CuSeqlensK});
  if (p.flags & kSequsedK) buffers.push_back({MFS_BUF_SEQUSED_K, PlanTensor::SequsedK});
  if (p.flags & kSequsedQ) buffers.push_back({MFS_BUF_SEQUSED_Q, PlanTensor::SequsedQ});
  if (inputs && (p.flags & kPagedKV)) {
    buffers.push_back({MFS_BUF_BLOCK_TABLE, PlanTensor::BlockTable});
  }
  if (inputs && (p.flags & kHasAlibi)) {
    buffers.push_back({MFS_BUF_ALIBI, PlanTensor::AlibiSlopes});
  }
  if (p.flags & kHasSinks) buffers.push_back({MFS_BUF_SINKS, PlanTensor::Sinks});
  return buffers;
}

PlanFunctionConstant bool_constant(int index, bool value) {
  PlanFunctionConstant fc;
  fc.index = index;
  fc.type = PlanFunctionConstant::Type::Bool;
  fc.int_value = value ? 1 : 0;
  fc.float_value = 0.0f;
  return fc;
}

// The call's features as function constants (every launch gets the same set: a pipeline per
// feature combination, no feature branch left in the kernels' loops).
std::vector<PlanFunctionConstant> feature_constants(const AttentionParams& p, MfsDtype sinks_dtype,
                                                    const PlanTarget& target) {
  std::vector<PlanFunctionConstant> fcs;
  PlanFunctionConstant sink;
  sink.index = MFS_FC_SINK_DTYPE;
  sink.type = PlanFunctionConstant::Type::Int;
  sink.int_value = (p.flags & kHasSinks) ? sinks_dtype : kMfsFloat32;
  sink.float_value = 0.0f;
  fcs.push_back(sink);
  fcs.push_back(bool_constant(MFS_FC_VARLEN_Q, p.flags & kVarlenQ));
  fcs.push_back(bool_constant(MFS_FC_VARLEN_K, p.flags & kVarlenK));
  fcs.push_back(bool_constant(MFS_FC_SEQUSED_K, p.flags & kSequsedK));
  fcs.push_back(bool_constant(MFS_FC_PAGED_KV, p.flags & kPagedKV));
  fcs.push_back(bool_constant(MFS_FC_ALIBI, p.flags & kHasAlibi));
  fcs.push_back(bool_constant(MFS_FC_SOFTCAP, p.softcap > 0.0f));
  fcs.push_back(bool_constant(MFS_FC_SINKS, p.flags & kHasSinks));
  fcs.push_back(bool_constant(MFS_FC_WRITE_LSE, p.flags & kWriteLse));
  fcs.push_back(bool_constant(MFS_FC_WINDOW, p.window_left >= 0 || p.window_right >= 0));
  fcs.push_back(bool_constant(MFS_FC_VECTOR_KV, target.kv_vector_aligned));
  fcs.push_back(bool_constant(MFS_FC_SEQUSED_Q, p.flags & kSequsedQ));
  fcs.push_back(bool_constant(MFS_FC_DROPOUT, p.flags & kDropout));
  PlanFunctionConstant mask;
  mask.index = MFS_FC_MASK_KIND;
  mask.type = PlanFunctionConstant::Type::Int;
  mask.int_value = p.mask_kind;
  mask.float_value = 0.0f;
  fcs.push_back(mask);
  fcs.push_back(bool_constant(MFS_FC_MASK_GRAD, p.mask_kind != kNoMask && (p.flags & kMaskGrad)));
  return fcs;
}

KernelLaunch launch(const std::string& name, PlanKernel kind, const AttentionParams& p,
                    MfsDtype sinks_dtype, const PlanTarget& target) {
  KernelLaunch l;
  l.kernel_name = name;
  l.kind = kind;
  l.function_constants = feature_constants(p, sinks_dtype, target);
  l.bytes.push_back(plan_bytes_of(MFS_BUF_PARAMS, p));
  l.static_threadgroup_bytes = 0;
  return l;
}


// The [[buffer]] indices each kernel family declares (its signature in the .metal sources;
// the simulator refuses a launch that leaves one unbound, as Metal's validation does).
std::vector<int> declared_buffers(PlanKernel kind) {
  switch (kind) {
    case PlanKernel::Prefill:
      return {MFS_BUF_Q, MFS_BUF_K, MFS_BUF_V, MFS_BUF_OUT, MFS_BUF_LSE, MFS_BUF_CU_Q,
              MFS_BUF_CU_K, MFS_BUF_SEQUSED_K, MFS_BUF_SEQUSED_Q, MFS_BUF_BLOCK_TABLE,
              MFS_BUF_ALIBI, MFS_BUF_SINKS, MFS_BUF_MASK, MFS_BUF_MASK_TILES};
    case PlanKernel::Decode:
      return {MFS_BUF_Q, MFS_BUF_K, MFS_BUF_V, MFS_BUF_OUT, MFS_BUF_LSE, MFS_BUF_CU_Q,
              MFS_BUF_CU_K, MFS_BUF_SEQUSED_K, MFS_BUF_SEQUSED_Q, MFS_BUF_BLOCK_TABLE,
              MFS_BUF_ALIBI, MFS_BUF_SINKS, MFS_BUF_SCRATCH0, MFS_BUF_SCRATCH1};
    case PlanKernel::DecodeReduce:
      return {MFS_BUF_OUT, MFS_BUF_LSE, MFS_BUF_CU_Q, MFS_BUF_CU_K, MFS_BUF_SEQUSED_K,
              MFS_BUF_SEQUSED_Q, MFS_BUF_SINKS, MFS_BUF_SCRATCH0, MFS_BUF_SCRATCH1};
    case PlanKernel::ClearRows:
      return {MFS_BUF_OUT, MFS_BUF_LSE, MFS_BUF_CU_Q, MFS_BUF_SEQUSED_Q};
    case PlanKernel::MaskSummary:
      return {MFS_BUF_MASK, MFS_BUF_MASK_TILES};
    default:
      break;
  }
  return {};
}

// A read-only buffer the call does not have (no seqused_k, no slopes, ...) is never read by the
// kernel (its flag is off), but stays bound: to 16 zero bytes with setBytes, so that nothing
// aliases a tensor. A function-constant-guarded parameter whose constant is off gets nothing.
void bind_placeholders(KernelLaunch& l) {
  for (int index : declared_buffers(l.kind)) {
    if (plan_buffer_absent(l, index)) continue;
    bool bound = false;
    for (const PlanBuffer& b : l.buffers) bound |= b.index == index;
    if (!bound) l.bytes.push_back({index, std::vector<uint8_t>(16, 0)});
  }
}

bool empty_grid(const KernelLaunch& l) {
  return l.threadgroups[0] == 0 || l.threadgroups[1] == 0 || l.threadgroups[2] == 0;
}

// The largest divisor of `group` whose heads x rows fit the pairs of one threadgroup.
int decode_heads_per_tg(int group, int rows, int max_pairs) {
  for (int hpt = group; hpt > 1; --hpt) {
    if (group % hpt == 0 && hpt * rows <= max_pairs) return hpt;
  }
  return 1;
}

}  // namespace

bool plan_buffer_absent(const KernelLaunch& l, int index) {
  struct Guard {
    int buffer, constant;
  };
  static const Guard kGuards[] = {{MFS_BUF_LSE, MFS_FC_WRITE_LSE},
                                  {MFS_BUF_DMASK, MFS_FC_MASK_GRAD},
                                  {MFS_BUF_SCRATCH0, MFS_FC_DECODE_SPLIT},
                                  {MFS_BUF_SCRATCH1, MFS_FC_DECODE_SPLIT}};
  for (const Guard& g : kGuards) {
    if (g.buffer != index) continue;
    for (const PlanFunctionConstant& fc : l.function_constants) {
      if (fc.index == g.constant) return fc.int_value == 0;
    }
  }
  return false;
}

int gpu_cores_from_architecture(const std::string& name) {
  // "applegpu_g<generation><class>", e.g. applegpu_g14c (M2 Max). The name says the die, not how
  // many of its cores the part enables: the count is the class's full die in that generation
  // (the rule in metal_launch_plan.h, PlanTarget::gpu_cores). Rows: generation 13 (M1 / A14), 14
  // (M2 / A15), 15 (M3 / A16), 16 (M4 / A17 Pro); a later one takes the last row.
  struct Dies {
    int generation, phone, base, pro, max, ultra;
  };
  static const Dies kDies[] = {
      {13, 4, 8, 16, 32, 64},   // A14; M1 8; M1 Pro 14/16; M1 Max 24/32; M1 Ultra 48/64
      {14, 5, 10, 19, 38, 76},  // A15; M2 8/10; M2 Pro 16/19; M2 Max 30/38; M2 Ultra 60/76
      {15, 5, 10, 18, 40, 80},  // A16; M3 8/10; M3 Pro 14/18; M3 Max 30/40; M3 Ultra 60/80
      {16, 6, 10, 20, 40, 80},  // A17 Pro; M4 8/10; M4 Pro 16/20; M4 Max 32/40
  };
  const std::string prefix = "applegpu_g";
  const size_t digits_end = name.find_first_not_of("0123456789", prefix.size());
  if (name.compare(0, prefix.size(), prefix) != 0 || digits_end == prefix.size() ||
      digits_end == std::string::npos || digits_end + 1 != name.size()) {
    return PlanTarget().gpu_cores;  // not an Apple GPU name we can read
  }
  const int generation = std::stoi(name.substr(prefix.size(), digits_end - prefix.size()));
  const Dies* dies = &kDies[0];
  for (const Dies& d : kDies) {
    if (d.generation <= generation) dies = &d;
  }
  switch (name[digits_end]) {
    case 'p': return dies->phone;
    case 'g': return dies->base;
    case 's': return dies->pro;
    case 'c': return dies->max;
    case 'd': return dies->ultra;
    default: return PlanTarget().gpu_cores;
  }
}

uint64_t launch_simdgroups(const KernelLaunch& l) {
  const uint64_t threads = uint64_t(l.threads_per_threadgroup[0]) * l.threads_per_threadgroup[1] *
                          l.threads_per_threadgroup[2];
  return uint64_t(l.threadgroups[0]) * l.threadgroups[1] * l.threadgroups[2] * ((threads + 31) / 32);
}

LaunchPlan make_forward_plan(const AttentionParams& p, MfsDtype dtype, MfsDtype sinks_dtype,
                             const PlanTarget& target, const PlanTuning& tuning) {
  LaunchPlan plan;
  const std::string sfx = dtype_suffix(dtype);
  const int eb = dtype_bytes(dtype);
  if (p.heads_kv <= 0 || p.heads_q % p.heads_kv != 0) {
    throw std::invalid_argument("metal_launch_plan: heads_q must be a multiple of heads_kv");
  }
  const int tile = mfs_head_dim_tile(std::max(p.head_dim, p.head_dim_v));
  if (tile == 0 || p.head_dim % 8 != 0 || p.head_dim_v % 8 != 0) {
    throw std::invalid_argument("metal_launch_plan: head dims must be multiples of 8 up to 512");
  }
  const std::string dim = "_d" + std::to_string(tile);

  const bool mask_read =
      p.mask_kind != kNoMask && plan_mask_summary(p, feature_constants(p, sinks_dtype, target), plan);
  if (p.batch > 0 && p.max_seqlen_q > 0 && p.heads_q > 0) {
    // Dropout and attn_mask run in the prefill whatever the query count: the decode kernel
    // draws no dropout mask and reads no attn_mask (its query rows are few; the prefill's
    // 8-row groups skip closed mask tiles).
    if (p.max_seqlen_q <= MFS_DECODE_MAX_Q && !(p.flags & kDropout) && p.mask_kind == kNoMask) {
      const int group = p.heads_q / p.heads_kv;
      const int rows = p.max_seqlen_q;
      const int max_pairs = mfs_decode_max_tg_pairs(tile, eb);
      MetalLaunchArgs args;
      args.rows_per_head = rows;
      args.rows_per_tg = std::min(rows, max_pairs);
      args.heads_per_tg = decode_heads_per_tg(group, args.rows_per_tg, max_pairs);
      const int row_chunks = static_cast<int>(plan_ceil_div(rows, args.rows_per_tg));
      const int tg_y = p.heads_kv * (group / args.heads_per_tg) * row_chunks;
      const int64_t tgs = int64_t(p.batch) * tg_y;
      // Split the keys while the launch would give the GPU's cores too few SIMD-groups.
      const int64_t simdgroups = tgs * mfs_decode_simdgroups(tile);
      const int64_t target_simdgroups =
          int64_t(std::max(1, target.gpu_cores)) * tuning.target_simdgroups_per_core;
      int splits = 1;
      int64_t keys_per_split = 0;
      if (simdgroups < target_simdgroups) {
        const int64_t wanted = plan_ceil_div(target_simdgroups, simdgroups);
        // A split's partials (written, then read by the reduction) must stay small next to the
        // K/V rows it reads (at most 1/scratch_ratio), and give each SIMD-group a few keys.
        const int64_t pairs = int64_t(args.heads_per_tg) * args.rows_per_tg;
        const int64_t partial_bytes = pairs * (p.head_dim_v + 2) * 4 * 2;
        const int64_t row_bytes = int64_t(p.head_dim + p.head_dim_v) * eb;
        int64_t min_keys = std::max<int64_t>(
            int64_t(tuning.min_keys_per_simdgroup) * mfs_decode_simdgroups(tile),
            plan_ceil_div(tuning.scratch_ratio * partial_bytes, row_bytes));
        min_keys = int64_t(plan_ceil_div(min_keys, MFS_DECODE_SPLIT_GRAIN)) * MFS_DECODE_SPLIT_GRAIN;
        if (p.max_seqlen_k / min_keys >= 2) {
          // The longest split (a multiple of the grain) that still gives `wanted` splits: each
          // split's partials cost traffic, so no more of them than the cores need.
          keys_per_split = plan_ceil_div(plan_ceil_div(p.max_seqlen_k, wanted), MFS_DECODE_SPLIT_GRAIN) *
                           MFS_DECODE_SPLIT_GRAIN;
          while (keys_per_split > min_keys && plan_ceil_div(p.max_seqlen_k, keys_per_split) < wanted) {
            keys_per_split -= MFS_DECODE_SPLIT_GRAIN;
          }
          keys_per_split = std::max(min_keys, keys_per_split);
          splits = static_cast<int>(plan_ceil_div(p.max_seqlen_k, keys_per_split));
        }
      }
      if (splits < 2) {
        splits = 1;
        keys_per_split = 1 << 30;  // every key
      }
      args.num_splits = splits;
      args.keys_per_split = static_cast<int>(keys_per_split);

      KernelLaunch d = launch("mfs_decode_" + sfx + dim, PlanKernel::Decode, p, sinks_dtype, target);
      PlanFunctionConstant live_pairs;
      live_pairs.index = MFS_FC_DECODE_PAIRS;
      live_pairs.type = PlanFunctionConstant::Type::Int;
      live_pairs.int_value = mfs_decode_live_pairs(args.heads_per_tg * args.rows_per_tg, tile, eb);
      live_pairs.float_value = 0.0f;
      d.function_constants.push_back(live_pairs);
      d.function_constants.push_back(bool_constant(MFS_FC_DECODE_SPLIT, splits > 1));
      d.buffers = call_buffers(p, true);
      plan_set_grid(d, splits, tg_y, p.batch, mfs_decode_threads(tile));
      d.bytes.push_back(plan_bytes_of(MFS_BUF_ARGS, args));
      d.static_threadgroup_bytes = mfs_decode_tg_bytes(tile, eb);
      if (splits > 1) {
        const uint64_t slots = uint64_t(p.batch) * p.heads_q * rows * splits;
        plan.scratch.push_back({PlanTensor::Scratch0, slots * p.head_dim_v * 4});
        plan.scratch.push_back({PlanTensor::Scratch1, slots * 2 * 4});
        d.buffers.push_back({MFS_BUF_SCRATCH0, PlanTensor::Scratch0});
        d.buffers.push_back({MFS_BUF_SCRATCH1, PlanTensor::Scratch1});
      }
      plan.launches.push_back(d);
      if (splits > 1) {
        KernelLaunch r = launch("mfs_decode_reduce_" + sfx, PlanKernel::DecodeReduce, p,
                                sinks_dtype, target);
        r.buffers = call_buffers(p, false);
        r.buffers.push_back({MFS_BUF_SCRATCH0, PlanTensor::Scratch0});
        r.buffers.push_back({MFS_BUF_SCRATCH1, PlanTensor::Scratch1});
        r.bytes.push_back(plan_bytes_of(MFS_BUF_ARGS, args));
        plan_set_grid(r, rows, p.heads_q, p.batch, 32);
        plan.launches.push_back(r);
      }
    } else {
      KernelLaunch l = launch("mfs_prefill_" + sfx + dim, PlanKernel::Prefill, p, sinks_dtype,
                              target);
      // Head dims that fill the tile: no 8-wide chunk of Q, K, V or O is past the call's, so the
      // kernel's MMAs need no head-dim guard.
      l.function_constants.push_back(
          bool_constant(MFS_FC_HEAD_DIM_FULL, p.head_dim == tile && p.head_dim_v == tile));
      // q rows on 16-byte boundaries: Q's fragments arrive by 16-byte loads (else element loads).
      l.function_constants.push_back(bool_constant(MFS_FC_VECTOR_Q, target.q_vector_aligned));
      l.buffers = call_buffers(p, true);
      if (mask_read) {
        l.buffers.push_back({MFS_BUF_MASK, PlanTensor::Mask});
        l.buffers.push_back({MFS_BUF_MASK_TILES, PlanTensor::MaskTiles});
      }
      plan_set_grid(l, plan_ceil_div(p.max_seqlen_q, MFS_PREFILL_BQ), p.heads_q, p.batch,
               mfs_prefill_threads(tile));
      l.static_threadgroup_bytes = mfs_prefill_tg_bytes(tile, eb);
      plan.launches.push_back(l);
    }
  }

  if ((p.flags & kClearRowsOutsideSequences) && (p.flags & kVarlenQ)) {
    KernelLaunch c = launch("mfs_clear_rows_" + sfx, PlanKernel::ClearRows, p, sinks_dtype, target);
    c.buffers.push_back({MFS_BUF_OUT, PlanTensor::Out});
    if (p.flags & kWriteLse) c.buffers.push_back({MFS_BUF_LSE, PlanTensor::Lse});
    c.buffers.push_back({MFS_BUF_CU_Q, PlanTensor::CuSeqlensQ});
    if (p.flags & kSequsedQ) c.buffers.push_back({MFS_BUF_SEQUSED_Q, PlanTensor::SequsedQ});
    plan_set_grid(c, plan_ceil_div(p.q_rows, MFS_CLEAR_ROWS_PER_TG), p.heads_q, 1, 32);
    plan.launches.push_back(c);
  }

  for (KernelLaunch& l : plan.launches) bind_placeholders(l);
  plan.launches.erase(std::remove_if(plan.launches.begin(), plan.launches.end(), empty_grid),
                      plan.launches.end());
  return plan;
}

std::vector<std::string> all_plan_kernel_names() {
  std::vector<std::string> names;
  for (MfsDtype dtype : {kMfsFloat32, kMfsFloat16, kMfsBFloat16}) {
    const std::string sfx = dtype_suffix(dtype);
    for (int i = 0; i < MFS_NUM_HEAD_DIM_TILES; ++i) {
      const std::string dim = "_d" + std::to_string(mfs_head_dim_tile_at(i));
      names.push_back("mfs_prefill_" + sfx + dim);
      names.push_back("mfs_decode_" + sfx + dim);
    }
    names.push_back("mfs_decode_reduce_" + sfx);
    names.push_back("mfs_clear_rows_" + sfx);
  }
  names.push_back("mfs_mask_tiles");
  return names;
}

std::string describe_plan(const LaunchPlan& plan) {
  std::ostringstream s;
  for (const PlanScratch& sc : plan.scratch) {
    s << "scratch" << (sc.tensor == PlanTensor::Scratch0 ? 0 : 1) << " " << sc.bytes << "\n";
  }
  for (const KernelLaunch& l : plan.launches) {
    s << l.kernel_name << " grid " << l.threadgroups[0] << "x" << l.threadgroups[1] << "x"
      << l.threadgroups[2] << " threads " << l.threads_per_threadgroup[0] << " tgmem "
      << l.static_threadgroup_bytes;
    for (const PlanBytes& b : l.bytes) {
      if (b.index == MFS_BUF_ARGS && b.bytes.size() == sizeof(MetalLaunchArgs)) {
        MetalLaunchArgs a;
        std::memcpy(&a, b.bytes.data(), sizeof a);
        s << " heads_per_tg " << a.heads_per_tg << " rows " << a.rows_per_head << " splits "
          << a.num_splits << " keys_per_split " << a.keys_per_split << " rows_per_tg "
          << a.rows_per_tg;
      }
    }
    s << "\n";
  }
  return s.str();
}

const char* plan_dtype_suffix(MfsDtype dtype) { return dtype_suffix(dtype); }

bool plan_mask_summary(const AttentionParams& p, const std::vector<PlanFunctionConstant>& fcs,
                       LaunchPlan& plan) {
  if (p.mask_kind < kMaskBool || p.mask_kind > kMaskBFloat16) {
    throw std::invalid_argument("metal_launch_plan: unknown attn_mask kind");
  }
  // What scaled_dot_product_attention makes: fixed length, causal at most (no left window), no
  // ALiBi, softcap or sinks. The kernels' register budget is measured for that corner
  // (tests/metal_cuda/registers.py, `mask`).
  if ((p.flags & (kVarlenQ | kVarlenK | kSequsedK | kSequsedQ | kPagedKV | kHasAlibi |
                  kHasSinks)) ||
      p.window_left >= 0 || p.softcap > 0.0f) {
    throw std::invalid_argument(
        "metal_launch_plan: attn_mask is read on fixed-length calls without a left window, "
        "ALiBi, softcap or sinks only");
  }
  const int batches = mfs_mask_extent(p.mask_batch_stride, p.batch);
  const int heads = mfs_mask_extent(p.mask_head_stride, p.heads_q);
  const int row_tiles = mfs_mask_tiles_along(p.mask_row_stride, p.seqlen_q);
  const int key_tiles = mfs_mask_tiles_along(p.mask_key_stride, p.seqlen_k);
  const uint64_t entries = uint64_t(batches) * heads * row_tiles * key_tiles;
  if (entries == 0 || p.seqlen_q <= 0 || p.seqlen_k <= 0) return false;  // nothing to read
  plan.scratch.push_back({PlanTensor::MaskTiles, entries});
  KernelLaunch l;
  l.kernel_name = "mfs_mask_tiles";
  l.kind = PlanKernel::MaskSummary;
  l.function_constants = fcs;
  l.bytes.push_back(plan_bytes_of(MFS_BUF_PARAMS, p));
  l.buffers.push_back({MFS_BUF_MASK, PlanTensor::Mask});
  l.buffers.push_back({MFS_BUF_MASK_TILES, PlanTensor::MaskTiles});
  plan_set_grid(l, plan_ceil_div(key_tiles, MFS_MASK_SUMMARY_THREADS), row_tiles,
                uint32_t(batches) * heads, MFS_MASK_SUMMARY_THREADS);
  l.static_threadgroup_bytes = 0;
  plan.launches.push_back(l);
  return true;
}

std::vector<PlanFunctionConstant> plan_feature_constants(const AttentionParams& params,
                                                         MfsDtype sinks_dtype,
                                                         const PlanTarget& target) {
  return feature_constants(params, sinks_dtype, target);
}
