// What to launch on the GPU for one attention call: plain C++, no Metal and no torch.
//
// The plan is built once per call by make_forward_plan and then executed by one of two
// executors: the Objective-C++ host (metal/attention_metal.mm, Metal API calls only) or the MSL
// simulator's executor (sim/attention_sim.cpp). Neither executor decides anything: every choice
// (kernel, tiles, grid, bindings, scratch) is here; the numbers the kernels must agree with come
// from metal_kernel_config.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "attention_params.h"
#include "metal_kernel_config.h"
#include "metal_mask_tiles.h"

// Which tensor of the call a buffer binding refers to.
enum class PlanTensor : int {
  Q, K, V, Out, Lse, CuSeqlensQ, CuSeqlensK, SequsedK, BlockTable, AlibiSlopes, Sinks,
  Scratch0, Scratch1,  // temporaries the plan asks the executor to allocate (split-K partials)
  // The backward's own tensors (metal_backward_plan.h): the incoming gradient and the outputs.
  Dout, Dq, Dk, Dv, DSinks,
  SequsedQ,  // flash-attn 3's seqused_q (forward and backward)
  // torch's attn_mask, its per-call tile summary (a scratch the plan asks for, uint8) and the
  // backward's d attn_mask (metal_mask_tiles.h)
  Mask, MaskTiles, DMask,
  Probs,  // flash-attn's S_dmask (metal_probabilities_plan.h)
};

struct PlanBuffer {
  int index;          // [[buffer(index)]]
  PlanTensor tensor;  // bound at the tensor's own storage offset
};

struct PlanBytes {
  int index;                   // [[buffer(index)]] bound with setBytes
  std::vector<uint8_t> bytes;  // the AttentionParams struct, the MetalLaunchArgs struct
};

// A struct's bytes for setBytes at [[buffer(index)]] (the forward and backward plans).
template <typename S>
PlanBytes plan_bytes_of(int index, const S& value) {
  PlanBytes b;
  b.index = index;
  b.bytes.resize(sizeof(S));
  std::memcpy(b.bytes.data(), &value, sizeof(S));
  return b;
}

inline uint32_t plan_ceil_div(int64_t a, int64_t b) { return static_cast<uint32_t>((a + b - 1) / b); }

struct PlanFunctionConstant {
  int index;  // [[function_constant(index)]]
  enum class Type { Bool, Int, Float } type;
  int32_t int_value;  // bool and int
  float float_value;
};

struct PlanThreadgroupMemory {
  int index;       // [[threadgroup(index)]]
  uint32_t bytes;  // multiple of 16
};

struct PlanScratch {
  PlanTensor tensor;  // Scratch0 / Scratch1 (float32 elements) / MaskTiles (bytes)
  uint64_t bytes;     // 0 is never asked for
};

// Which kernel family a launch runs (for tests and benchmarks; executors ignore it).
enum class PlanKernel : int {
  Prefill, Decode, DecodeReduce, ClearRows,
  BackwardRowDot, BackwardDkDv, BackwardDq, BackwardSinks,  // metal_backward_plan.h
  MaskSummary,  // attn_mask's tile summary (first launch of a masked call)
  Probabilities,  // flash-attn's S_dmask (metal_probabilities_plan.h)
};

struct KernelLaunch {
  std::string kernel_name;  // a [[host_name]] of the .metal sources
  PlanKernel kind;
  std::vector<PlanFunctionConstant> function_constants;
  uint32_t threadgroups[3];
  uint32_t threads_per_threadgroup[3];
  std::vector<PlanBuffer> buffers;
  std::vector<PlanBytes> bytes;
  // Dynamic [[threadgroup(n)]] memory: none today (the kernels' threadgroup arrays are sized at
  // compile time from metal_kernel_config.h).
  std::vector<PlanThreadgroupMemory> threadgroup_memory;
  // The kernel's static threadgroup memory, as metal_kernel_config.h sizes it (<= 32 KiB).
  uint32_t static_threadgroup_bytes;
};

// One call may need several launches in order (split-K partials then the reduction; clearing
// the rows outside every sequence). All go to the same encoder, in this order.
struct LaunchPlan {
  std::vector<PlanScratch> scratch;
  std::vector<KernelLaunch> launches;
};

// What the plan needs to know about the GPU and the call's memory beyond AttentionParams.
struct PlanTarget {
  // GPU cores (Apple: 8-10 on base M-series parts, 16-20 Pro, 30-40 Max, 60-80 Ultra). The host
  // derives it from the device (gpu_cores_from_architecture); decode sizes its splits by it.
  int gpu_cores = 10;
  // k and v rows start on 16-byte boundaries (storage offsets and every k/v stride are
  // multiples of 16 bytes): the kernels may load them as 16-byte and 4-element vectors.
  bool kv_vector_aligned = true;
  // q rows start on 16-byte boundaries (the same test on q): the prefill reads Q's rows as
  // 16-byte words (MFS_FC_VECTOR_Q).
  bool q_vector_aligned = true;
};

