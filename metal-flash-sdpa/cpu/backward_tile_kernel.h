// The backward tile kernels (FlashAttention-2): plain C++ whose inner loops the compiler
// vectorises. Included by backward_kernel_portable.cpp (baseline ISA), backward_kernel_avx2.cpp
// and backward_kernel_avx512.cpp (the same code compiled for those instruction sets by a target
// pragma); everything here has internal linkage so each file's copy keeps its own instruction set.
//
// Both passes recompute, per block of rows x keys, the probabilities P = exp(score - lse) and the
// score gradients dS = P * (dO.v - D) (attention_semantics.h), as small matrix products in fp32:
//   S  = Q K^T          dP = dO V^T
//   key-tile pass:      dV += P^T dO      dK += dS^T Q      (keys fixed, rows streamed)
//   query-tile pass:    dQ += dS K                           (rows fixed, keys streamed)
// Each output row is accumulated by one job in a fixed order and written once: no atomics, the
// result is bitwise repeatable.

#include "exp_nonpositive.h"

namespace {

constexpr int kBwdKeys = kBackwardKeyTile;  // keys per block (multiple of 16)
constexpr int kBwdRows = kBackwardRowTile;  // rows per block

static_assert(kBwdKeys % 16 == 0, "key blocks are padded to whole 16-column register blocks");

template <typename T>
inline void load_row(const void* src, int n, float* dst) {
  const T* s = static_cast<const T*>(src);
  for (int i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
}

template <typename T>
inline void store_row(const float* src, int n, void* dst) {
  T* d = static_cast<T*>(dst);
  for (int i = 0; i < n; ++i) d[i] = T(src[i]);
}

// ---------------------------------------------------------------- C += A B

// The register block is written with GCC/clang vector types of the including file's native
// register width, MFS_BWD_LANES floats (SSE 4, AVX2 8, AVX-512 16): wider types are lowered by
// GCC into spills and shuffles through the stack (measured: ~10x slower products on AVX2). The
// block is MFS_BWD_ROWS rows x MFS_BWD_VECS registers of columns of C, held in registers over
// the whole K loop.
#ifndef MFS_BWD_LANES
#define MFS_BWD_LANES 4
#endif
#ifndef MFS_BWD_ROWS
#define MFS_BWD_ROWS 4
#endif
#ifndef MFS_BWD_VECS
#define MFS_BWD_VECS 2
#endif

constexpr int kLanes = MFS_BWD_LANES;
typedef float vreg __attribute__((vector_size(4 * MFS_BWD_LANES), aligned(4)));  // unaligned access
typedef float vec8 __attribute__((vector_size(32), aligned(4)));

template <typename V, int MR, int NV>
inline void gemm_block(int k_len, const float* a, int64_t a_row, int64_t a_col, const float* b,
                       int ldb, float* c, int ldc) {
  constexpr int W = sizeof(V) / sizeof(float);
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = *reinterpret_cast<const V*>(c + r * ldc + W * v);
  for (int k = 0; k < k_len; ++k) {
    V bk[NV];
    for (int v = 0; v < NV; ++v) bk[v] = *reinterpret_cast<const V*>(b + int64_t(k) * ldb + W * v);
    for (int r = 0; r < MR; ++r) {
      const float ar = a[r * a_row + k * a_col];
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * bk[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<V*>(c + r * ldc + W * v) = acc[r][v];
}

// Columns [0, N) of MR rows (N a multiple of 8): whole register blocks, then one register, then
// (AVX-512) 8 columns at a time.
template <int MR>
inline void gemm_rows(int N, int K, const float* a, int64_t a_row, int64_t a_col, const float* b,
                      int ldb, float* c, int ldc) {
  constexpr int NV = MFS_BWD_VECS;
  int n = 0;
  for (; n + kLanes * NV <= N; n += kLanes * NV) gemm_block<vreg, MR, NV>(K, a, a_row, a_col, b + n, ldb, c + n, ldc);
  for (; n + kLanes <= N; n += kLanes) gemm_block<vreg, MR, 1>(K, a, a_row, a_col, b + n, ldb, c + n, ldc);
  for (; n < N; n += 8) gemm_block<vec8, MR, 1>(K, a, a_row, a_col, b + n, ldb, c + n, ldc);
}

// C[m][n] += sum_k A(m, k) B[k][n] for m < M, n < N (N a multiple of 8), with A(m, k) at
// a[m * a_row + k * a_col] (so A may be a transposed view), B and C row-major. Sums run over k
// in order: the result does not depend on the blocking.
inline void gemm_acc(int M, int N, int K, const float* a, int64_t a_row, int64_t a_col,
                     const float* b, int ldb, float* c, int ldc) {
  constexpr int MR = MFS_BWD_ROWS;
  int m = 0;
  for (; m + MR <= M; m += MR) gemm_rows<MR>(N, K, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
  if (MR > 2 && m + 2 <= M) {
    gemm_rows<2>(N, K, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
    m += 2;
  }
  for (; m < M; ++m) gemm_rows<1>(N, K, a + m * a_row, a_row, a_col, b, ldb, c + m * ldc, ldc);
}

// ---------------------------------------------------------------- scratch

struct BwdBuffers {
  float *q, *dout;     // [kBwdRows][head_dim], [kBwdRows][head_dim_v]
  float *k, *kt, *vt;  // [kBwdKeys][head_dim], [head_dim][kBwdKeys], [head_dim_v][kBwdKeys]
  float *p, *ds;       // [kBwdRows][kBwdKeys]
  float *acc_a;        // key-tile pass: dK [kBwdKeys][head_dim]; query-tile pass: dQ [kBwdRows][head_dim]
  float *acc_b;        // key-tile pass: dV [kBwdKeys][head_dim_v]
  float *v_row;        // one value row being transposed: [head_dim_v]
};

inline size_t bwd_layout(char* base, int hd, int hdv, BwdBuffers* b) {
  size_t offset = 0;
  auto take = [&](size_t floats) {
    float* p = base ? reinterpret_cast<float*>(base + offset) : nullptr;
    offset += (floats * 4 + 63) / 64 * 64;
    return p;
  };
  const size_t rows = kBwdRows > kBwdKeys ? kBwdRows : kBwdKeys;
  b->q = take(size_t(kBwdRows) * hd);
  b->dout = take(size_t(kBwdRows) * hdv);
  b->k = take(size_t(kBwdKeys) * hd);
  b->kt = take(size_t(hd) * kBwdKeys);
  b->vt = take(size_t(hdv) * kBwdKeys);
  b->p = take(size_t(kBwdRows) * kBwdKeys);
  b->ds = take(size_t(kBwdRows) * kBwdKeys);
  b->acc_a = take(rows * hd);
  b->acc_b = take(size_t(kBwdKeys) * hdv);
  b->v_row = take(size_t(hdv));
  return offset;
}

size_t bwd_scratch_bytes(int hd, int hdv) {
  BwdBuffers unused;
  return bwd_layout(nullptr, hd, hdv, &unused);
}

// Keys [k0, k0 + n) of the job into K, K^T and V^T (fp32; columns n..kBwdKeys zero).
template <typename T>
void load_keys(const BackwardJob& job, int k0, int n, const BwdBuffers& b) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  std::fill(b.kt, b.kt + size_t(hd) * kBwdKeys, 0.0f);
  std::fill(b.vt, b.vt + size_t(hdv) * kBwdKeys, 0.0f);
  for (int j = 0; j < n; ++j) {
    float* k = b.k + size_t(j) * hd;
    load_row<T>(job.k.row(k0 + j), hd, k);
    for (int d = 0; d < hd; ++d) b.kt[size_t(d) * kBwdKeys + j] = k[d];
    load_row<T>(job.v.row(k0 + j), hdv, b.v_row);
    for (int d = 0; d < hdv; ++d) b.vt[size_t(d) * kBwdKeys + j] = b.v_row[d];
  }
  std::fill(b.k + size_t(n) * hd, b.k + size_t(kBwdKeys) * hd, 0.0f);
}

// Rows [r0, r0 + m) of the job into Q and dO (fp32).
template <typename T>
void load_rows(const BackwardJob& job, int r0, int m, const BwdBuffers& b) {
  for (int i = 0; i < m; ++i) {
    const BackwardRow& row = job.rows[r0 + i];
    load_row<T>(row.q, job.head_dim, b.q + size_t(i) * job.head_dim);
    load_row<T>(row.dout, job.head_dim_v, b.dout + size_t(i) * job.head_dim_v);
  }
}

// For rows [r0, r0 + m) (in Q, dO) and keys [k0, k0 + n) (in K^T, V^T): P and, in ds, the
// gradient with respect to the raw product q.k (dS times the softcap derivative and the scale).
// Invisible keys, padding keys and rows that saw no key get P = dS = 0.
void probabilities_and_score_gradients(const BackwardJob& job, int r0, int m, int k0, int n,
                                       const BwdBuffers& b) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  std::fill(b.p, b.p + size_t(m) * kBwdKeys, 0.0f);
  std::fill(b.ds, b.ds + size_t(m) * kBwdKeys, 0.0f);
  gemm_acc(m, kBwdKeys, hd, b.q, hd, 1, b.kt, kBwdKeys, b.p, kBwdKeys);       // S = Q K^T
  gemm_acc(m, kBwdKeys, hdv, b.dout, hdv, 1, b.vt, kBwdKeys, b.ds, kBwdKeys);  // dP = dO V^T
  for (int i = 0; i < m; ++i) {
    const BackwardRow& row = job.rows[r0 + i];
    float* p = b.p + size_t(i) * kBwdKeys;
    float* ds = b.ds + size_t(i) * kBwdKeys;
    const int lo = std::max(row.key_begin, k0) - k0, hi = std::min(row.key_end, k0 + n) - k0;
    if (lo >= hi || row_saw_no_key(row.lse)) {
      std::fill(p, p + kBwdKeys, 0.0f);
      std::fill(ds, ds + kBwdKeys, 0.0f);
      continue;
    }
    for (int j = 0; j < lo; ++j) p[j] = ds[j] = 0.0f;
    for (int j = hi; j < kBwdKeys; ++j) p[j] = ds[j] = 0.0f;
    if (job.softcap > 0.0f || job.has_alibi) {
      for (int j = lo; j < hi; ++j) {
        const float capped = apply_softcap(job.scale * p[j], job.softcap);
        const float logit = capped + (job.has_alibi ? alibi_bias(row.slope, row.diagonal, k0 + j, 0, 0) : 0.0f);
        const float prob = exp_nonpositive(logit - row.lse);
        p[j] = prob;
        ds[j] = score_gradient(prob, ds[j], row.d) * softcap_derivative(capped, job.softcap) * job.scale;
      }
    } else {  // the same rules without softcap and ALiBi, in a loop that vectorises
      const float scale = job.scale, lse = row.lse, d = row.d;
      for (int j = lo; j < hi; ++j) {
        const float prob = exp_nonpositive(scale * p[j] - lse);
        p[j] = prob;
        ds[j] = score_gradient(prob, ds[j], d) * scale;
      }
    }
  }
}

// dk, dv of the keys [key_begin, key_end) of one kv head, over every row of the job.
template <typename T>
void run_key_tile(const BackwardJob& job, void* scratch) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  BwdBuffers b;
  bwd_layout(static_cast<char*>(scratch), hd, hdv, &b);
  const int k0 = job.key_begin, n = job.key_end - job.key_begin;
  load_keys<T>(job, k0, n, b);
  std::fill(b.acc_a, b.acc_a + size_t(kBwdKeys) * hd, 0.0f);
  std::fill(b.acc_b, b.acc_b + size_t(kBwdKeys) * hdv, 0.0f);
  for (int r0 = 0; r0 < job.row_count; r0 += kBwdRows) {
    const int m = std::min(kBwdRows, job.row_count - r0);
    load_rows<T>(job, r0, m, b);
    probabilities_and_score_gradients(job, r0, m, k0, n, b);
    gemm_acc(n, hdv, m, b.p, 1, kBwdKeys, b.dout, hdv, b.acc_b, hdv);  // dV += P^T dO
    gemm_acc(n, hd, m, b.ds, 1, kBwdKeys, b.q, hd, b.acc_a, hd);       // dK += dS^T Q
  }
  for (int j = 0; j < n; ++j) {
    store_row<T>(b.acc_a + size_t(j) * hd, hd, job.dk_rows[j]);
    store_row<T>(b.acc_b + size_t(j) * hdv, hdv, job.dv_rows[j]);
  }
}

// dq of the job's rows (<= kBwdRows), over the keys [key_begin, key_end).
template <typename T>
void run_query_tile(const BackwardJob& job, void* scratch) {
  const int hd = job.head_dim, hdv = job.head_dim_v, m = job.row_count;
  BwdBuffers b;
  bwd_layout(static_cast<char*>(scratch), hd, hdv, &b);
  load_rows<T>(job, 0, m, b);
  std::fill(b.acc_a, b.acc_a + size_t(m) * hd, 0.0f);
  for (int k0 = job.key_begin; k0 < job.key_end; k0 += kBwdKeys) {
    const int n = std::min(kBwdKeys, job.key_end - k0);
    load_keys<T>(job, k0, n, b);
    probabilities_and_score_gradients(job, 0, m, k0, n, b);
    gemm_acc(m, hd, kBwdKeys, b.ds, kBwdKeys, 1, b.k, hd, b.acc_a, hd);  // dQ += dS K
  }
  for (int i = 0; i < m; ++i) store_row<T>(b.acc_a + size_t(i) * hd, hd, job.rows[i].dq);
}

void bwd_key_tile(const BackwardJob& job, void* scratch) {
  switch (job.dtype) {
    case ElementType::kFloat32: return run_key_tile<float>(job, scratch);
    case ElementType::kFloat16: return run_key_tile<c10::Half>(job, scratch);
    case ElementType::kBFloat16: return run_key_tile<c10::BFloat16>(job, scratch);
  }
}

void bwd_query_tile(const BackwardJob& job, void* scratch) {
  switch (job.dtype) {
    case ElementType::kFloat32: return run_query_tile<float>(job, scratch);
    case ElementType::kFloat16: return run_query_tile<c10::Half>(job, scratch);
    case ElementType::kBFloat16: return run_query_tile<c10::BFloat16>(job, scratch);
  }
}

}  // namespace
