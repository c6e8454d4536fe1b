// metal:: math (and the fast:: / precise:: spellings, which here are the same precise functions).
// Uses compiler builtins rather than <cmath> so no global ::exp etc. competes with metal::exp.
#pragma once

#include <cstring>
#include <type_traits>

#include "scalar.h"
#include "vec.h"

namespace metal {

namespace detail {
template <class T>
concept Float = std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat>;
template <class T>
concept Int = std::is_integral_v<T> && !std::is_same_v<T, bool>;
}  // namespace detail

// One-argument floating functions: scalar (float math, rounded back) and element-wise vector.
#define MSL_SIM_MATH1(NAME, EXPR)                                                         \
  template <detail::Float T>                                                              \
  inline T NAME(T t) {                                                                    \
    float x = float(t);                                                                   \
    return T(EXPR);                                                                       \
  }                                                                                       \
  template <msl_sim::VecLike V>                                                           \
  inline auto NAME(const V& v) {                                                          \
    using E = typename msl_sim::vec_traits<std::remove_cvref_t<V>>::elem;                 \
    constexpr int n = msl_sim::vec_traits<std::remove_cvref_t<V>>::n;                     \
    vec<E, n> r;                                                                          \
    for (int i = 0; i < n; ++i) r[i] = NAME(E(v[i]));                                     \
    return r;                                                                             \
  }
MSL_SIM_MATH1(exp, __builtin_expf(x))
MSL_SIM_MATH1(exp2, __builtin_exp2f(x))
MSL_SIM_MATH1(exp10, __builtin_powf(10.0f, x))
MSL_SIM_MATH1(log, __builtin_logf(x))
MSL_SIM_MATH1(log2, __builtin_log2f(x))
MSL_SIM_MATH1(log10, __builtin_log10f(x))
MSL_SIM_MATH1(sqrt, __builtin_sqrtf(x))
MSL_SIM_MATH1(rsqrt, 1.0f / __builtin_sqrtf(x))
MSL_SIM_MATH1(sin, __builtin_sinf(x))
MSL_SIM_MATH1(cos, __builtin_cosf(x))
MSL_SIM_MATH1(tan, __builtin_tanf(x))
MSL_SIM_MATH1(asin, __builtin_asinf(x))
MSL_SIM_MATH1(acos, __builtin_acosf(x))
MSL_SIM_MATH1(atan, __builtin_atanf(x))
MSL_SIM_MATH1(sinh, __builtin_sinhf(x))
MSL_SIM_MATH1(cosh, __builtin_coshf(x))
MSL_SIM_MATH1(tanh, __builtin_tanhf(x))
MSL_SIM_MATH1(floor, __builtin_floorf(x))
MSL_SIM_MATH1(ceil, __builtin_ceilf(x))
MSL_SIM_MATH1(round, __builtin_roundf(x))
MSL_SIM_MATH1(rint, __builtin_rintf(x))
MSL_SIM_MATH1(trunc, __builtin_truncf(x))
MSL_SIM_MATH1(fract, x - __builtin_floorf(x))
MSL_SIM_MATH1(fabs, __builtin_fabsf(x))
MSL_SIM_MATH1(saturate, x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x))
MSL_SIM_MATH1(sign, x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f))
#undef MSL_SIM_MATH1

// Two-argument floating functions.
#define MSL_SIM_MATH2(NAME, EXPR)                                                         \
  template <detail::Float T>                                                              \
  inline T NAME(T ta, T tb) {                                                             \
    float x = float(ta), y = float(tb);                                                   \
    return T(EXPR);                                                                       \
  }                                                                                       \
  template <class A, class B>                                                             \
    requires msl_sim::VecOperands<A, B>                                                   \
  inline auto NAME(const A& a, const B& b) {                                              \
    using BV = msl_sim::binary_vec<A, B>;                                                 \
    using E = typename BV::E;                                                             \
    vec<E, BV::n> r;                                                                      \
    for (int i = 0; i < BV::n; ++i) r[i] = NAME(E(msl_sim::elem(a, i)), E(msl_sim::elem(b, i))); \
    return r;                                                                             \
  }
MSL_SIM_MATH2(pow, __builtin_powf(x, y))
MSL_SIM_MATH2(powr, __builtin_powf(x, y))
MSL_SIM_MATH2(atan2, __builtin_atan2f(x, y))
MSL_SIM_MATH2(fmod, __builtin_fmodf(x, y))
MSL_SIM_MATH2(copysign, __builtin_copysignf(x, y))
MSL_SIM_MATH2(fmax, __builtin_fmaxf(x, y))
MSL_SIM_MATH2(fmin, __builtin_fminf(x, y))
MSL_SIM_MATH2(step, y < x ? 0.0f : 1.0f)
MSL_SIM_MATH2(divide, x / y)
#undef MSL_SIM_MATH2

