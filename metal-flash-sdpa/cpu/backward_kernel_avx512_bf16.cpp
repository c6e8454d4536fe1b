// The backward tile kernel for bf16 inputs with native bf16 products (vdpbf16ps, fp32
// accumulation). Compiled for AVX-512 F/BW/VL/DQ + AVX512_BF16 by the target pragma below; the
// driver calls it only for bf16 tensors on a cpu that has AVX512_BF16 (cpu_features.cpp).
//
// The job and the order of work are backward_tile_kernel.h's: per block of rows x keys
//   S = Q K^T     dP = dO V^T     dV += P^T dO     dK += dS^T Q     dQ += dS K
// S, dP and dV multiply bf16 pairs (bf16_pair_products.h): q, k, v and dO as they are stored
// (exact products) and P rounded to bf16 once per block (P is in [0, 1]: dv stays as accurate as
// torch's). dS stays fp32, with q and k converted to fp32, for dK and dQ (tile_products.h):
// rounding dS to bf16 made dq up to 3x less accurate than torch's bf16 backward (measured). Every
// sum is accumulated in fp32 in a fixed order. The pair operands are repacked so that each
// product's pairs run along its sum: K^T and V^T in pairs of dims, dO and P in pairs of rows.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "backward_job.h"

#ifdef MFS_HAVE_X86_KERNELS

// Everything included before isa_target_push.h is compiled for the baseline ISA.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#define MFS_ISA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c"
#include "isa_target_push.h"

// Register block of the fp32 products: 6 rows x 64 columns (as backward_kernel_avx512.cpp).
#define MFS_VEC_LANES 16
#define MFS_GEMM_ROWS 6
#define MFS_GEMM_VECS 4
#include "backward_probabilities.h"
#include "bf16_pair_products.h"
#include "tile_products.h"

namespace {

constexpr int kKeys = kBackwardKeyTile;  // keys per tile (even, a multiple of 16)
constexpr int kRows = kBackwardRowTile;  // rows per block (even)

static_assert(kKeys % 16 == 0 && kRows % 2 == 0, "pairs and 16-lane registers tile the blocks");

struct PairBuffers {
  uint16_t *q, *dout;     // rows as stored: [kRows][head_dim], [kRows][head_dim_v]
  uint32_t* dout_pairs;   // dO in pairs of rows: [kRows/2][head_dim_v]
  uint32_t *kt, *vt;      // K^T, V^T in pairs of dims: [head_dim/2][kKeys], [head_dim_v/2][kKeys]
  float *q_f32, *k_f32;   // Q, K in fp32: [kRows][head_dim], [kKeys][head_dim]
  float *p, *ds;          // [kRows][kKeys], fp32
  uint32_t* p_pairs;      // P in pairs of rows: [kRows/2][kKeys]
  float *dk, *dv;         // [kKeys][head_dim], [kKeys][head_dim_v]
};

size_t pair_layout(char* base, int hd, int hdv, PairBuffers* b) {
  size_t offset = 0;
  auto take = [&](size_t bytes) {
    char* p = base ? base + offset : nullptr;
    offset += (bytes + 63) / 64 * 64;
    return p;
  };
  b->q = reinterpret_cast<uint16_t*>(take(2 * size_t(kRows) * hd));
  b->dout = reinterpret_cast<uint16_t*>(take(2 * size_t(kRows) * hdv));
  b->dout_pairs = reinterpret_cast<uint32_t*>(take(4 * size_t(kRows / 2) * hdv));
  b->kt = reinterpret_cast<uint32_t*>(take(4 * size_t(hd / 2) * kKeys));
  b->vt = reinterpret_cast<uint32_t*>(take(4 * size_t(hdv / 2) * kKeys));
  b->q_f32 = reinterpret_cast<float*>(take(4 * size_t(kRows) * hd));
  b->k_f32 = reinterpret_cast<float*>(take(4 * size_t(kKeys) * hd));
  b->p = reinterpret_cast<float*>(take(4 * size_t(kRows) * kKeys));
  b->ds = reinterpret_cast<float*>(take(4 * size_t(kRows) * kKeys));
  b->p_pairs = reinterpret_cast<uint32_t*>(take(4 * size_t(kRows / 2) * kKeys));
  b->dk = reinterpret_cast<float*>(take(4 * size_t(kKeys) * hd));
  b->dv = reinterpret_cast<float*>(take(4 * size_t(kKeys) * hdv));
  return offset;
}

size_t pair_scratch_bytes(int hd, int hdv) {
  PairBuffers unused;
  return pair_layout(nullptr, hd, hdv, &unused);
}

inline const uint16_t* bf16_row(const void* p) { return static_cast<const uint16_t*>(p); }

// Keys [k0, k0 + n) of the job: K^T and V^T in pairs of dims, K in fp32; the padding keys up to
// kKeys are zero.
void load_keys(const BackwardJob& job, int k0, int n, const PairBuffers& b) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  std::fill(b.kt, b.kt + size_t(hd / 2) * kKeys, 0u);
  std::fill(b.vt, b.vt + size_t(hdv / 2) * kKeys, 0u);
  for (int j = 0; j < n; ++j) {
    uint32_t words[256];  // one row's pairs of dims (head dims <= 512)
    std::memcpy(words, job.k.row(k0 + j), 2 * size_t(hd));
    for (int d = 0; d < hd / 2; ++d) b.kt[size_t(d) * kKeys + j] = words[d];
    std::memcpy(words, job.v.row(k0 + j), 2 * size_t(hdv));
    for (int d = 0; d < hdv / 2; ++d) b.vt[size_t(d) * kKeys + j] = words[d];
  }
  for (int j = 0; j < n; ++j) bf16_row_to_float(bf16_row(job.k.row(k0 + j)), hd, b.k_f32 + size_t(j) * hd);
  std::fill(b.k_f32 + size_t(n) * hd, b.k_f32 + size_t(kKeys) * hd, 0.0f);
}

