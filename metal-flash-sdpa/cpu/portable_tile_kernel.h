// The portable tile kernel: plain C++, vectorised by the compiler. Included by
// tile_kernel_portable.cpp (baseline ISA, any cpu) and tile_kernel_avx2.cpp (the same code
// compiled for AVX2 + FMA by a target pragma); everything here has internal linkage so each
// file's copy keeps its own instruction set.
//
// FlashAttention-2 over one TileJob in fp32: per block of keys, keys (transposed) and values are
// converted to fp32 once; then, for the runs of consecutive rows that see the block,
//   S = Q K^T (tile_products.h), the rows' online softmax over S, O = alpha O + P V (tile_products.h).

#include "dropout_tiles.h"
#include "exp_nonpositive.h"
#include "tile_products.h"

namespace {

constexpr int kBlock = 64;  // keys per block (a multiple of 8: products run over whole 8-key groups)
static_assert(kBlock == kMaskTileKeys, "a key block is one tile of the mask summary");
// q.k is summed in pieces of this many dims, then the pieces are added: one long fp32 running
// sum loses accuracy that large unscaled scores (e.g. scale = 1, head_dim 256) expose.
constexpr int kDotPiece = 32;

template <typename T>
void convert_row(const void* src, int n, float* dst) {
  const T* s = static_cast<const T*>(src);
  for (int i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
}

struct Buffers {
  float *q, *o;   // [rows][head_dim], [rows][head_dim_v]
  float *kt, *v;  // K^T [head_dim][kBlock], V [kBlock][head_dim_v]
  float *s;       // scores, then probabilities: [rows][kBlock]
  float *k_row;   // one key row being transposed
  float *row_max, *row_sum;
};

inline size_t layout(char* base, int rows, int head_dim, int head_dim_v, Buffers* b) {
  size_t offset = 0;
  auto take = [&](size_t floats) {
    float* p = base ? reinterpret_cast<float*>(base + offset) : nullptr;
    offset += (floats * 4 + 63) / 64 * 64;
    return p;
  };
  b->q = take(size_t(rows) * head_dim);
  b->o = take(size_t(rows) * head_dim_v);
  b->kt = take(size_t(head_dim) * kBlock);
  b->v = take(size_t(kBlock) * head_dim_v);
  b->s = take(size_t(rows) * kBlock);
  b->k_row = take(head_dim);
  b->row_max = take(rows);
  b->row_sum = take(rows);
  return offset;
}

size_t portable_scratch_bytes(int max_rows, int head_dim, int head_dim_v) {
  Buffers unused;
  return layout(nullptr, max_rows, head_dim, head_dim_v, &unused);
}

// The largest of x[0..n), skipping NaNs (as std::max(m, x) does); -inf for n = 0. GCC keeps a
// float max reduction scalar (its NaN rules), so the lanes are written out: 8 running maxima,
// x > m ? x : m per lane (false for a NaN x), then the lanes.
inline float row_maximum(const float* x, int n) {
  vec8 m8;
  for (int l = 0; l < 8; ++l) m8[l] = -INFINITY;
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const vec8 v = load_vec<vec8>(x + j);
    m8 = v > m8 ? v : m8;
  }
  float m = -INFINITY;
  for (int l = 0; l < 8; ++l) m = std::max(m, m8[l]);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// The sum of x[0..n) in a fixed order: 8 lane sums (x[l], x[l + 8], ...) added lane by lane,
// then the tail. A float running sum stays scalar (GCC does not reassociate it).
inline float row_sum_in_lanes(const float* x, int n) {
  vec8 s8 = {};
  int j = 0;
  for (; j + 8 <= n; j += 8) s8 += load_vec<vec8>(x + j);
  float s = 0.0f;
  for (int l = 0; l < 8; ++l) s += s8[l];
  for (; j < n; ++j) s += x[j];
  return s;
}

// Scores of row r over keys [lo, hi) of the block starting at n0 (s holds the raw products q.k of
// the block's keys), turned into the row's probabilities in place; every other entry of the
// row's [0, n_padded) becomes 0. Updates the row's running max and sum; returns the factor its
// output accumulator must be rescaled by. The rules are attention_semantics.h's.
inline float softmax_row(const TileJob& job, int r, int n0, int lo, int hi, int n_padded,
                         bool read_mask, float* s, float* row_max, float* row_sum) {
  const int a = lo - n0, e = hi - n0;
  for (int j = a; j < e; ++j) s[j] = job.scale * s[j];
  if (job.softcap > 0.0f) {
    for (int j = a; j < e; ++j) s[j] = apply_softcap(s[j], job.softcap);
  }
  if (job.has_alibi) {
    // alibi_bias() measures the distance from the row's diagonal; row_diagonal[r] is it.
    const float slope = job.row_alibi_slope[r];
    const int diag = job.row_diagonal[r];
    for (int j = a; j < e; ++j) s[j] += alibi_bias(slope, diag, n0 + j, 0, 0);
  }
  if (read_mask) {  // a mixed tile of attn_mask: its bias, -inf for removed keys
    job.mask.add_biases(job.row_mask[r], n0 + a, e - a, s + a);
  }
  const float block_max = row_maximum(s + a, e - a);
  const float new_max = std::max(row_max[r], block_max);  // std::max skips a NaN s[j]
  const float ref = softmax_reference(new_max);
  const float alpha = exp_nonpositive(row_max[r] - ref);  // 0 while nothing was seen
  // A loop without a reduction vectorises; the sum is then taken in 8 lanes.
  for (int j = a; j < e; ++j) s[j] = exp_nonpositive(s[j] - ref);  // NaN for a NaN or +inf score
  const float sum = row_sum_in_lanes(s + a, e - a);
  for (int j = 0; j < a; ++j) s[j] = 0.0f;
  for (int j = e; j < n_padded; ++j) s[j] = 0.0f;
  row_max[r] = new_max;
  row_sum[r] = row_sum[r] * alpha + sum;
  return alpha;
}

// s[m][n_padded] (row stride kBlock) = Q K^T for rows q[m][hd], in pieces of kDotPiece dims.
// Each piece is summed from zero in registers and then added to s (gemm_acc<true>): the same
// sums, bit for bit, as a piece summed into a zeroed buffer and added, without that buffer.
inline void scores(int m, int n_padded, int hd, const float* q, const float* kt, float* s) {
  for (int i = 0; i < m; ++i) std::fill(s + size_t(i) * kBlock, s + size_t(i) * kBlock + n_padded, 0.0f);
  for (int d0 = 0; d0 < hd; d0 += kDotPiece) {
    gemm_acc<true>(m, n_padded, std::min(hd - d0, kDotPiece), q + d0, hd, 1,
                   kt + size_t(d0) * kBlock, kBlock, s, kBlock);
  }
}

template <typename T>
void run_tile(const TileJob& job, void* scratch) {
  const int rows = job.rows, hd = job.head_dim, hdv = job.head_dim_v;
  Buffers b;
  layout(static_cast<char*>(scratch), rows, hd, hdv, &b);
  for (int r = 0; r < rows; ++r) {
    convert_row<T>(job.q_rows[r], hd, b.q + size_t(r) * hd);
    b.row_max[r] = -INFINITY;
    b.row_sum[r] = 0.0f;
  }
  std::fill(b.o, b.o + size_t(rows) * hdv, 0.0f);

  for (int n0 = job.key_begin; n0 < job.key_end; n0 += kBlock) {
    const int n = std::min(kBlock, job.key_end - n0);
    const int n_padded = (n + 7) / 8 * 8;
    // The mixed rows' mask values of the block: one cache line each, 2 KiB apart or more, too
    // many streams for the hardware prefetcher (the misses were ~10 % of an fp32 forward at head
    // dim 128 with a full boolean mask). Asked for now, they arrive during the products.
    if (job.mask.present()) {
      for (int r = 0; r < rows; ++r) {
        if (job.mask.tile_state(job.row_mask[r], n0 / kBlock) == kMaskTileMixed) job.mask.prefetch(job.row_mask[r], n0, n);
      }
    }
    // fp32 values of a whole block in rows a whole number of floats apart (not paged) are the
    // product's operand where they are; other blocks are converted (and padded) into b.v.
    const float* v_block = b.v;
    int ld_v = hdv;
    if constexpr (std::is_same_v<T, float>) {
      if (job.v.pages == nullptr && n == n_padded && job.v.row_stride % 4 == 0 &&
          job.v.row_stride / 4 <= INT32_MAX) {
        v_block = static_cast<const float*>(job.v.row(n0));
        ld_v = int(job.v.row_stride / 4);
      }
    }
    for (int j = 0; j < n; ++j) {
      const float* k_row = b.k_row;
      if constexpr (std::is_same_v<T, float>) {
        k_row = static_cast<const float*>(job.k.row(n0 + j));
      } else {
        convert_row<T>(job.k.row(n0 + j), hd, b.k_row);
      }
      for (int d = 0; d < hd; ++d) b.kt[size_t(d) * kBlock + j] = k_row[d];
      if (v_block == b.v) convert_row<T>(job.v.row(n0 + j), hdv, b.v + size_t(j) * hdv);
    }
    for (int j = n; j < n_padded; ++j) {  // padding keys: zero products, zero values
      for (int d = 0; d < hd; ++d) b.kt[size_t(d) * kBlock + j] = 0.0f;
      std::fill(b.v + size_t(j) * hdv, b.v + size_t(j + 1) * hdv, 0.0f);
    }
    // Runs of consecutive rows that see a key of the block: one product each.
    for (int r0 = 0; r0 < rows;) {
      auto sees_block = [&](int r) {
        return std::max(n0, job.row_key_begin[r]) < std::min(n0 + n, job.row_key_end[r]) &&
               job.mask.tile_state(job.row_mask[r], n0 / kBlock) != kMaskTileClosed;
      };
      if (!sees_block(r0)) {
        ++r0;
        continue;
      }
      int r1 = r0 + 1;
      while (r1 < rows && sees_block(r1)) ++r1;
      const int m = r1 - r0;
      float* s = b.s + size_t(r0) * kBlock;
      scores(m, n_padded, hd, b.q + size_t(r0) * hd, b.kt, s);  // S = Q K^T
      for (int r = r0; r < r1; ++r) {
        const int lo = std::max(n0, job.row_key_begin[r]), hi = std::min(n0 + n, job.row_key_end[r]);
        const bool read_mask = job.mask.tile_state(job.row_mask[r], n0 / kBlock) == kMaskTileMixed;
        const float alpha = softmax_row(job, r, n0, lo, hi, n_padded, read_mask,
                                        b.s + size_t(r) * kBlock, b.row_max, b.row_sum);
        // Dropout after the row's sum: lse and the normaliser are the undropped softmax's.
        if (job.dropout.on) {
          apply_dropout_row(job.dropout, job.row_dropout[r], lo, hi - lo,
                            b.s + size_t(r) * kBlock + (lo - n0));
        }
        float* o = b.o + size_t(r) * hdv;
        if (alpha != 1.0f) {
          for (int d = 0; d < hdv; ++d) o[d] *= alpha;
        }
      }
      gemm_acc(m, hdv, n_padded, s, kBlock, 1, v_block, ld_v, b.o + size_t(r0) * hdv, hdv);  // O += P V
      r0 = r1;
    }
  }

  for (int r = 0; r < rows; ++r) {
    T* out = static_cast<T*>(job.out_rows[r]);
    float* lse = job.lse_rows ? job.lse_rows[r] : nullptr;
    const RowFinish f = finish_row(b.row_max[r], b.row_sum[r],
                                   job.row_key_begin[r] < job.row_key_end[r], job.has_sinks,
                                   job.has_sinks ? job.row_sink[r] : 0.0f);
    const float* o = b.o + size_t(r) * hdv;
    for (int d = 0; d < hdv; ++d) out[d] = T(o[d] * f.inv);  // a row that saw no key: zeros
    if (lse) *lse = f.lse;
  }
}

void run_portable(const TileJob& job, void* scratch) {
  switch (job.dtype) {
    case ElementType::kFloat32: return run_tile<float>(job, scratch);
    case ElementType::kFloat16: return run_tile<c10::Half>(job, scratch);
    case ElementType::kBFloat16: return run_tile<c10::BFloat16>(job, scratch);
  }
}

}  // namespace
