// What translated kernels and the runtime share: the per-thread context, the SIMD-group exchange
// slots and the runtime entry points that the compat header calls. Kept small on purpose: the
// scheduler's private state lives in the runtime.
#pragma once

#include <cstddef>
#include <cstdint>
#include <source_location>

namespace msl_sim {

constexpr int kSimdWidth = 32;
constexpr int kSlotBytes = 64;                 // largest value one lane passes to a collective
constexpr uint32_t kMaxThreadgroupMemory = 32768;  // Apple GPUs' limit

namespace rt {

struct SimdGroup;
using ComputeFn = void (*)(SimdGroup&);

// One SIMD-group's exchange area. Lanes write `in` (and `param`) before a collective; the lane
// that completes it runs `compute` once, which fills `out` for every lane.
struct SimdGroup {
  alignas(16) unsigned char in[kSimdWidth][kSlotBytes];
  alignas(16) unsigned char out[kSimdWidth][kSlotBytes];
  uint32_t param[kSimdWidth];
  uint32_t live = 0;     // lanes that exist and have not returned
  uint32_t arrived = 0;  // lanes waiting at the pending collective
  uint32_t dead = 0;     // lanes whose work is declared discarded (MSL_SIM_DEAD_WORK)
  int op = 0;
  ComputeFn compute = nullptr;
  std::source_location site;
  uint32_t index = 0;
};

// Geometry of the current dispatch (read by the argument binder).
struct Geometry {
  uint32_t threadgroups[3];
  uint32_t threads_per_threadgroup[3];
  uint32_t simdgroups_per_threadgroup;
};

// One GPU thread. The runtime owns it; kernels reach it through t_thread.
struct Thread {
  uint32_t tid[3];       // thread_position_in_threadgroup
  uint32_t tgid[3];      // threadgroup_position_in_grid
  uint32_t index;        // thread_index_in_threadgroup
  uint32_t lane;         // thread_index_in_simdgroup
  uint32_t simd;         // simdgroup_index_in_threadgroup
  SimdGroup* sg;
  const Geometry* geometry;
  void* const* buffers;      // [[buffer(i)]] base pointers (staged when bounds are checked)
  void* const* threadgroup;  // [[threadgroup(i)]] base pointers for this threadgroup
  void* worker;              // runtime-private
};

extern thread_local Thread* t_thread __attribute__((tls_model("initial-exec")));

// Collective kinds (for divergence reports and counters).
enum Op : int {
  kOpSimdBarrier = 1, kOpSum, kOpProduct, kOpMin, kOpMax, kOpAnd, kOpOr, kOpXor,
  kOpPrefixInclusiveSum, kOpPrefixExclusiveSum, kOpPrefixInclusiveProduct,
  kOpPrefixExclusiveProduct, kOpShuffle, kOpShuffleXor, kOpShuffleUp, kOpShuffleDown,
  kOpShuffleRotateUp, kOpShuffleRotateDown, kOpBroadcast, kOpBroadcastFirst, kOpBallot, kOpAll,
  kOpAny, kOpMma,
};
const char* op_name(int op);

// Rendezvous of the calling lane's SIMD-group; returns once `compute` has run for the group.
void simd_collective(int op, ComputeFn compute, const std::source_location& site);
// Rendezvous of all live threads of the threadgroup / of the calling lane's SIMD-group; `flags`
// are the barrier's metal::mem_flags (the race detector orders threadgroup memory only across
// barriers with mem_threadgroup).
void threadgroup_barrier(unsigned flags, const std::source_location& site);
void simdgroup_barrier(unsigned flags, const std::source_location& site);

// A function-scope `threadgroup T x[N];` declaration (one static object per declaration and
// template instantiation, used as a key).
struct TgSite {
  const char* name;
  const char* file;
  unsigned line;
};
void* threadgroup_static(const TgSite& site, size_t bytes, size_t align);

// Named event counters a kernel bumps through MSL_SIM_COUNT(name, n) (include/stub/metal_stdlib;
// the macro expands to nothing for Apple's compiler). Names are string literals, interned by
// address (then by text) in the runtime: no function-local statics in instrumented code.
constexpr int kMaxEvents = 32;
void count_event(const char* name, unsigned long long n);

// MSL_SIM_DEAD_WORK(dead): from here on, the calling lane's share of the SIMD-group operations it
// takes part in (MMAs, shuffles, reductions) is discarded work (dead) or not, until the next call.
void mark_dead_work(bool dead);

// Report an unsupported construct reached at run time (stops the launch).
[[noreturn]] void kernel_fail(const char* message, const std::source_location& site);

}  // namespace rt
}  // namespace msl_sim
