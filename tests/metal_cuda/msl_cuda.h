// The MSL library our kernels use, for nvcc (CUDA C++, sm_90): the compat header of the CUDA
// translation (translate_cuda.py). Only what metal-flash-sdpa/metal/*.metal calls is here.
//
// Metal -> CUDA:
// - address spaces (device, constant, threadgroup, thread) are erased by the source step (one
//   flat address space; not macros here: CUDA's own __device__ expands to the word `device`);
// - a SIMD-group is a warp (32 lanes, lane = thread index in the threadgroup % 32: every kernel
//   is launched with 1-D threadgroups); simd_* are warp shuffles, barriers are __syncthreads /
//   __syncwarp;
// - half and bfloat are 16-bit storage types that compute in float (the kernels widen every
//   operand to fp32 themselves); bits round to nearest even as Apple's conversions do;
// - simdgroup_matrix<T, 8, 8> holds a lane's two elements in Apple's lane layout
//   (tests/msl_sim/include/msl_sim/matrix.h, the same layout), and simdgroup_multiply_accumulate
//   is either exact (MSL_CUDA_MMA_EXACT: shuffles, the simulator's summation order, for running
//   on a GPU) or a register-neutral stand-in (counting registers: see mma_standin below).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include <type_traits>
#include <utility>

#ifndef MSL_SIM_COUNT
#define MSL_SIM_COUNT(name, n)
#endif

// Every function of the translated sources (the source step adds these): always inlined, as
// Apple's compiler does with MSL (no recursion, no function pointers).
#define MSLC_FN __device__ __forceinline__
#define MSLC_INLINE_FN __device__ __attribute__((always_inline))  // on a function already `inline`
#define MSLC_CONSTEXPR_FN __host__ __device__

namespace mslc {

// ---- 16-bit floating types ----------------------------------------------------------------------
struct half {
  unsigned short bits;
  half() = default;
  __device__ half(float f) : bits(__half_as_ushort(__float2half_rn(f))) {}
  __device__ half(int i) : half(float(i)) {}
  __device__ operator float() const { return __half2float(__ushort_as_half(bits)); }
};
struct bfloat {
  unsigned short bits;
  bfloat() = default;
  __device__ bfloat(float f) : bits(__bfloat16_as_ushort(__float2bfloat16_rn(f))) {}
  __device__ bfloat(int i) : bfloat(float(i)) {}
  __device__ operator float() const { return __bfloat162float(__ushort_as_bfloat16(bits)); }
};

// ---- vectors (MSL 2.2: aligned to their size, 3-vectors as 4) -------------------------------------
template <typename T, int N>
struct vec;
template <typename T>
struct alignas(2 * sizeof(T)) vec<T, 2> {
  T x, y;
  vec() = default;
  __device__ explicit vec(T s) : x(s), y(s) {}
  __device__ vec(T a, T b) : x(a), y(b) {}
  template <typename U>
  __device__ explicit vec(const vec<U, 2>& o) : x(T(float(o.x))), y(T(float(o.y))) {}
  __device__ T& operator[](int i) { return i == 0 ? x : y; }
  __device__ const T& operator[](int i) const { return i == 0 ? x : y; }
};
template <typename T>
struct alignas(4 * sizeof(T)) vec<T, 3> {
  T x, y, z;
  vec() = default;
  __device__ vec(T a, T b, T c) : x(a), y(b), z(c) {}
};
template <typename T>
struct alignas(4 * sizeof(T)) vec<T, 4> {
  T x, y, z, w;
  vec() = default;
  __device__ explicit vec(T s) : x(s), y(s), z(s), w(s) {}
  __device__ vec(T a, T b, T c, T d) : x(a), y(b), z(c), w(d) {}
  template <typename U>
  __device__ explicit vec(const vec<U, 4>& o)
      : x(T(float(o.x))), y(T(float(o.y))), z(T(float(o.z))), w(T(float(o.w))) {}
  __device__ T& operator[](int i) { return i == 0 ? x : i == 1 ? y : i == 2 ? z : w; }
  __device__ const T& operator[](int i) const { return i == 0 ? x : i == 1 ? y : i == 2 ? z : w; }
};

// ---- SIMD-group = warp -------------------------------------------------------------------------
__device__ __forceinline__ unsigned lane_id() { return threadIdx.x & 31u; }

template <typename T>
__device__ __forceinline__ T shfl_bits(T v, int src, bool xor_mask) {
  static_assert(sizeof(T) <= 4, "shuffled scalars are at most 32-bit");
  unsigned u = 0;
  memcpy(&u, &v, sizeof(T));
  u = xor_mask ? __shfl_xor_sync(0xffffffffu, u, src) : __shfl_sync(0xffffffffu, u, src);
  T r;
  memcpy(&r, &u, sizeof(T));
  return r;
}
template <typename T, int N>
__device__ __forceinline__ vec<T, N> shfl_bits(vec<T, N> v, int src, bool xor_mask) {
  vec<T, N> r = v;
  for (int i = 0; i < N; ++i) (&r.x)[i] = shfl_bits((&v.x)[i], src, xor_mask);
  return r;
}

// ---- simdgroup_matrix (8 x 8 only) --------------------------------------------------------------
template <typename T, int Cols, int Rows>
struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "8x8 simdgroup_matrix only");
  vec<T, 2> e_;
  __device__ vec<T, 2>& thread_elements() { return e_; }
  __device__ const vec<T, 2>& thread_elements() const { return e_; }
};

