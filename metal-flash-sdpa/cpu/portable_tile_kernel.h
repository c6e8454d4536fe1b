// The portable tile kernel: plain C++, vectorised by the compiler. Included by
// tile_kernel_portable.cpp (baseline ISA, any cpu) and tile_kernel_avx2.cpp (the same code
// compiled for AVX2 + FMA by a target pragma); everything here has internal linkage so each
// file's copy keeps its own instruction set.
//
// Same algorithm as the AVX-512 kernel with a simpler layout: per block of keys, keys and values
// are converted to fp32 once, then each row runs its own online softmax over them, with loops
// over keys or head dims innermost so they vectorise.

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
        for (int j = 0; j < count; ++j) b.s[j] = job.softcap * std::tanh(b.s[j] / job.softcap);
      }
      if (job.has_alibi) {
        const float slope = job.row_alibi_slope[r];
        const int diag = job.row_diagonal[r];
        for (int j = 0; j < count; ++j) b.s[j] -= slope * float(std::abs(diag - (lo + j)));
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
    const float m = b.row_max[r], l = b.row_sum[r];
    if (!(l > 0.0f)) {  // no visible key: zeros, lse -inf (also with a sink)
      for (int d = 0; d < hdv; ++d) out[d] = T(0.0f);
      if (lse) *lse = -INFINITY;
      continue;
    }
    float inv = 1.0f / l, log_sum = m + std::log(l);
    if (job.has_sinks) {  // the sink joins the denominator only
      const float sink = job.row_sink[r], mf = std::max(m, sink);
      const float f = std::exp(m - mf), denom = l * f + std::exp(sink - mf);
      inv = f / denom;
      log_sum = mf + std::log(denom);
    }
    const float* o = b.o + size_t(r) * hdv;
    for (int d = 0; d < hdv; ++d) out[d] = T(o[d] * inv);
    if (lse) *lse = log_sum;
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