// max/min/abs/clamp for floats (NaN-ignoring like fmax) and integers, scalars and vectors.
template <class T>
  requires(detail::Float<T> || detail::Int<T>)
inline T max(T a, T b) {
  if constexpr (detail::Float<T>) return T(__builtin_fmaxf(float(a), float(b)));
  else return a > b ? a : b;
}
template <class T>
  requires(detail::Float<T> || detail::Int<T>)
inline T min(T a, T b) {
  if constexpr (detail::Float<T>) return T(__builtin_fminf(float(a), float(b)));
  else return a < b ? a : b;
}
template <class T>
  requires(detail::Float<T> || detail::Int<T>)
inline T abs(T a) {
  if constexpr (detail::Float<T>) return T(__builtin_fabsf(float(a)));
  else return a < 0 ? T(-a) : a;
}
template <class T>
  requires(detail::Float<T> || detail::Int<T>)
inline T clamp(T x, T lo, T hi) {
  return min(max(x, lo), hi);
}
template <class A, class B>
  requires msl_sim::VecOperands<A, B>
inline auto max(const A& a, const B& b) {
  using BV = msl_sim::binary_vec<A, B>;
  using E = typename BV::E;
  vec<E, BV::n> r;
  for (int i = 0; i < BV::n; ++i) r[i] = max(E(msl_sim::elem(a, i)), E(msl_sim::elem(b, i)));
  return r;
}
template <class A, class B>
  requires msl_sim::VecOperands<A, B>
inline auto min(const A& a, const B& b) {
  using BV = msl_sim::binary_vec<A, B>;
  using E = typename BV::E;
  vec<E, BV::n> r;
  for (int i = 0; i < BV::n; ++i) r[i] = min(E(msl_sim::elem(a, i)), E(msl_sim::elem(b, i)));
  return r;
}
template <msl_sim::VecLike V>
inline auto abs(const V& v) {
  using E = typename msl_sim::vec_traits<std::remove_cvref_t<V>>::elem;
  constexpr int n = msl_sim::vec_traits<std::remove_cvref_t<V>>::n;
  vec<E, n> r;
  for (int i = 0; i < n; ++i) r[i] = abs(E(v[i]));
  return r;
}
template <msl_sim::VecLike V, class L, class H>
inline auto clamp(const V& x, const L& lo, const H& hi) {
  return min(max(x, lo), hi);
}
// Mixed scalar types take the type of their sum (half op float -> float, half op int -> half).
template <class A, class B>
  requires(msl_sim::ScalarLike<A> && msl_sim::ScalarLike<B> && !std::is_same_v<A, B>)
inline auto max(A a, B b) {
  using T = decltype(a + b);
  return max(T(a), T(b));
}
template <class A, class B>
  requires(msl_sim::ScalarLike<A> && msl_sim::ScalarLike<B> && !std::is_same_v<A, B>)
inline auto min(A a, B b) {
  using T = decltype(a + b);
  return min(T(a), T(b));
}
template <class X, class L, class H>
  requires(msl_sim::ScalarLike<X> && msl_sim::ScalarLike<L> && msl_sim::ScalarLike<H> &&
           !(std::is_same_v<X, L> && std::is_same_v<X, H>))
inline X clamp(X x, L lo, H hi) {
  return min(max(x, X(lo)), X(hi));
}
template <class T> inline T max3(T a, T b, T c) { return max(max(a, b), c); }
template <class T> inline T min3(T a, T b, T c) { return min(min(a, b), c); }
template <class T> inline T median3(T a, T b, T c) { return max(min(a, b), min(max(a, b), c)); }

template <detail::Float T>
inline T fma(T a, T b, T c) {
  return T(__builtin_fmaf(float(a), float(b), float(c)));
}
template <msl_sim::VecLike A, class B, class C>
inline auto fma(const A& a, const B& b, const C& c) {
  using E = typename msl_sim::vec_traits<std::remove_cvref_t<A>>::elem;
  constexpr int n = msl_sim::vec_traits<std::remove_cvref_t<A>>::n;
  vec<E, n> r;
  for (int i = 0; i < n; ++i) r[i] = fma(E(a[i]), E(msl_sim::elem(b, i)), E(msl_sim::elem(c, i)));
  return r;
}
template <class A, class B, class C>
inline auto mix(const A& a, const B& b, const C& t) {
  return a + (b - a) * t;
}

// Classification.
template <detail::Float T> inline bool isnan(T x) { return __builtin_isnan(float(x)); }
template <detail::Float T> inline bool isinf(T x) { return __builtin_isinf(float(x)); }
template <detail::Float T> inline bool isfinite(T x) { return __builtin_isfinite(float(x)); }
template <detail::Float T> inline bool signbit(T x) { return __builtin_signbit(float(x)); }
#define MSL_SIM_CLASSIFY(NAME)                                                  \
  template <msl_sim::VecLike V>                                                 \
  inline auto NAME(const V& v) {                                                \
    constexpr int n = msl_sim::vec_traits<std::remove_cvref_t<V>>::n;           \
    vec<bool, n> r;                                                             \
    for (int i = 0; i < n; ++i) r[i] = NAME(v[i]);                              \
    return r;                                                                   \
  }
