// C += A B on bf16 operands with fp32 accumulation (vdpbf16ps): the bf16 matrix products of the
// AVX512_BF16 backward kernel, and the packing and conversions of its operands.
//
// vdpbf16ps multiplies pairs: one 32-bit word holds the elements k and k+1 of a dot product (k
// even, in the low half, as bf16 data lies in memory) and both products are added to the fp32
// lane. So A(m, k2) is the pair (A[m][2 k2], A[m][2 k2 + 1]) and row k2 of B holds, at column n,
// the pair (B[2 k2][n], B[2 k2 + 1][n]). Included after the AVX512_BF16 target pragma; internal
// linkage, so the copy keeps that instruction set.
#pragma once

namespace {

// acc + the products of the bf16 pairs of a and b, lane by lane (the operands are bit patterns
// held in float vectors: no arithmetic touches them before vdpbf16ps).
inline __m512 dot_pairs(__m512 acc, __m512 a, __m512 b) {
#if defined(__GNUC__) && !defined(__clang__)
  // GCC 12 moves __m512bh operands through the stack on every use; inline asm keeps them in
  // registers (as avx512_tile_kernel.h's dot_bf16_pairs).
  __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
#else
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
#endif
}

inline __m256 dot_pairs(__m256 acc, __m256 a, __m256 b) {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
#else
  return _mm256_dpbf16_ps(acc, (__m256bh)a, (__m256bh)b);
#endif
}

// One pair word broadcast to every lane, and vector loads/stores, per register width.
struct Zmm {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V broadcast(uint32_t w) { return _mm512_castsi512_ps(_mm512_set1_epi32(int(w))); }
  static V load(const void* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};

struct Ymm {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V broadcast(uint32_t w) { return _mm256_castsi256_ps(_mm256_set1_epi32(int(w))); }
  static V load(const void* p) { return _mm256_loadu_ps(static_cast<const float*>(p)); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};

// An MR x (NV registers) block of C, held in registers over the whole sum.
template <typename R, int MR, int NV>
inline void pair_block(int pairs, const uint32_t* a, int64_t a_row, int64_t a_col,
                       const uint32_t* b, int ldb, float* c, int ldc) {
  // The unroll pragmas keep acc in registers (as tile_products.h's gemm_block).
  typename R::V acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = R::load(c + r * ldc + R::kLanes * v);
  for (int k = 0; k < pairs; ++k) {
    typename R::V bk[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bk[v] = R::load(b + int64_t(k) * ldb + R::kLanes * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const typename R::V ar = R::broadcast(a[r * a_row + k * a_col]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = dot_pairs(acc[r][v], ar, bk[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) R::store(c + r * ldc + R::kLanes * v, acc[r][v]);
}

// Register block: 4 rows x 4 zmm of columns, 16 accumulators (vdpbf16ps's latency times its
// throughput), then narrower blocks for the last columns.
constexpr int kPairRows = 4;
constexpr int kPairVecs = 4;

template <int MR>
inline void pair_rows(int N, int pairs, const uint32_t* a, int64_t a_row, int64_t a_col,
                      const uint32_t* b, int ldb, float* c, int ldc) {
  int n = 0;
  for (; n + 16 * kPairVecs <= N; n += 16 * kPairVecs)
    pair_block<Zmm, MR, kPairVecs>(pairs, a, a_row, a_col, b + n, ldb, c + n, ldc);
  for (; n + 16 <= N; n += 16) pair_block<Zmm, MR, 1>(pairs, a, a_row, a_col, b + n, ldb, c + n, ldc);
  for (; n < N; n += 8) pair_block<Ymm, MR, 1>(pairs, a, a_row, a_col, b + n, ldb, c + n, ldc);
}

// C[m][n] += sum over k2 < pairs of A(m, k2) . B[k2][n] for m < M, n < N (N a multiple of 8),
// with the pair A(m, k2) at a[m * a_row + k2 * a_col] (A may be a transposed view), B and C
// row-major. Each C element sums its pairs in order: the result does not depend on the blocking.
inline void gemm_pairs(int M, int N, int pairs, const uint32_t* a, int64_t a_row, int64_t a_col,
                       const uint32_t* b, int ldb, float* c, int ldc) {
  int m = 0;
  for (; m + kPairRows <= M; m += kPairRows) pair_rows<kPairRows>(N, pairs, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
  if (m + 2 <= M) {
    pair_rows<2>(N, pairs, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
    m += 2;
  }
  if (m < M) pair_rows<1>(N, pairs, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
}

// ---------------------------------------------------------------- packing

// bf16 bits of 16 floats, rounded to nearest even (vcvtneps2bf16), one per 32-bit lane.
inline __m512i bf16_lanes(__m512 x) {
  return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
}

// Words out[e] = (a[e], b[e]) for e < n: two rows of floats rounded to bf16 and interleaved, as
// B's pair rows are laid out. b null: a zero row (an odd row count's padding).
inline void pair_float_rows(const float* a, const float* b, int n, uint32_t* out) {
  for (int e = 0; e < n; e += 16) {
    const __mmask16 lanes = n - e >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - e)) - 1);
    const __m512i lo = bf16_lanes(_mm512_maskz_loadu_ps(lanes, a + e));
    const __m512i hi = b ? bf16_lanes(_mm512_maskz_loadu_ps(lanes, b + e)) : _mm512_setzero_si512();
    _mm512_mask_storeu_epi32(out + e, lanes, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
  }
}

// The same for two rows already in bf16.
inline void pair_bf16_rows(const uint16_t* a, const uint16_t* b, int n, uint32_t* out) {
  for (int e = 0; e < n; e += 16) {
    const __mmask16 lanes = n - e >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - e)) - 1);
    const __m512i lo = _mm512_maskz_cvtepu16_epi32(lanes, _mm256_maskz_loadu_epi16(lanes, a + e));
    const __m512i hi = b ? _mm512_maskz_cvtepu16_epi32(lanes, _mm256_maskz_loadu_epi16(lanes, b + e))
                         : _mm512_setzero_si512();
    _mm512_mask_storeu_epi32(out + e, lanes, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
  }
}

// One row of bf16 as floats (exact), n a multiple of 8.
inline void bf16_row_to_float(const uint16_t* a, int n, float* out) {
  for (int e = 0; e < n; e += 16) {
    const __mmask16 lanes = n - e >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - e)) - 1);
    const __m512i bits = _mm512_maskz_cvtepu16_epi32(lanes, _mm256_maskz_loadu_epi16(lanes, a + e));
    _mm512_mask_storeu_ps(out + e, lanes, _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)));
  }
}

// One row of floats rounded to bf16 (n a multiple of 8): the gradients' stores.
inline void round_row_to_bf16(const float* a, int n, uint16_t* out) {
  for (int e = 0; e < n; e += 16) {
    const __mmask16 lanes = n - e >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - e)) - 1);
    const __m256i bits = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes, a + e));
    _mm256_mask_storeu_epi16(out + e, lanes, bits);
  }
}

}  // namespace