// Apple's lane layout: lane l holds (row, col), (row, col + 1) with row = 4 b4 + 2 b2 + b1 and
// col = 4 b3 + 2 b0 (b_i: bit i of l). The lane holding (r, c), c even:
__device__ __forceinline__ int lane_of(int r, int c) {
  return ((c >> 1) & 1) | ((r & 1) << 1) | (((r >> 1) & 1) << 2) | (((c >> 2) & 1) << 3) |
         (((r >> 2) & 1) << 4);
}

#ifdef MSL_CUDA_MMA_EXACT
// d = a.b + c, each element summed as the simulator does: c, then a[r][0] b[0][c] ... in order,
// every product and sum rounded to fp32 (no fused multiply-add).
__device__ __forceinline__ void mma_f32(float& d0, float& d1, float a0, float a1, float b0,
                                        float b1, float c0, float c1) {
  const unsigned l = lane_id();
  const int r = (int)(((l / 4) & 4) + ((l / 2) % 4));
  const int c = (int)(((l / 4) & 2) * 2 + (l % 2) * 2);
  float s0 = c0, s1 = c1;
#pragma unroll
  for (int k = 0; k < 8; k += 2) {
    const int la = lane_of(r, k), lb0 = lane_of(k, c), lb1 = lane_of(k + 1, c);
    const float ak0 = __shfl_sync(0xffffffffu, a0, la), ak1 = __shfl_sync(0xffffffffu, a1, la);
    const float b00 = __shfl_sync(0xffffffffu, b0, lb0), b01 = __shfl_sync(0xffffffffu, b1, lb0);
    const float b10 = __shfl_sync(0xffffffffu, b0, lb1), b11 = __shfl_sync(0xffffffffu, b1, lb1);
    s0 = __fadd_rn(s0, __fmul_rn(ak0, b00));
    s1 = __fadd_rn(s1, __fmul_rn(ak0, b01));
    s0 = __fadd_rn(s0, __fmul_rn(ak1, b10));
    s1 = __fadd_rn(s1, __fmul_rn(ak1, b11));
  }
  d0 = s0;
  d1 = s1;
}
#else
// The register-neutral stand-in for counting registers: Apple's MMA is one instruction on the
// lane's registers (2 elements each of A, B, C in, 2 of D out). An emulation by shuffles holds
// 8 + 16 temporaries per call that the hardware never needs, so the count uses an opaque
// instruction with the same operands: every input is consumed (nothing is dead-code eliminated)
// and the outputs depend on all of them.
__device__ __forceinline__ void mma_f32(float& d0, float& d1, float a0, float a1, float b0,
                                        float b1, float c0, float c1) {
  asm volatile("{ fma.rn.f32 %0, %2, %4, %6; fma.rn.f32 %1, %3, %5, %7; }"
               : "=f"(d0), "=f"(d1)
               : "f"(a0), "f"(a1), "f"(b0), "f"(b1), "f"(c0), "f"(c1));
}
#endif

}  // namespace mslc

