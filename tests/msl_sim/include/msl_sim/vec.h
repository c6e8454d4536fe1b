// vec<T, N> with MSL's layout (3-component vectors are padded to 4), component members, assignable
// swizzles and element-wise operators. Swizzles are proxies that share the vector's storage.
#pragma once

#include <type_traits>
#include <utility>

#include "scalar.h"
#include "traits.h"

template <class T, int N>
struct vec;

namespace msl_sim {

template <class T, int S, int... I>
struct swizzle;

template <class X>
struct vec_traits {
  static constexpr bool is_vec = false;
};
template <class T, int N>
struct vec_traits<vec<T, N>> {
  static constexpr bool is_vec = true;
  using elem = T;
  static constexpr int n = N;
};
template <class T, int S, int... I>
struct vec_traits<swizzle<T, S, I...>> {
  static constexpr bool is_vec = true;
  using elem = T;
  static constexpr int n = sizeof...(I);
};

template <class X>
concept VecLike = vec_traits<std::remove_cvref_t<X>>::is_vec;
template <class X>
concept ScalarLike = metal::is_scalar_v<std::remove_cvref_t<X>>;

template <class X>
constexpr int components() {
  if constexpr (VecLike<X>) return vec_traits<std::remove_cvref_t<X>>::n;
  else return 1;
}

// Element i of a vector, or the scalar itself (broadcast).
template <class X>
inline auto elem(const X& x, int i) {
  if constexpr (VecLike<X>) return x[i];
  else return x;
}

template <class T, int S, int... I>
struct swizzle {
  static constexpr int M = sizeof...(I);
  using vec_type = vec<T, M>;
  T s_[S];

  operator vec_type() const { return vec_type(s_[I]...); }
  T operator[](int i) const {
    constexpr int idx[] = {I...};
    return s_[idx[i]];
  }
  swizzle& operator=(const vec_type& v) {
    int k = 0;
    ((s_[I] = v[k++]), ...);
    return *this;
  }
  swizzle& operator=(const swizzle& o) { return *this = vec_type(o); }
  template <class U>
    requires ScalarLike<U>
  swizzle& operator=(U x) { return *this = vec_type(T(x)); }
  template <class U> swizzle& operator+=(const U& o) { return *this = vec_type(*this) + o; }
  template <class U> swizzle& operator-=(const U& o) { return *this = vec_type(*this) - o; }
  template <class U> swizzle& operator*=(const U& o) { return *this = vec_type(*this) * o; }
  template <class U> swizzle& operator/=(const U& o) { return *this = vec_type(*this) / o; }
};

template <class T, int N>
struct vec_storage;

#define MSL_SIM_SWIZZLE_N 2
template <class T>
struct vec_storage<T, 2> {
  static constexpr int S = 2;
  union {
    T v_[2];
    struct { T x, y; };
    struct { T r, g; };
#include "swizzles.inc"
  };
};
#undef MSL_SIM_SWIZZLE_N
#define MSL_SIM_SWIZZLE_N 3
template <class T>
struct vec_storage<T, 3> {
  static constexpr int S = 4;  // MSL pads 3-vectors to 4 components
  union {
    T v_[4];
    struct { T x, y, z; };
    struct { T r, g, b; };
#include "swizzles.inc"
  };
};
#undef MSL_SIM_SWIZZLE_N
#define MSL_SIM_SWIZZLE_N 4
template <class T>
struct vec_storage<T, 4> {
  static constexpr int S = 4;
  union {
    T v_[4];
    struct { T x, y, z, w; };
    struct { T r, g, b, a; };
#include "swizzles.inc"
  };
};
#undef MSL_SIM_SWIZZLE_N

}  // namespace msl_sim

template <class T, int N>
struct alignas(sizeof(T) * (N == 3 ? 4 : N)) vec : msl_sim::vec_storage<T, N> {
  using value_type = T;
  static constexpr int size_ = N;

