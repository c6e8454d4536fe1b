// metal:: type traits and numeric_limits: the std ones, extended to half and bfloat.
#pragma once

#include <limits>
#include <type_traits>
#include <utility>

#include "scalar.h"

namespace metal {

using std::add_const_t; using std::add_pointer_t; using std::conditional; using std::conditional_t;
using std::decay_t; using std::enable_if; using std::enable_if_t; using std::false_type;
using std::integral_constant; using std::integer_sequence; using std::is_arithmetic_v;
using std::is_const_v; using std::is_integral; using std::is_integral_v; using std::is_pointer_v;
using std::is_same; using std::is_same_v; using std::is_signed_v; using std::is_unsigned_v;
using std::make_integer_sequence; using std::remove_const_t; using std::remove_cv_t;
using std::remove_pointer_t; using std::remove_reference_t; using std::true_type;
using std::is_convertible_v; using std::bool_constant; using std::integer_sequence;
using std::make_index_sequence; using std::index_sequence;

template <class T> struct is_floating_point
    : std::bool_constant<std::is_floating_point_v<T> || std::is_same_v<std::remove_cv_t<T>, half> ||
                         std::is_same_v<std::remove_cv_t<T>, bfloat>> {};
template <class T> inline constexpr bool is_floating_point_v = is_floating_point<T>::value;
template <class T> struct is_scalar
    : std::bool_constant<std::is_arithmetic_v<T> || is_floating_point_v<T>> {};
template <class T> inline constexpr bool is_scalar_v = is_scalar<T>::value;

template <class T> struct numeric_limits : std::numeric_limits<T> {};

template <> struct numeric_limits<half> {
  static constexpr bool is_specialized = true, is_signed = true, is_integer = false;
  static constexpr bool has_infinity = true, has_quiet_NaN = true;
  static constexpr int digits = 11, max_exponent = 16, min_exponent = -13;
  static constexpr half min() { return half(6.103515625e-05f); }
  static constexpr half max() { return half(65504.0f); }
  static constexpr half lowest() { return half(-65504.0f); }
  static constexpr half epsilon() { return half(0.0009765625f); }
  static constexpr half denorm_min() { return half(5.9604644775390625e-08f); }
  static constexpr half infinity() { return half(__builtin_huge_valf()); }
  static constexpr half quiet_NaN() { return half(__builtin_nanf("")); }
  static constexpr half round_error() { return half(0.5f); }
};

template <> struct numeric_limits<bfloat> {
  static constexpr bool is_specialized = true, is_signed = true, is_integer = false;
  static constexpr bool has_infinity = true, has_quiet_NaN = true;
  static constexpr int digits = 8, max_exponent = 128, min_exponent = -125;
  static bfloat min() { return bfloat::from_bits(0x0080); }
  static bfloat max() { return bfloat::from_bits(0x7f7f); }
  static bfloat lowest() { return bfloat::from_bits(0xff7f); }
  static bfloat epsilon() { return bfloat::from_bits(0x3c00); }  // 2^-7
  static bfloat denorm_min() { return bfloat::from_bits(0x0001); }
  static bfloat infinity() { return bfloat::from_bits(0x7f80); }
  static bfloat quiet_NaN() { return bfloat::from_bits(0x7fc0); }
  static bfloat round_error() { return bfloat(0.5f); }
};

}  // namespace metal