// Rows [r0, r0 + m) of the job: Q and dO as stored, Q in fp32 and dO in pairs of rows (an odd
// m's last pair padded with a zero row).
void load_rows(const BackwardJob& job, int r0, int m, const PairBuffers& b) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  for (int i = 0; i < m; ++i) {
    const BackwardRow& row = job.rows[r0 + i];
    std::memcpy(b.q + size_t(i) * hd, row.q, 2 * size_t(hd));
    std::memcpy(b.dout + size_t(i) * hdv, row.dout, 2 * size_t(hdv));
    bf16_row_to_float(b.q + size_t(i) * hd, hd, b.q_f32 + size_t(i) * hd);
  }
  for (int i = 0; i < m; i += 2) {
    const bool pair = i + 1 < m;
    pair_bf16_rows(b.dout + size_t(i) * hdv, pair ? b.dout + size_t(i + 1) * hdv : nullptr, hdv,
                   b.dout_pairs + size_t(i / 2) * hdv);
  }
}

// P of the block rounded to bf16 in pairs of rows (the sum of dV runs over rows).
void pack_probabilities(int m, const PairBuffers& b) {
  for (int i = 0; i < m; i += 2) {
    const size_t at = size_t(i) * kKeys;
    pair_float_rows(b.p + at, i + 1 < m ? b.p + at + kKeys : nullptr, kKeys, b.p_pairs + size_t(i / 2) * kKeys);
  }
}

inline const uint32_t* as_pairs(const uint16_t* p) { return reinterpret_cast<const uint32_t*>(p); }

// As backward_tile_kernel.h's run_key_tile, with S, dP and dV on bf16 pairs.
void run_key_tile(const BackwardJob& job, void* scratch) {
  const int hd = job.head_dim, hdv = job.head_dim_v;
  PairBuffers b;
  pair_layout(static_cast<char*>(scratch), hd, hdv, &b);
  const int k0 = job.key_begin, n = job.key_end - job.key_begin;
  load_keys(job, k0, n, b);
  std::fill(b.dk, b.dk + size_t(kKeys) * hd, 0.0f);
  std::fill(b.dv, b.dv + size_t(kKeys) * hdv, 0.0f);
  const int n_padded = (n + 7) / 8 * 8;  // dQ's sum runs over whole 8-key groups (zero keys)
  for (int r0 = 0; r0 < job.row_count;) {
    float* dq = job.rows[r0].dq_acc;
    int m = 1;
    while (m < kRows && r0 + m < job.row_count && job.rows[r0 + m].dq_acc == dq + size_t(m) * hd) ++m;
    load_rows(job, r0, m, b);
    const int row_pairs = (m + 1) / 2;
    std::fill(b.p, b.p + size_t(m) * kKeys, 0.0f);
    std::fill(b.ds, b.ds + size_t(m) * kKeys, 0.0f);
    gemm_pairs(m, kKeys, hd / 2, as_pairs(b.q), hd / 2, 1, b.kt, kKeys, b.p, kKeys);         // S
    gemm_pairs(m, kKeys, hdv / 2, as_pairs(b.dout), hdv / 2, 1, b.vt, kKeys, b.ds, kKeys);  // dP
    finish_probabilities(job, job.rows + r0, m, k0, n, kKeys, b.p, b.ds, kKeys);
    pack_probabilities(m, b);
    gemm_pairs(n, hdv, row_pairs, b.p_pairs, 1, kKeys, b.dout_pairs, hdv, b.dv, hdv);  // dV += P^T dO
    gemm_acc(n, hd, m, b.ds, 1, kKeys, b.q_f32, hd, b.dk, hd);           // dK += dS^T Q
    gemm_acc(m, hd, n_padded, b.ds, kKeys, 1, b.k_f32, hd, dq, hd);      // dQ += dS K
    r0 += m;
  }
  for (int j = 0; j < n; ++j) {
    uint16_t* dk = static_cast<uint16_t*>(job.dk_rows[j]);
    uint16_t* dv = static_cast<uint16_t*>(job.dv_rows[j]);
    round_row_to_bf16(b.dk + size_t(j) * hd, hd, dk);
    round_row_to_bf16(b.dv + size_t(j) * hdv, hdv, dv);
  }
}

}  // namespace

#include "isa_target_pop.h"

BackwardKernel avx512_bf16_backward_kernel() { return {pair_scratch_bytes, run_key_tile}; }

#endif  // MFS_HAVE_X86_KERNELS