  vec() = default;
  // Whole-vector copies are one access of sizeof(vec) bytes (a vector load/store on the GPU), so
  // the traffic counters see a float4 / half4 load as one 16- / 8-byte load.
  vec(const vec& o) { __builtin_memcpy(static_cast<void*>(this), static_cast<const void*>(&o), sizeof(vec)); }
  vec& operator=(const vec& o) {
    __builtin_memcpy(static_cast<void*>(this), static_cast<const void*>(&o), sizeof(vec));
    return *this;
  }
  // A scalar broadcasts (implicitly, as in MSL).
  template <class U>
    requires msl_sim::ScalarLike<U>
  vec(U s) {
    for (int i = 0; i < N; ++i) this->v_[i] = T(s);
  }
  // Components from scalars and vectors, e.g. float4(a.xy, 0, 1).
  template <class A, class B, class... R>
    requires(msl_sim::components<A>() + msl_sim::components<B>() + (0 + ... + msl_sim::components<R>()) == N)
  vec(const A& a, const B& b, const R&... r) {
    int k = 0;
    put(k, a);
    put(k, b);
    (put(k, r), ...);
  }
  // Conversion between element types is explicit, as in MSL.
  template <class U>
    requires(!std::is_same_v<U, T>)
  explicit vec(const vec<U, N>& o) {
    for (int i = 0; i < N; ++i) this->v_[i] = T(o[i]);
  }
  template <class U, int S, int... I>
    requires(!std::is_same_v<U, T> && sizeof...(I) == N)
  explicit vec(const msl_sim::swizzle<U, S, I...>& o) : vec(vec<U, N>(o)) {}

  T& operator[](int i) { return this->v_[i]; }
  const T& operator[](int i) const { return this->v_[i]; }

  template <class U> vec& operator+=(const U& o) { return *this = *this + o; }
  template <class U> vec& operator-=(const U& o) { return *this = *this - o; }
  template <class U> vec& operator*=(const U& o) { return *this = *this * o; }
  template <class U> vec& operator/=(const U& o) { return *this = *this / o; }
  template <class U> vec& operator%=(const U& o) { return *this = *this % o; }
  template <class U> vec& operator&=(const U& o) { return *this = *this & o; }
  template <class U> vec& operator|=(const U& o) { return *this = *this | o; }
  template <class U> vec& operator^=(const U& o) { return *this = *this ^ o; }
  template <class U> vec& operator<<=(const U& o) { return *this = *this << o; }
  template <class U> vec& operator>>=(const U& o) { return *this = *this >> o; }

 private:
  template <class X>
  void put(int& k, const X& x) {
    if constexpr (msl_sim::VecLike<X>) {
      for (int i = 0; i < msl_sim::components<X>(); ++i) this->v_[k++] = T(x[i]);
    } else {
      this->v_[k++] = T(x);
    }
  }
};

namespace msl_sim {

// The vector type a binary operation on (A, B) produces: the vector operand's shape and element type.
template <class A, class B>
struct binary_vec {
  using VA = std::remove_cvref_t<A>;
  using VB = std::remove_cvref_t<B>;
  static constexpr bool a_vec = VecLike<VA>;
  using E = typename vec_traits<std::conditional_t<a_vec, VA, VB>>::elem;
  static constexpr int n = vec_traits<std::conditional_t<a_vec, VA, VB>>::n;
};

template <class A, class B>
concept VecOperands = (VecLike<A> && (VecLike<B> || ScalarLike<B>)) || (ScalarLike<A> && VecLike<B>);

}  // namespace msl_sim

#define MSL_SIM_VEC_BINARY(OP)                                                      \
  template <class A, class B>                                                       \
    requires msl_sim::VecOperands<A, B>                                             \
  inline auto operator OP(const A& a, const B& b) {                                 \
    using BV = msl_sim::binary_vec<A, B>;                                           \
    vec<typename BV::E, BV::n> r;                                                   \
    for (int i = 0; i < BV::n; ++i)                                                 \
      r[i] = typename BV::E(msl_sim::elem(a, i) OP msl_sim::elem(b, i));             \
    return r;                                                                       \
  }
