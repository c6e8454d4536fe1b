// SIMD-group collectives and barriers. Each lane stores its input in its slot, then meets the
// other live lanes of its SIMD-group in the runtime; the lane that completes the rendezvous runs
// the compute function once for the whole group, and every lane reads its own result.
#pragma once

#include <cstring>
#include <source_location>

#include "abi.h"
#include "math.h"
#include "vec.h"

namespace msl_sim::simd {

using rt::SimdGroup;
using Loc = std::source_location;

template <class T>
inline void put(unsigned char* slot, const T& v) {
  static_assert(sizeof(T) <= kSlotBytes, "value too large for a SIMD collective");
  std::memcpy(static_cast<void*>(slot), static_cast<const void*>(&v), sizeof(T));
}
template <class T>
inline T get(const unsigned char* slot) {
  T v;
  std::memcpy(static_cast<void*>(&v), static_cast<const void*>(slot), sizeof(T));
  return v;
}

// Runs one collective for the calling lane: in -> rendezvous -> out.
template <class R, class T>
inline R exchange(int op, rt::ComputeFn fn, const T& x, uint32_t param, const Loc& loc) {
  rt::Thread* t = rt::t_thread;
  SimdGroup& g = *t->sg;
  put(g.in[t->lane], x);
  g.param[t->lane] = param;
  rt::simd_collective(op, fn, loc);
  return get<R>(g.out[t->lane]);
}

inline int first_live(const SimdGroup& g) { return g.live ? __builtin_ctz(g.live) : 0; }

struct OpSum { template <class T> static T f(T a, T b) { return a + b; } };
struct OpProduct { template <class T> static T f(T a, T b) { return a * b; } };
struct OpMin { template <class T> static T f(T a, T b) { return metal::min(a, b); } };
struct OpMax { template <class T> static T f(T a, T b) { return metal::max(a, b); } };
struct OpAnd { template <class T> static T f(T a, T b) { return a & b; } };
struct OpOr { template <class T> static T f(T a, T b) { return a | b; } };
struct OpXor { template <class T> static T f(T a, T b) { return a ^ b; } };

// Reduction over live lanes in lane order; every lane gets the result.
template <class T, class O>
void reduce_fn(SimdGroup& g) {
  bool have = false;
  T acc{};
  for (int l = 0; l < kSimdWidth; ++l) {
    if (!(g.live >> l & 1u)) continue;
    T v = get<T>(g.in[l]);
    acc = have ? T(O::f(acc, v)) : v;
    have = true;
  }
  for (int l = 0; l < kSimdWidth; ++l) put(g.out[l], acc);
}

// Prefix over live lanes in lane order (exclusive starts from the identity `T(init)`).
template <class T, class O, bool Inclusive, int Init>
void prefix_fn(SimdGroup& g) {
  T acc = T(Init);
  for (int l = 0; l < kSimdWidth; ++l) {
    if (!(g.live >> l & 1u)) continue;
    T v = get<T>(g.in[l]);
    T next = T(O::f(acc, v));
    put(g.out[l], Inclusive ? next : acc);
    acc = next;
  }
}

// Lane l receives the input of lane src(l); `param` carries each lane's argument.
enum class Src { Index, Xor, Up, Down, RotateUp, RotateDown, First };
template <class T, Src S>
void permute_fn(SimdGroup& g) {
  for (int l = 0; l < kSimdWidth; ++l) {
    uint32_t p = g.param[l];
    int src = l;
    switch (S) {
      case Src::Index: src = int(p); break;
      case Src::Xor: src = l ^ int(p); break;
      case Src::Up: src = l - int(p) >= 0 ? l - int(p) : l; break;
      case Src::Down: src = l + int(p) < kSimdWidth ? l + int(p) : l; break;
      case Src::RotateUp: src = (l - int(p % kSimdWidth) + kSimdWidth) % kSimdWidth; break;
      case Src::RotateDown: src = (l + int(p)) % kSimdWidth; break;
      case Src::First: src = first_live(g); break;
    }
    if (src < 0 || src >= kSimdWidth) src = l;
    std::memcpy(g.out[l], g.in[src], sizeof(T));
  }
}

inline void ballot_fn(SimdGroup& g) {
  uint64_t mask = 0;
  for (int l = 0; l < kSimdWidth; ++l)
    if ((g.live >> l & 1u) && get<bool>(g.in[l])) mask |= uint64_t(1) << l;
  for (int l = 0; l < kSimdWidth; ++l) put(g.out[l], mask);
}

}  // namespace msl_sim::simd