// Cores of an Apple GPU from MTLDevice.architecture.name ("applegpu_g14c", ...): the digits are
// the generation, the last letter the die class (p phone, g base, s Pro, c Max, d Ultra).
//
// The split-K rule (decode; make_forward_plan, tested by tests/metal_design/plan_split_test.cpp):
// the name cannot say how many cores a part enables (an M2 Max has 30 or 38), so the count is
// the class's full die of that generation (38 for applegpu_g14c). Decode splits the keys until
// the launch has PlanTuning::target_simdgroups_per_core (64) SIMD-groups per counted core; every
// binned part of a class has at least 3/4 of its full die's cores (M1 Max 24/32, M3 Max 30/40,
// M3 Pro 14/18), so it gets between 64 and 64 * 4/3 = 86 per core. The other way round
// (counting the smallest part, 32 for every Max as before) left a 38-core M2 Max at 54 per core
// (a sixth short) and a 40-core M3 Max at 51, while the extra splits a binned part pays for
// cost partials that are each at most 1/scratch_ratio of their split's K/V bytes. Unknown names
// give PlanTarget's default (10); a generation past the table takes its last row.
int gpu_cores_from_architecture(const std::string& name);

// The tuning knobs the plan uses, with their defaults; tests may pass others.
struct PlanTuning {
  // SIMD-groups per GPU core that keep it busy (latency hiding): decode splits keys while it
  // would launch fewer.
  int target_simdgroups_per_core = 64;
  // A split has at least this many keys per SIMD-group of its threadgroup.
  int min_keys_per_simdgroup = 8;
  // A split reads at least this many times more K/V bytes than its partials cost (write + read).
  // The partials grow with the pairs one K/V read serves (a whole GQA group x rows, up to 32):
  // 6 still lets the decode shapes reach 64 SIMD-groups per core with every pair of a
  // group in one threadgroup, where re-reading K/V per half group would cost far more.
  int scratch_ratio = 6;
};

// The plan of one forward call. `dtype` is q/k/v/out's, `sinks_dtype` s_aux's (ignored without
// sinks). Launches with an empty grid are left out, so a plan may be empty.
LaunchPlan make_forward_plan(const AttentionParams& params, MfsDtype dtype, MfsDtype sinks_dtype,
                             const PlanTarget& target = PlanTarget(),
                             const PlanTuning& tuning = PlanTuning());

// SIMD-groups a launch runs (threadgroups x threads / 32).
uint64_t launch_simdgroups(const KernelLaunch& launch);

// Every kernel name the plan can pick (each [[host_name]] the .metal sources must instantiate).
std::vector<std::string> all_plan_kernel_names();

// A readable one-line-per-launch description (tests, benchmarks, error messages).
std::string describe_plan(const LaunchPlan& plan);

// Shared with the backward plan (metal_backward_plan.cpp): the kernel-name suffix of a dtype and
// the call's features as function constants (every launch of a call gets the same set).
// A launch's grid: x, y, z threadgroups of `threads` threads (one dimension).
inline void plan_set_grid(KernelLaunch& l, uint32_t x, uint32_t y, uint32_t z, uint32_t threads) {
  l.threadgroups[0] = x;
  l.threadgroups[1] = y;
  l.threadgroups[2] = z;
  l.threads_per_threadgroup[0] = threads;
  l.threads_per_threadgroup[1] = 1;
  l.threads_per_threadgroup[2] = 1;
}

const char* plan_dtype_suffix(MfsDtype dtype);

// attn_mask (params.mask_kind): the summary's scratch and its launch, which every masked plan
// (forward and backward) puts first. Throws std::invalid_argument for a mask on a call the
// kernels do not read masks for (varlen, paged, a left window, ALiBi, softcap, sinks: SDPA never
// makes those). Returns
// whether it planned them (not when the call has no query or no key: nothing reads the mask).
bool plan_mask_summary(const AttentionParams& params, const std::vector<PlanFunctionConstant>& fcs,
                       LaunchPlan& plan);
std::vector<PlanFunctionConstant> plan_feature_constants(const AttentionParams& params,
                                                         MfsDtype sinks_dtype,
                                                         const PlanTarget& target);

// Whether kernel parameter [[buffer(index)]] is absent from launch `l`: a writable parameter
// declared `[[buffer(index), function_constant(c)]]` (MSL spec 5.8.1.2) whose bool constant c is
// off in l.function_constants. Nothing is bound there, not even a placeholder: the kernel may
// not touch it. The guarded parameters, as the .metal signatures declare them: lse (write_lse)
// and d attn_mask (mask_grad).
bool plan_buffer_absent(const KernelLaunch& l, int index);
