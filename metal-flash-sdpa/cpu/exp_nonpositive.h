// e^x for x <= 0, written so that loops calling it vectorise (used by the portable forward and
// backward kernels). Included after a file's target pragma: it has internal linkage, so every
// file's copy is compiled for that file's instruction set.
#pragma once

namespace {

// Float <-> bits, for the selects below.
inline uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

inline float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// All ones where x is -inf (a key a mask removed), else 0: an integer compare.
inline uint32_t negative_infinity_lanes(float x) { return 0u - uint32_t(float_bits(x) == 0xff800000u); }

// e^x for x <= 0 (scores minus their running max), branch-free so loops calling it vectorise:
// range reduction to |r| <= ln2/2 and a degree-6 polynomial (~1 ulp). Exactly 0 below -87, so
// masked keys (-inf) contribute nothing; NaN stays NaN.
//
// Every select is on integer bits: GCC (with its default -ftrapping-math) keeps a float compare
// (x < -87, std::max) as a branch, and a loop with a branch stays scalar on AVX2 and SSE
// (-fopt-info-vec: "control flow in loop"); integer compares and masks if-convert. Rounding to
// an integer is the 1.5 * 2^23 shifter (std::nearbyint is a call without SSE4.1).
inline float exp_nonpositive(float x) {
  const uint32_t bits = float_bits(x);
  // x < -87 and not NaN: the sign bit and a magnitude in (87, inf] (a NaN's is above inf's).
  const uint32_t below = 0u - (uint32_t(bits > 0xc2ae0000u) & uint32_t(bits <= 0xff800000u));
  const float xc = bits_float((bits & ~below) | (0xc2ae0000u & below));  // max(x, -87)
  const float shifter = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + shifter) - shifter;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = bits_float(uint32_t(static_cast<int32_t>(n) + 127) << 23);  // 2^n, n in [-126, 0]
  return bits_float(float_bits(p * scale) & ~below);
}

}  // namespace