// ---- namespace metal: the library calls, as the kernels spell them -------------------------------
namespace metal {
using mslc::bfloat;
using mslc::half;
using mslc::simdgroup_matrix;
using mslc::vec;
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;

// MSL's as_type: the same bits seen as another type of the same size (attn_mask's values).
template <typename To, typename From>
__device__ __forceinline__ To as_type(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "as_type needs types of the same size");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// Templates, so CUDA's own ::min(int, int) & co. win overload resolution where both exist.
template <typename T>
__device__ __forceinline__ T min(T a, T b) { return a < b ? a : b; }
template <typename T>
__device__ __forceinline__ T max(T a, T b) { return a > b ? a : b; }
template <typename T>
__device__ __forceinline__ T exp2(T x) { return exp2f(x); }
template <typename T>
__device__ __forceinline__ T log2(T x) { return log2f(x); }
template <typename T>
__device__ __forceinline__ T exp(T x) { return expf(x); }
template <typename T>
__device__ __forceinline__ T log(T x) { return logf(x); }
template <typename T>
__device__ __forceinline__ T tanh(T x) { return tanhf(x); }
// MSL 6.3 (integer functions): the high 32 bits of a 32 x 32-bit product (dropout_stream.h).
__device__ __forceinline__ unsigned mulhi(unsigned a, unsigned b) { return __umulhi(a, b); }
namespace precise {
__device__ __forceinline__ float tanh(float x) { return tanhf(x); }
__device__ __forceinline__ float exp(float x) { return expf(x); }
__device__ __forceinline__ float log(float x) { return logf(x); }
}  // namespace precise

enum class mem_flags : int { mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4 };
__device__ __forceinline__ mem_flags operator|(mem_flags a, mem_flags b) {
  return mem_flags(int(a) | int(b));
}
__device__ __forceinline__ void threadgroup_barrier(mem_flags) { __syncthreads(); }
__device__ __forceinline__ void simdgroup_barrier(mem_flags) { __syncwarp(); }

template <typename T, typename L>
__device__ __forceinline__ T simd_shuffle(T v, L lane) { return mslc::shfl_bits(v, int(lane), false); }
template <typename T, typename L>
__device__ __forceinline__ T simd_broadcast(T v, L lane) { return mslc::shfl_bits(v, int(lane), false); }
template <typename T, typename M>
__device__ __forceinline__ T simd_shuffle_xor(T v, M mask) { return mslc::shfl_bits(v, int(mask), true); }
// Butterfly reductions: every lane gets the same result (a fixed order, as on the hardware).
template <typename T>
__device__ __forceinline__ T simd_sum(T v) {
  for (int m = 16; m >= 1; m /= 2) v += simd_shuffle_xor(v, m);
  return v;
}
template <typename T>
__device__ __forceinline__ T simd_max(T v) {
  for (int m = 16; m >= 1; m /= 2) v = max(v, simd_shuffle_xor(v, m));
  return v;
}

template <typename T, int C, int R>
__device__ __forceinline__ simdgroup_matrix<T, C, R> make_filled_simdgroup_matrix(T value) {
  simdgroup_matrix<T, C, R> m;
  m.e_.x = value;
  m.e_.y = value;
  return m;
}

__device__ __forceinline__ void simdgroup_multiply_accumulate(
    simdgroup_float8x8& d, const simdgroup_float8x8& a, const simdgroup_float8x8& b,
    const simdgroup_float8x8& c) {
  mslc::mma_f32(d.e_.x, d.e_.y, a.e_.x, a.e_.y, b.e_.x, b.e_.y, c.e_.x, c.e_.y);
}
}  // namespace metal

// The MSL type names, declared inside the translation's unnamed namespace (they hide CUDA's own
// float4, uint3, ... there): the source step emits this macro first.
#define MSL_CUDA_TYPE_NAMES                                                                    \
  using ::metal::bfloat;                                                                      \
  using ::metal::half;                                                                        \
  using ::metal::vec;                                                                         \
  typedef ::mslc::vec<float, 2> float2;                                                       \
  typedef ::mslc::vec<float, 3> float3;                                                       \
  typedef ::mslc::vec<float, 4> float4;                                                       \
  typedef ::mslc::vec<half, 2> half2;                                                         \
  typedef ::mslc::vec<half, 4> half4;                                                         \
  typedef ::mslc::vec<int, 2> int2;                                                           \
  typedef ::mslc::vec<int, 4> int4;                                                           \
  typedef ::mslc::vec<unsigned, 2> uint2;                                                     \
  typedef ::mslc::vec<unsigned, 3> uint3;                                                     \
  typedef ::mslc::vec<unsigned short, 2> ushort2;                                             \
  typedef ::mslc::vec<unsigned short, 3> ushort3;                                             \
  typedef unsigned char uchar;

