// MSL scalar types: half as the compiler's _Float16 (-mf16c makes conversions one instruction),
// bfloat as a 16-bit struct that rounds to nearest even, and MSL's short integer names.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

typedef _Float16 half;
typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
typedef unsigned long ulong;

namespace msl_sim {

inline uint16_t float_to_bfloat_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // keep NaN a NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return uint16_t(u >> 16);
}

inline float bfloat_bits_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace msl_sim

struct bfloat {
  uint16_t bits;

  bfloat() = default;
  bfloat(float f) : bits(msl_sim::float_to_bfloat_bits(f)) {}
  template <class U, std::enable_if_t<std::is_arithmetic_v<U> || std::is_same_v<U, _Float16>, int> = 0>
  bfloat(U v) : bits(msl_sim::float_to_bfloat_bits(float(v))) {}
  operator float() const { return msl_sim::bfloat_bits_to_float(bits); }

  static bfloat from_bits(uint16_t b) {
    bfloat r;
    r.bits = b;
    return r;
  }
  bfloat operator-() const { return from_bits(uint16_t(bits ^ 0x8000u)); }
  bfloat operator+() const { return *this; }
};

namespace msl_sim {
template <class T>
inline constexpr bool is_bf_operand_v =
    std::is_integral_v<T> || std::is_same_v<T, bfloat>;
}

// bfloat op bfloat/int -> bfloat; bfloat op float/half -> float (MSL's promotion to the wider type).
#define MSL_SIM_BF_ARITH(OP)                                                                   \
  inline bfloat operator OP(bfloat a, bfloat b) { return bfloat(float(a) OP float(b)); }         \
  template <class U, std::enable_if_t<std::is_integral_v<U>, int> = 0>                         \
  inline bfloat operator OP(bfloat a, U b) { return bfloat(float(a) OP float(b)); }             \
  template <class U, std::enable_if_t<std::is_integral_v<U>, int> = 0>                         \
  inline bfloat operator OP(U a, bfloat b) { return bfloat(float(a) OP float(b)); }             \
  inline float operator OP(bfloat a, float b) { return float(a) OP b; }                        \
  inline float operator OP(float a, bfloat b) { return a OP float(b); }                        \
  inline float operator OP(bfloat a, _Float16 b) { return float(a) OP float(b); }              \
  inline float operator OP(_Float16 a, bfloat b) { return float(a) OP float(b); }              \
  template <class U>                                                                           \
  inline bfloat& operator OP##=(bfloat& a, U b) { return a = bfloat(float(a) OP float(b)); }
MSL_SIM_BF_ARITH(+)
MSL_SIM_BF_ARITH(-)
MSL_SIM_BF_ARITH(*)
MSL_SIM_BF_ARITH(/)
#undef MSL_SIM_BF_ARITH

#define MSL_SIM_BF_CMP(OP)                                                                   \
  inline bool operator OP(bfloat a, bfloat b) { return float(a) OP float(b); }                 \
  template <class U, std::enable_if_t<std::is_arithmetic_v<U> || std::is_same_v<U, _Float16>, int> = 0> \
  inline bool operator OP(bfloat a, U b) { return float(a) OP float(b); }                      \
  template <class U, std::enable_if_t<std::is_arithmetic_v<U> || std::is_same_v<U, _Float16>, int> = 0> \
  inline bool operator OP(U a, bfloat b) { return float(a) OP float(b); }
MSL_SIM_BF_CMP(==)
MSL_SIM_BF_CMP(!=)
MSL_SIM_BF_CMP(<)
MSL_SIM_BF_CMP(<=)
MSL_SIM_BF_CMP(>)
MSL_SIM_BF_CMP(>=)
#undef MSL_SIM_BF_CMP

