// C += A B on small fp32 blocks held in scratch: the matrix products of the cpu tile kernels
// (the portable/AVX2 forward and every backward kernel), written with GCC/clang vector types that
// each including file's target pragma lowers to its own registers. Included after that pragma;
// everything has internal linkage, so each file's copy keeps its own instruction set.
//
// Including files choose MFS_VEC_LANES (floats per native register: SSE 4, AVX2 8, AVX-512 16)
// and the register block MFS_GEMM_ROWS rows x MFS_GEMM_VECS registers of columns of C.
#pragma once

namespace {

// The register block is written with GCC/clang vector types of the including file's native
// register width, MFS_VEC_LANES floats (SSE 4, AVX2 8, AVX-512 16): wider types are lowered by
// GCC into spills and shuffles through the stack (measured: ~10x slower products on AVX2). The
// block is MFS_GEMM_ROWS rows x MFS_GEMM_VECS registers of columns of C, held in registers over
// the whole K loop.
#ifndef MFS_VEC_LANES
#define MFS_VEC_LANES 4
#endif
#ifndef MFS_GEMM_ROWS
#define MFS_GEMM_ROWS 4
#endif
#ifndef MFS_GEMM_VECS
#define MFS_GEMM_VECS 2
#endif

constexpr int kVecLanes = MFS_VEC_LANES;
typedef float vreg __attribute__((vector_size(4 * MFS_VEC_LANES)));
typedef float vec8 __attribute__((vector_size(32)));

// Unaligned vector loads and stores (memcpy: GCC keeps the vector type's own alignment on
// dereferenced casts, whatever a typedef's aligned attribute says, and emits aligned moves).
template <typename V>
inline V load_vec(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V>
inline void store_vec(float* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

// kApart: the block's sum over k starts from zero and is added to C at the end (C + sum, not
// C + a0 b0 + a1 b1 + ...). The unroll pragmas let GCC keep acc in registers: without them it
// kept the array on the stack around the k loop (~100 spills and reloads per block; fp32
// backward 7 % slower at head dim 128).
template <typename V, int MR, int NV, bool kApart>
inline void gemm_block(int k_len, const float* a, int64_t a_row, int64_t a_col, const float* b,
                       int ldb, float* c, int ldc) {
  constexpr int W = sizeof(V) / sizeof(float);
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[r][v] = kApart ? V{} : load_vec<V>(c + r * ldc + W * v);
  for (int k = 0; k < k_len; ++k) {
    V bk[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bk[v] = load_vec<V>(b + int64_t(k) * ldb + W * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const float ar = a[r * a_row + k * a_col];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * bk[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      float* dst = c + r * ldc + W * v;
      store_vec<V>(dst, kApart ? load_vec<V>(dst) + acc[r][v] : acc[r][v]);
    }
}

// Columns [0, N) of MR rows (N a multiple of 8): whole register blocks, then two registers (when
// the block is wider), then one, then (AVX-512) 8 columns at a time.
template <int MR, bool kApart>
inline void gemm_rows(int N, int K, const float* a, int64_t a_row, int64_t a_col, const float* b,
                      int ldb, float* c, int ldc) {
  constexpr int NV = MFS_GEMM_VECS;
  int n = 0;
  for (; n + kVecLanes * NV <= N; n += kVecLanes * NV) gemm_block<vreg, MR, NV, kApart>(K, a, a_row, a_col, b + n, ldb, c + n, ldc);
  if constexpr (NV > 2) {
    for (; n + 2 * kVecLanes <= N; n += 2 * kVecLanes) gemm_block<vreg, MR, 2, kApart>(K, a, a_row, a_col, b + n, ldb, c + n, ldc);
  }
  for (; n + kVecLanes <= N; n += kVecLanes) gemm_block<vreg, MR, 1, kApart>(K, a, a_row, a_col, b + n, ldb, c + n, ldc);
  for (; n < N; n += 8) gemm_block<vec8, MR, 1, kApart>(K, a, a_row, a_col, b + n, ldb, c + n, ldc);
}

// C[m][n] += sum_k A(m, k) B[k][n] for m < M, n < N (N a multiple of 8), with A(m, k) at
// a[m * a_row + k * a_col] (so A may be a transposed view), B and C row-major. Sums run over k
// in order: the result does not depend on the blocking. kApart: C[m][n] + (the sum over k),
// the sum started from zero (two-level sums, e.g. dot products in pieces).
template <bool kApart = false>
inline void gemm_acc(int M, int N, int K, const float* a, int64_t a_row, int64_t a_col,
                     const float* b, int ldb, float* c, int ldc) {
  constexpr int MR = MFS_GEMM_ROWS;
  int m = 0;
  for (; m + MR <= M; m += MR) gemm_rows<MR, kApart>(N, K, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
  if constexpr (MR > 4) {
    if (m + 4 <= M) {
      gemm_rows<4, kApart>(N, K, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
      m += 4;
    }
  }
  if (MR > 2 && m + 2 <= M) {
    gemm_rows<2, kApart>(N, K, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
    m += 2;
  }
  for (; m < M; ++m) gemm_rows<1, kApart>(N, K, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
}

}  // namespace
