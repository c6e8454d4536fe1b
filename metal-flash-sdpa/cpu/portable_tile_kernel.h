// The portable tile kernel: plain C++, vectorised by the compiler. Included by
// tile_kernel_portable.cpp (baseline ISA, any cpu) and tile_kernel_avx2.cpp (the same code
// compiled for AVX2 + FMA by a target pragma); everything here has internal linkage so each
// file's copy keeps its own instruction set.
//
// Same algorithm as the AVX-512 kernel with a simpler layout: per block of keys, keys and values
// are converted to fp32 once, then each row runs its own online softmax over them, with loops
// over keys or head dims innermost so they vectorise.

#include "exp_nonpositive.h"

namespace {

constexpr int kBlock = 64;  // keys converted per block

template <typename T>
void convert_row(const void* src, int n, float* dst) {
  const T* s = static_cast<const T*>(src);
  for (int i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
}

// Dot product with 8 independent partial sums (head dims are multiples of 8), so the compiler
// can vectorise it without reassociating.
inline float dot(const float* a, const float* b, int n) {
  float acc[8] = {};
  for (int i = 0; i < n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

struct Buffers {
  float *q, *o, *k, *v, *s, *row_max, *row_sum;
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
  b->k = take(size_t(kBlock) * head_dim);
  b->v = take(size_t(kBlock) * head_dim_v);
  b->s = take(kBlock);
  b->row_max = take(rows);
  b->row_sum = take(rows);
  return offset;
}

size_t portable_scratch_bytes(int max_rows, int head_dim, int head_dim_v) {
  Buffers unused;
  return layout(nullptr, max_rows, head_dim, head_dim_v, &unused);
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
    for (int j = 0; j < n; ++j) {
      convert_row<T>(job.k.row(n0 + j), hd, b.k + size_t(j) * hd);
      convert_row<T>(job.v.row(n0 + j), hdv, b.v + size_t(j) * hdv);
    }
    for (int r = 0; r < rows; ++r) {
      const int lo = std::max(n0, job.row_key_begin[r]), hi = std::min(n0 + n, job.row_key_end[r]);
      if (lo >= hi) continue;
      const int count = hi - lo;
      const float* q = b.q + size_t(r) * hd;
      const float* k = b.k + size_t(lo - n0) * hd;
      // score = softcap(scale * q.k) + alibi, as attention_semantics.h defines it.
      for (int j = 0; j < count; ++j) b.s[j] = job.scale * dot(q, k + size_t(j) * hd, hd);
      if (job.softcap > 0.0f) {
        for (int j = 0; j < count; ++j) b.s[j] = apply_softcap(b.s[j], job.softcap);
      }
      if (job.has_alibi) {
        // alibi_bias() measures the distance from the row's diagonal; row_diagonal[r] is it.
        const float slope = job.row_alibi_slope[r];
        const int diag = job.row_diagonal[r];
        for (int j = 0; j < count; ++j) b.s[j] += alibi_bias(slope, diag, lo + j, 0, 0);
      }
      float block_max = -INFINITY;
      for (int j = 0; j < count; ++j) block_max = std::max(block_max, b.s[j]);
      const float new_max = std::max(b.row_max[r], block_max);
      const float alpha = exp_nonpositive(b.row_max[r] - new_max);  // 0 while nothing was seen
      float sum = 0.0f;
      for (int j = 0; j < count; ++j) {
        b.s[j] = exp_nonpositive(b.s[j] - new_max);
        sum += b.s[j];
      }
      float* o = b.o + size_t(r) * hdv;
      for (int d = 0; d < hdv; ++d) o[d] *= alpha;
      for (int j = 0; j < count; ++j) {
        const float p = b.s[j];
        const float* v = b.v + size_t(lo - n0 + j) * hdv;
        for (int d = 0; d < hdv; ++d) o[d] += p * v[d];
      }
      b.row_max[r] = new_max;
      b.row_sum[r] = b.row_sum[r] * alpha + sum;
    }
  }

  for (int r = 0; r < rows; ++r) {
    T* out = static_cast<T*>(job.out_rows[r]);
    float* lse = job.lse_rows ? job.lse_rows[r] : nullptr;
    const RowFinish f = finish_row(b.row_max[r], b.row_sum[r], job.has_sinks,
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