// ---- kernel arguments: one __global__ wrapper per instantiation (the source step writes them) ---
namespace mslc {
// The launch's buffers by [[buffer(n)]] index (AttentionParams and the launch args included:
// device copies of what Metal's setBytes binds).
struct Buffers {
  void* at[32];
};
enum class Bind {
  Buffer, ThreadPositionInGrid, ThreadgroupPositionInGrid, ThreadPositionInThreadgroup,
  ThreadIndexInThreadgroup, ThreadsPerThreadgroup, ThreadgroupsPerGrid, ThreadsPerGrid,
  SimdgroupIndexInThreadgroup, ThreadIndexInSimdgroup, SimdgroupsPerThreadgroup,
  ThreadsPerSimdgroup,
  Absent  // [[buffer(i), function_constant(c)]] with c off: nothing is bound, the kernel gets null
};
template <Bind K, int I>
struct Param {};

template <typename A>
__device__ __forceinline__ A position(unsigned x, unsigned y, unsigned z) {
  if constexpr (sizeof(A) <= 4) {
    return A(x);
  } else {
    return A((decltype(A{}.x))x, (decltype(A{}.x))y, (decltype(A{}.x))z);
  }
}
template <typename A, Bind K, int I>
__device__ __forceinline__ A bind(const Buffers& b, Param<K, I>) {
  if constexpr (K == Bind::Absent) {
    return A(nullptr);
  } else if constexpr (K == Bind::Buffer) {
    if constexpr (std::is_reference_v<A>) {
      return *reinterpret_cast<std::remove_reference_t<A>*>(b.at[I]);
    } else {
      return reinterpret_cast<A>(b.at[I]);
    }
  } else if constexpr (K == Bind::ThreadPositionInGrid) {
    return position<A>(blockIdx.x * blockDim.x + threadIdx.x, blockIdx.y * blockDim.y + threadIdx.y,
                       blockIdx.z * blockDim.z + threadIdx.z);
  } else if constexpr (K == Bind::ThreadgroupPositionInGrid) {
    return position<A>(blockIdx.x, blockIdx.y, blockIdx.z);
  } else if constexpr (K == Bind::ThreadPositionInThreadgroup) {
    return position<A>(threadIdx.x, threadIdx.y, threadIdx.z);
  } else if constexpr (K == Bind::ThreadIndexInThreadgroup) {
    return A(threadIdx.x);
  } else if constexpr (K == Bind::ThreadsPerThreadgroup) {
    return position<A>(blockDim.x, blockDim.y, blockDim.z);
  } else if constexpr (K == Bind::ThreadgroupsPerGrid) {
    return position<A>(gridDim.x, gridDim.y, gridDim.z);
  } else if constexpr (K == Bind::ThreadsPerGrid) {
    return position<A>(gridDim.x * blockDim.x, gridDim.y * blockDim.y, gridDim.z * blockDim.z);
  } else if constexpr (K == Bind::SimdgroupIndexInThreadgroup) {
    return A(threadIdx.x / 32u);
  } else if constexpr (K == Bind::ThreadIndexInSimdgroup) {
    return A(threadIdx.x & 31u);
  } else if constexpr (K == Bind::SimdgroupsPerThreadgroup) {
    return A((blockDim.x + 31u) / 32u);
  } else {
    static_assert(K == Bind::ThreadsPerSimdgroup);
    return A(32u);
  }
}
// Calls kernel F with each parameter bound as its Param<> says (F is a constant: a direct call).
template <typename Fn>
struct Invoker;
template <typename... A>
struct Invoker<void (*)(A...)> {
  template <auto F, typename... P>
  static __device__ __forceinline__ void run(const Buffers& b, P... p) {
    F(bind<A>(b, p)...);
  }
};
template <typename T>
using id_t = T;
}  // namespace mslc
