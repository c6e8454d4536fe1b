// simdgroup_matrix<T, 8, 8> with Apple's lane layout: lane l holds elements (row, col) and
// (row, col + 1), qid = l / 4, row = (qid & 4) + (l / 2) % 4, col = (qid & 2) * 2 + (l % 2) * 2.
// Loads, stores and fills are per lane; multiplies are SIMD-group collectives computed in float.
#pragma once

#include "simd.h"
#include "vec.h"

namespace msl_sim::mma {

inline int lane_row(int lane) { return ((lane / 4) & 4) + (lane / 2) % 4; }
inline int lane_col(int lane) { return ((lane / 4) & 2) * 2 + (lane % 2) * 2; }

// What one lane passes to a multiply: its two elements of A, B and C, as floats.
struct MmaIn {
  float a[2], b[2], c[2];
};

inline void mma_fn(rt::SimdGroup& g) {
  float A[8][8], B[8][8], C[8][8];
  for (int l = 0; l < kSimdWidth; ++l) {
    MmaIn in = simd::get<MmaIn>(g.in[l]);
    int r = lane_row(l), c = lane_col(l);
    for (int k = 0; k < 2; ++k) {
      A[r][c + k] = in.a[k];
      B[r][c + k] = in.b[k];
      C[r][c + k] = in.c[k];
    }
  }
  for (int l = 0; l < kSimdWidth; ++l) {
    int r = lane_row(l), c = lane_col(l);
    float d[2];
    for (int k = 0; k < 2; ++k) {
      float s = C[r][c + k];
      for (int i = 0; i < 8; ++i) s += A[r][i] * B[i][c + k];
      d[k] = s;
    }
    simd::put(g.out[l], d);
  }
}

}  // namespace msl_sim::mma

namespace metal {

template <class T, int Cols, int Rows>
struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "the simulator supports 8x8 simdgroup_matrix only");
  vec<T, 2> e_;

  simdgroup_matrix() = default;
  // A diagonal matrix, as Metal's scalar constructor makes.
  explicit simdgroup_matrix(T diagonal) {
    int lane = int(msl_sim::rt::t_thread->lane);
    int r = msl_sim::mma::lane_row(lane), c = msl_sim::mma::lane_col(lane);
    e_[0] = r == c ? diagonal : T(0);
    e_[1] = r == c + 1 ? diagonal : T(0);
  }
  vec<T, 2>& thread_elements() { return e_; }
  const vec<T, 2>& thread_elements() const { return e_; }
};

template <class T, int C, int R>
inline simdgroup_matrix<T, C, R> make_filled_simdgroup_matrix(T value) {
  simdgroup_matrix<T, C, R> m;
  m.e_[0] = value;
  m.e_[1] = value;
  return m;
}

typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

// Element (r, c) of the 8x8 matrix at `origin` (x = column, y = row) of a row-major source with
// `elements_per_row`; transposed, it is source element (c, r).
template <class T, class P>
inline void simdgroup_load(simdgroup_matrix<T, 8, 8>& d, const P* src, unsigned long elements_per_row = 8,
                           vec<unsigned long, 2> origin = vec<unsigned long, 2>(0ul), bool transpose = false) {
  int lane = int(msl_sim::rt::t_thread->lane);
  int r = msl_sim::mma::lane_row(lane), c = msl_sim::mma::lane_col(lane);
  const P* base = src + origin[1] * elements_per_row + origin[0];
  for (int k = 0; k < 2; ++k) {
    unsigned long rr = r, cc = c + k;
    d.e_[k] = T(transpose ? base[cc * elements_per_row + rr] : base[rr * elements_per_row + cc]);
  }
}

template <class T, class P>
inline void simdgroup_store(const simdgroup_matrix<T, 8, 8>& a, P* dst, unsigned long elements_per_row = 8,
                            vec<unsigned long, 2> origin = vec<unsigned long, 2>(0ul), bool transpose = false) {
  int lane = int(msl_sim::rt::t_thread->lane);
  int r = msl_sim::mma::lane_row(lane), c = msl_sim::mma::lane_col(lane);
  P* base = dst + origin[1] * elements_per_row + origin[0];
  for (int k = 0; k < 2; ++k) {
    unsigned long rr = r, cc = c + k;
    (transpose ? base[cc * elements_per_row + rr] : base[rr * elements_per_row + cc]) = P(a.e_[k]);
  }
}

template <class TD, class TA, class TB, class TC>
inline void simdgroup_multiply_accumulate(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                                          const simdgroup_matrix<TB, 8, 8>& b, const simdgroup_matrix<TC, 8, 8>& c,
                                          const std::source_location& loc = std::source_location::current()) {
  msl_sim::mma::MmaIn in{{float(a.e_[0]), float(a.e_[1])}, {float(b.e_[0]), float(b.e_[1])},
                         {float(c.e_[0]), float(c.e_[1])}};
  auto out = msl_sim::simd::exchange<vec<float, 2>>(msl_sim::rt::kOpMma, &msl_sim::mma::mma_fn, in, 0, loc);
  d.e_[0] = TD(out[0]);
  d.e_[1] = TD(out[1]);
}

template <class TD, class TA, class TB>
inline void simdgroup_multiply(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                               const simdgroup_matrix<TB, 8, 8>& b,
                               const std::source_location& loc = std::source_location::current()) {
  simdgroup_matrix<float, 8, 8> zero = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  simdgroup_multiply_accumulate(d, a, b, zero, loc);
}

}  // namespace metal