MSL_SIM_VEC_BINARY(+)
MSL_SIM_VEC_BINARY(-)
MSL_SIM_VEC_BINARY(*)
MSL_SIM_VEC_BINARY(/)
MSL_SIM_VEC_BINARY(%)
MSL_SIM_VEC_BINARY(&)
MSL_SIM_VEC_BINARY(|)
MSL_SIM_VEC_BINARY(^)
MSL_SIM_VEC_BINARY(<<)
MSL_SIM_VEC_BINARY(>>)
#undef MSL_SIM_VEC_BINARY

#define MSL_SIM_VEC_COMPARE(OP)                                                     \
  template <class A, class B>                                                       \
    requires msl_sim::VecOperands<A, B>                                             \
  inline auto operator OP(const A& a, const B& b) {                                 \
    using BV = msl_sim::binary_vec<A, B>;                                           \
    vec<bool, BV::n> r;                                                             \
    for (int i = 0; i < BV::n; ++i) r[i] = msl_sim::elem(a, i) OP msl_sim::elem(b, i); \
    return r;                                                                       \
  }
MSL_SIM_VEC_COMPARE(==)
MSL_SIM_VEC_COMPARE(!=)
MSL_SIM_VEC_COMPARE(<)
MSL_SIM_VEC_COMPARE(<=)
MSL_SIM_VEC_COMPARE(>)
MSL_SIM_VEC_COMPARE(>=)
MSL_SIM_VEC_COMPARE(&&)
MSL_SIM_VEC_COMPARE(||)
#undef MSL_SIM_VEC_COMPARE

#define MSL_SIM_VEC_UNARY(OP, RESULT)                                               \
  template <class A>                                                                \
    requires msl_sim::VecLike<A>                                                    \
  inline auto operator OP(const A& a) {                                             \
    using E [[maybe_unused]] = typename msl_sim::vec_traits<std::remove_cvref_t<A>>::elem; \
    constexpr int n = msl_sim::vec_traits<std::remove_cvref_t<A>>::n;               \
    vec<RESULT, n> r;                                                               \
    for (int i = 0; i < n; ++i) r[i] = RESULT(OP a[i]);                             \
    return r;                                                                       \
  }
MSL_SIM_VEC_UNARY(-, E)
MSL_SIM_VEC_UNARY(+, E)
MSL_SIM_VEC_UNARY(~, E)
MSL_SIM_VEC_UNARY(!, bool)
#undef MSL_SIM_VEC_UNARY

#define MSL_SIM_VEC_ALIASES(T)  \
  typedef vec<T, 2> T##2;       \
  typedef vec<T, 3> T##3;       \
  typedef vec<T, 4> T##4;       \
  typedef vec<T, 2> packed_##T##2; \
  typedef vec<T, 4> packed_##T##4;
MSL_SIM_VEC_ALIASES(float)
MSL_SIM_VEC_ALIASES(half)
MSL_SIM_VEC_ALIASES(bfloat)
MSL_SIM_VEC_ALIASES(int)
MSL_SIM_VEC_ALIASES(uint)
MSL_SIM_VEC_ALIASES(short)
MSL_SIM_VEC_ALIASES(ushort)
MSL_SIM_VEC_ALIASES(char)
MSL_SIM_VEC_ALIASES(uchar)
MSL_SIM_VEC_ALIASES(bool)
MSL_SIM_VEC_ALIASES(long)
MSL_SIM_VEC_ALIASES(ulong)
#undef MSL_SIM_VEC_ALIASES

namespace metal {
using ::vec;
template <class T>
struct is_vector : std::bool_constant<msl_sim::VecLike<T>> {};
template <class T>
inline constexpr bool is_vector_v = is_vector<T>::value;
}  // namespace metal
