// e^x for x <= 0, written so that loops calling it vectorise (used by the portable forward and
// backward kernels). Included after a file's target pragma: it has internal linkage, so every
// file's copy is compiled for that file's instruction set.
#pragma once

namespace {

// e^x for x <= 0 (scores minus their running max), branch-free so loops calling it vectorise:
// range reduction to |r| <= ln2/2 and a degree-6 polynomial (~1 ulp). Exactly 0 below -87, so
// masked keys (-inf) contribute nothing.
inline float exp_nonpositive(float x) {
  const float xc = std::max(x, -87.0f);
  const float n = std::nearbyint(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x < -87.0f ? 0.0f : p * scale;
}

}  // namespace