namespace metal {

enum class mem_flags : unsigned {
  mem_none = 0,
  mem_device = 1,
  mem_threadgroup = 2,
  mem_texture = 4,
  mem_threadgroup_imageblock = 8,
  mem_object_data = 16,
};
inline constexpr mem_flags operator|(mem_flags a, mem_flags b) {
  return mem_flags(unsigned(a) | unsigned(b));
}

// Memory is coherent in the simulator; the flags say which memory the race detector considers
// ordered by the barrier (runtime/racecheck.h).
inline void threadgroup_barrier(mem_flags f, const std::source_location& loc = std::source_location::current()) {
  msl_sim::rt::threadgroup_barrier(unsigned(f), loc);
}
inline void simdgroup_barrier(mem_flags f, const std::source_location& loc = std::source_location::current()) {
  msl_sim::rt::simdgroup_barrier(unsigned(f), loc);
}

#define MSL_SIM_REDUCE(NAME, OPK, OPS)                                                          \
  template <class T>                                                                            \
  inline T NAME(T x, const std::source_location& loc = std::source_location::current()) {       \
    return msl_sim::simd::exchange<T>(msl_sim::rt::OPK, &msl_sim::simd::reduce_fn<T, msl_sim::simd::OPS>, x, 0, loc); \
  }
MSL_SIM_REDUCE(simd_sum, kOpSum, OpSum)
MSL_SIM_REDUCE(simd_product, kOpProduct, OpProduct)
MSL_SIM_REDUCE(simd_min, kOpMin, OpMin)
MSL_SIM_REDUCE(simd_max, kOpMax, OpMax)
MSL_SIM_REDUCE(simd_and, kOpAnd, OpAnd)
MSL_SIM_REDUCE(simd_or, kOpOr, OpOr)
MSL_SIM_REDUCE(simd_xor, kOpXor, OpXor)
#undef MSL_SIM_REDUCE

#define MSL_SIM_PREFIX(NAME, OPK, OPS, INCL, INIT)                                              \
  template <class T>                                                                            \
  inline T NAME(T x, const std::source_location& loc = std::source_location::current()) {       \
    return msl_sim::simd::exchange<T>(msl_sim::rt::OPK,                                         \
        &msl_sim::simd::prefix_fn<T, msl_sim::simd::OPS, INCL, INIT>, x, 0, loc);              \
  }
MSL_SIM_PREFIX(simd_prefix_inclusive_sum, kOpPrefixInclusiveSum, OpSum, true, 0)
MSL_SIM_PREFIX(simd_prefix_exclusive_sum, kOpPrefixExclusiveSum, OpSum, false, 0)
MSL_SIM_PREFIX(simd_prefix_inclusive_product, kOpPrefixInclusiveProduct, OpProduct, true, 1)
MSL_SIM_PREFIX(simd_prefix_exclusive_product, kOpPrefixExclusiveProduct, OpProduct, false, 1)
#undef MSL_SIM_PREFIX

#define MSL_SIM_PERMUTE(NAME, OPK, SRC)                                                         \
  template <class T>                                                                            \
  inline T NAME(T x, unsigned p, const std::source_location& loc = std::source_location::current()) { \
    return msl_sim::simd::exchange<T>(msl_sim::rt::OPK,                                         \
        &msl_sim::simd::permute_fn<T, msl_sim::simd::Src::SRC>, x, p, loc);                    \
  }
MSL_SIM_PERMUTE(simd_shuffle, kOpShuffle, Index)
MSL_SIM_PERMUTE(simd_shuffle_xor, kOpShuffleXor, Xor)
MSL_SIM_PERMUTE(simd_shuffle_up, kOpShuffleUp, Up)
MSL_SIM_PERMUTE(simd_shuffle_down, kOpShuffleDown, Down)
MSL_SIM_PERMUTE(simd_shuffle_rotate_up, kOpShuffleRotateUp, RotateUp)
MSL_SIM_PERMUTE(simd_shuffle_rotate_down, kOpShuffleRotateDown, RotateDown)
MSL_SIM_PERMUTE(simd_broadcast, kOpBroadcast, Index)
#undef MSL_SIM_PERMUTE

template <class T>
inline T simd_broadcast_first(T x, const std::source_location& loc = std::source_location::current()) {
  return msl_sim::simd::exchange<T>(msl_sim::rt::kOpBroadcastFirst,
                                    &msl_sim::simd::permute_fn<T, msl_sim::simd::Src::First>, x, 0, loc);
}

struct simd_vote {
  using vote_t = uint64_t;
  vote_t v;
  explicit operator vote_t() const { return v; }
  bool all() const { return v == ((uint64_t(1) << msl_sim::kSimdWidth) - 1); }
  bool any() const { return v != 0; }
};
inline simd_vote simd_ballot(bool b, const std::source_location& loc = std::source_location::current()) {
  return simd_vote{msl_sim::simd::exchange<uint64_t>(msl_sim::rt::kOpBallot, &msl_sim::simd::ballot_fn, b, 0, loc)};
}
inline bool simd_all(bool b, const std::source_location& loc = std::source_location::current()) {
  uint64_t m = simd_ballot(b, loc).v;
  return m == msl_sim::rt::t_thread->sg->live;
}
inline bool simd_any(bool b, const std::source_location& loc = std::source_location::current()) {
  return simd_ballot(b, loc).v != 0;
}

// The lowest live lane (no rendezvous: the simulator has no notion of inactive-but-alive lanes).
inline bool simd_is_first() {
  auto* t = msl_sim::rt::t_thread;
  return int(t->lane) == msl_sim::simd::first_live(*t->sg);
}
inline bool simd_is_helper_thread() { return false; }

}  // namespace metal