MSL_SIM_CLASSIFY(isnan)
MSL_SIM_CLASSIFY(isinf)
MSL_SIM_CLASSIFY(isfinite)
MSL_SIM_CLASSIFY(signbit)
#undef MSL_SIM_CLASSIFY

// Relational.
template <class T>
inline T select(T a, T b, bool c) {
  return c ? b : a;
}
template <msl_sim::VecLike A, msl_sim::VecLike C>
inline auto select(const A& a, const A& b, const C& c) {
  using E = typename msl_sim::vec_traits<std::remove_cvref_t<A>>::elem;
  constexpr int n = msl_sim::vec_traits<std::remove_cvref_t<A>>::n;
  vec<E, n> r;
  for (int i = 0; i < n; ++i) r[i] = c[i] ? E(b[i]) : E(a[i]);
  return r;
}
inline bool all(bool b) { return b; }
inline bool any(bool b) { return b; }
template <msl_sim::VecLike V>
inline bool all(const V& v) {
  for (int i = 0; i < msl_sim::components<V>(); ++i)
    if (!v[i]) return false;
  return true;
}
template <msl_sim::VecLike V>
inline bool any(const V& v) {
  for (int i = 0; i < msl_sim::components<V>(); ++i)
    if (v[i]) return true;
  return false;
}

// Geometric.
template <class A, class B>
  requires(msl_sim::VecLike<A> && msl_sim::VecLike<B>)
inline auto dot(const A& a, const B& b) {
  using E = typename msl_sim::vec_traits<std::remove_cvref_t<A>>::elem;
  float s = 0.0f;
  for (int i = 0; i < msl_sim::components<A>(); ++i) s += float(a[i]) * float(b[i]);
  return E(s);
}
template <msl_sim::VecLike V> inline auto length(const V& v) { return sqrt(dot(v, v)); }
template <msl_sim::VecLike V> inline auto normalize(const V& v) { return v * rsqrt(dot(v, v)); }

// Integer bit functions.
template <detail::Int T> inline T popcount(T x) { return T(__builtin_popcountll((unsigned long long)(std::make_unsigned_t<T>)x)); }
template <detail::Int T> inline T clz(T x) {
  using U = std::make_unsigned_t<T>;
  return x == 0 ? T(sizeof(T) * 8) : T(__builtin_clzll((unsigned long long)U(x)) - (64 - 8 * sizeof(T)));
}
template <detail::Int T> inline T ctz(T x) { return x == 0 ? T(sizeof(T) * 8) : T(__builtin_ctzll((unsigned long long)(std::make_unsigned_t<T>)x)); }
template <detail::Int T> inline T mulhi(T a, T b) { return T((long long)(__int128(a) * __int128(b) >> (8 * sizeof(T)))); }

// Reinterpretation of bits (same size required, as in MSL).
template <class To, class From>
inline To as_type(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "as_type needs types of the same size");
  To to;
  std::memcpy(static_cast<void*>(&to), static_cast<const void*>(&from), sizeof(To));
  return to;
}

namespace fast {
using metal::abs; using metal::acos; using metal::asin; using metal::atan; using metal::atan2;
using metal::ceil; using metal::clamp; using metal::cos; using metal::cosh; using metal::divide;
using metal::exp; using metal::exp10; using metal::exp2; using metal::fabs; using metal::floor;
using metal::fmax; using metal::fmin; using metal::fmod; using metal::fract; using metal::log;
using metal::log10; using metal::log2; using metal::max; using metal::min; using metal::pow;
using metal::powr; using metal::rint; using metal::round; using metal::rsqrt; using metal::saturate;
using metal::sin; using metal::sinh; using metal::sqrt; using metal::tan; using metal::tanh;
using metal::trunc; using metal::normalize; using metal::length;
}  // namespace fast
namespace precise {
using namespace fast;
}  // namespace precise

}  // namespace metal

#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif
#ifndef NAN
#define NAN (__builtin_nanf(""))
#endif
#ifndef MAXFLOAT
#define MAXFLOAT (3.40282347e+38F)
#endif
#define HUGE_VALF (__builtin_huge_valf())
#define M_PI_F (3.14159265358979323846264338327950288f)
#define M_E_F (2.71828182845904523536028747135266250f)
#define M_LN2_F (0.693147180559945309417232121458176568f)
#define M_LOG2E_F (1.44269504088896340735992468100189214f)
#define M_SQRT2_F (1.41421356237309504880168872420969808f)
#define FLT_MAX (3.40282347e+38F)
#define FLT_MIN (1.17549435e-38F)
#define FLT_EPSILON (1.19209290e-7F)
#define HALF_MAX ((half)65504.0f)
