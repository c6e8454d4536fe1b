// The backward tile kernel (FlashAttention-2): plain C++ whose inner loops the compiler
// vectorises. Included by backward_kernel_portable.cpp (baseline ISA), backward_kernel_avx2.cpp
// and backward_kernel_avx512.cpp (the same code compiled for those instruction sets by a target
// pragma); everything here has internal linkage so each file's copy keeps its own instruction set.
//
// One job is a tile of keys of one kv head; its rows are every query row of the GQA group's heads
// that sees the tile, streamed in blocks. Per block of rows x keys it recomputes the
// probabilities P = exp(score - lse) and the score gradients dS = P * (dO.v - D)
// (attention_semantics.h), as small matrix products in fp32 (tile_products.h):
//   S = Q K^T     dP = dO V^T     dV += P^T dO     dK += dS^T Q     dQ += dS K
// dk and dv are written once at the end of the job; dQ goes to each row's fp32 accumulator, which
// the driver gives to one job at a time (the key tiles of a sequence run in order on one thread).
// Every sum runs in a fixed order: no atomics, the result is bitwise repeatable.

#include "backward_probabilities.h"
#include "tile_products.h"

namespace {

constexpr int kBwdKeys = kBackwardKeyTile;  // keys per block (multiple of 16)
constexpr int kBwdRows = kBackwardRowTile;  // rows per block
constexpr int kBwdDotPiece = 32;  // dims per piece of the S and dP dot products

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

// ---------------------------------------------------------------- scratch

struct BwdBuffers {
  float *q, *dout;     // [kBwdRows][head_dim], [kBwdRows][head_dim_v]
  float *k, *kt, *vt;  // [kBwdKeys][head_dim], [head_dim][kBwdKeys], [head_dim_v][kBwdKeys]
  float *p, *ds;       // [kBwdRows][kBwdKeys]
  float *dk;           // dK [kBwdKeys][head_dim]
  float *dv;           // dV [kBwdKeys][head_dim_v]
  float *v_row;        // one value row being transposed: [head_dim_v]
};

inline size_t bwd_layout(char* base, int hd, int hdv, BwdBuffers* b) {
  size_t offset = 0;
  auto take = [&](size_t floats) {
    float* p = base ? reinterpret_cast<float*>(base + offset) : nullptr;
    offset += (floats * 4 + 63) / 64 * 64;
    return p;
  };
  b->q = take(size_t(kBwdRows) * hd);
  b->dout = take(size_t(kBwdRows) * hdv);
  b->k = take(size_t(kBwdKeys) * hd);
  b->kt = take(size_t(hd) * kBwdKeys);
  b->vt = take(size_t(hdv) * kBwdKeys);
  b->p = take(size_t(kBwdRows) * kBwdKeys);
  b->ds = take(size_t(kBwdRows) * kBwdKeys);
  b->dk = take(size_t(kBwdKeys) * hd);
  b->dv = take(size_t(kBwdKeys) * hdv);
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

// out[m][kBwdKeys] = A B^T for rows a[m][dims] and bt = B^T [dims][kBwdKeys], the dot products
// summed in pieces of kBwdDotPiece dims and the pieces then added (as the forward's scores): one
// long fp32 running sum errs by more than torch's blocked products on wide heads, and the error
// of S does not cancel against the forward's lse as it does in torch's softmax.
inline void product_in_pieces(int m, int dims, const float* a, const float* bt, float* out) {
  std::fill(out, out + size_t(m) * kBwdKeys, 0.0f);
  for (int d0 = 0; d0 < dims; d0 += kBwdDotPiece) {
    gemm_acc<true>(m, kBwdKeys, std::min(dims - d0, kBwdDotPiece), a + d0, dims, 1,
                   bt + size_t(d0) * kBwdKeys, kBwdKeys, out, kBwdKeys);
  }
}

// For rows [r0, r0 + m) (in Q, dO) and keys [k0, k0 + n) (in K^T, V^T): P and, in ds, the
// gradient with respect to the raw product q.k (backward_probabilities.h).
void probabilities_and_score_gradients(const BackwardJob& job, int r0, int m, int k0, int n,
                                       const BwdBuffers& b) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  product_in_pieces(m, hd, b.q, b.kt, b.p);       // S = Q K^T
  product_in_pieces(m, hdv, b.dout, b.vt, b.ds);  // dP = dO V^T
  finish_probabilities(job, job.rows + r0, m, k0, n, kBwdKeys, b.p, b.ds, kBwdKeys);
}

// dk, dv of the keys [key_begin, key_end) of one kv head over every row of the job; each row's
// dq accumulator gets the row's dS K. Blocks of rows stop where the accumulators stop being
// consecutive (the rows of the next head), so that dQ += dS K is one product per block.
template <typename T>
void run_key_tile(const BackwardJob& job, void* scratch) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  BwdBuffers b;
  bwd_layout(static_cast<char*>(scratch), hd, hdv, &b);
  const int k0 = job.key_begin, n = job.key_end - job.key_begin;
  load_keys<T>(job, k0, n, b);
  std::fill(b.dk, b.dk + size_t(kBwdKeys) * hd, 0.0f);
  std::fill(b.dv, b.dv + size_t(kBwdKeys) * hdv, 0.0f);
  const int n_padded = (n + 7) / 8 * 8;  // products run over whole 8-column groups (zero keys)
  for (int r0 = 0; r0 < job.row_count;) {
    float* dq = job.rows[r0].dq_acc;
    int m = 1;
    while (m < kBwdRows && r0 + m < job.row_count && job.rows[r0 + m].dq_acc == dq + size_t(m) * hd) ++m;
    load_rows<T>(job, r0, m, b);
    probabilities_and_score_gradients(job, r0, m, k0, n, b);
    // Each block's share is summed apart, then added: the long sums (dK, dV over every row of
    // the GQA group, dQ over every key tile) run in two levels, not one fp32 running sum.
    gemm_acc<true>(n, hdv, m, b.p, 1, kBwdKeys, b.dout, hdv, b.dv, hdv);  // dV += P^T dO
    gemm_acc<true>(n, hd, m, b.ds, 1, kBwdKeys, b.q, hd, b.dk, hd);       // dK += dS^T Q
    gemm_acc<true>(m, hd, n_padded, b.ds, kBwdKeys, 1, b.k, hd, dq, hd);  // dQ += dS K
    r0 += m;
  }
  for (int j = 0; j < n; ++j) {
    store_row<T>(b.dk + size_t(j) * hd, hd, job.dk_rows[j]);
    store_row<T>(b.dv + size_t(j) * hdv, hdv, job.dv_rows[j]);
  }
}

void bwd_key_tile(const BackwardJob& job, void* scratch) {
  switch (job.dtype) {
    case ElementType::kFloat32: return run_key_tile<float>(job, scratch);
    case ElementType::kFloat16: return run_key_tile<c10::Half>(job, scratch);
    case ElementType::kBFloat16: return run_key_tile<c10::BFloat16>(job, scratch);
  }
}

}  // namespace
