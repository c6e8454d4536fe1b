// The AVX-512 tile kernel: FlashAttention-2 over one TileJob, with fp32 online softmax.
//
// Included by tile_kernel_avx512.cpp (AVX-512 F/BW/VL/DQ) and tile_kernel_avx512_bf16.cpp (the same
// plus AVX512_BF16) *after* their target pragma, and only there: everything here lives in an
// anonymous namespace so each file's copy is compiled for that file's instruction set and none is
// ever shared with code that runs on a lesser cpu. MFS_AVX512_BF16_DOT says whether bf16 dot
// products are available.
//
// Layout: every vector runs over 16 query rows. The tile's queries are packed once, transposed
// (q^T: [head_dim][rows]), so that keys and values are read straight from their (strided, maybe
// paged) rows by scalar broadcasts, without copies. Scores are s^T [keys][rows], the output
// accumulator o^T [head_dim_v][rows], so the online softmax's per-row max/sum/rescale are plain
// element-wise vector operations. Rows are processed in chunks of up to 48 (3 vectors): a
// register block is 8 keys (or 8 value dims) x 3 vectors = 24 accumulators.
//
// bf16 with MFS_AVX512_BF16_DOT: q^T holds (d, d+1) pairs per row as one 32-bit word, probabilities
// are rounded to bf16 in (key, key+1) pairs and values are repacked per block into (key, key+1)
// pairs, so both products are vdpbf16ps with fp32 accumulation. Otherwise fp16/bf16 keys and values
// are converted to fp32 once per block.
//
// Tiles of at most kFewRows rows (decode) take run_few_rows_tile instead, vectorised over head
// dims; run_any_tile picks.

#ifdef MFS_AVX512_BF16_DOT
#include "bf16_pair_products.h"  // dot_pairs (vdpbf16ps), shared with the bf16 backward
#endif
#include "dropout_avx512.h"  // apply_dropout_columns: s^T's 16 rows per vector
#include "dropout_tiles.h"   // apply_dropout_row: the few-rows tiles

namespace {

constexpr int kLanes = 16;
constexpr int kChunkVecs = 3;
constexpr int kChunkRows = kChunkVecs * kLanes;
constexpr int kKeyGroup = 8;  // keys per register block of q.k (blocks are padded to this)
constexpr int kDvGroup = 8;   // value dims per register block of p.v (head_dim_v % 8 == 0)

static_assert(kKeyBlock % kKeyGroup == 0, "key blocks must hold whole key groups");
static_assert(kKeyBlock % kMaskTileKeys == 0, "key blocks must cover whole attn_mask tiles");

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

inline uint32_t load_u32(const void* p) {
  uint32_t x;
  std::memcpy(&x, p, 4);
  return x;
}

// ---------------------------------------------------------------- element conversions

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

template <ElementType T>
inline float load_scalar(const void* p, int i) {
  if constexpr (T == ElementType::kFloat32) return static_cast<const float*>(p)[i];
  if constexpr (T == ElementType::kFloat16) return _cvtsh_ss(static_cast<const uint16_t*>(p)[i]);
  if constexpr (T == ElementType::kBFloat16) return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
}

template <ElementType T>
inline void store_scalar(void* p, int i, float x) {
  if constexpr (T == ElementType::kFloat32) static_cast<float*>(p)[i] = x;
  if constexpr (T == ElementType::kFloat16) {
    static_cast<uint16_t*>(p)[i] = _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT);
  }
  if constexpr (T == ElementType::kBFloat16) static_cast<uint16_t*>(p)[i] = float_to_bf16(x);
}

// 8 elements of a row as fp32.
template <ElementType T>
inline __m256 load8(const void* row, int i) {
  if constexpr (T == ElementType::kFloat32) return _mm256_loadu_ps(static_cast<const float*>(row) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + i));
  if constexpr (T == ElementType::kFloat16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline void prefetch_row(const void* row, int bytes) {
  const char* p = static_cast<const char*>(row);
  for (int o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

// ---------------------------------------------------------------- vector math

// e^x with ~1 ulp error on [-87, 88]; exactly 0 for x <= -104 (so masked scores, -inf, give 0).
// NaN stays NaN (so a NaN score reaches the row's sum): maxps/minps return their second operand
// when either is NaN, hence x second.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  x = _mm512_min_ps(_mm512_set1_ps(88.7f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// tanh(x) to a few ulp over all floats (softcap divides scores by up to 1e30, so tiny arguments
// are common). 1 - 2 / (e^{2|x|} + 1) cancels as |x| -> 0 (it gives 0 below ~1e-8), so below
// |x| = 0.4 the odd Taylor series x - x^3/3 + 2x^5/15 - ... (to x^13: truncation < 1e-8
// relative there) is used instead, and the sign is copied back. tanh(+-inf) = +-1, NaN stays NaN.
inline __m512 tanh_ps(__m512 x) {
  const __m512 sign_bit = _mm512_set1_ps(-0.0f);
  const __m512 ax = _mm512_andnot_ps(sign_bit, x);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp_ps(_mm512_add_ps(ax, ax));
  const __m512 large = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
  const __m512 x2 = _mm512_mul_ps(ax, ax);
  __m512 c = _mm512_set1_ps(21844.0f / 6081075.0f);
  c = _mm512_fmadd_ps(c, x2, _mm512_set1_ps(-1382.0f / 155925.0f));
  c = _mm512_fmadd_ps(c, x2, _mm512_set1_ps(62.0f / 2835.0f));
  c = _mm512_fmadd_ps(c, x2, _mm512_set1_ps(-17.0f / 315.0f));
  c = _mm512_fmadd_ps(c, x2, _mm512_set1_ps(2.0f / 15.0f));
  c = _mm512_fmadd_ps(c, x2, _mm512_set1_ps(-1.0f / 3.0f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(ax, x2), c, ax);
  const __m512 t = _mm512_mask_mov_ps(large, _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.4f), _CMP_LT_OQ), small);
  return _mm512_or_ps(t, _mm512_and_ps(sign_bit, x));
}

// What attention_semantics.h's rule templates need beyond __m512's operators.
struct Avx512Math {
  static __m512 tanh(__m512 x) { return tanh_ps(x); }
};

// |diagonal - key| per lane, as fp32: the distance alibi_biased() scales.
inline __m512 abs_distance(__m512i diagonal, __m512i key) {
  return _mm512_cvtepi32_ps(_mm512_abs_epi32(_mm512_sub_epi32(diagonal, key)));
}

// ---------------------------------------------------------------- scratch

// Per-thread working memory of one tile; every array 64-byte aligned.
struct Scratch {
  float* qt;         // q^T: [head_dim][rows_padded] fp32, or [head_dim/2][rows_padded] bf16 pairs
  float* s;          // s^T of one chunk: [kKeyBlock][kChunkRows]; probabilities in place
  float* bias;       // attn_mask biases of one chunk: [kKeyBlock][kChunkRows] (mixed tiles)
  uint32_t* p_pairs; // bf16 probabilities of one chunk: [kKeyBlock/2][kChunkRows]
  float* ot;         // o^T accumulator: [head_dim_v][rows_padded]
  float* k_conv;     // keys converted to fp32: [kKeyBlock][head_dim]
  float* v_conv;     // values converted to fp32 [kKeyBlock][head_dim_v], or bf16 pairs
                     // [kKeyBlock/2][head_dim_v]
  float* zero_row;   // padding keys of a partial key group point here
  const void** k_rows;
  const void** v_rows;
  int *key_begin, *key_end, *diagonal;
  float *slope, *row_max, *row_sum, *alpha;
  uint32_t *dropout_token, *dropout_head;  // the rows' dropout counter words, padded
};

// Lays the scratch out from `base` (or only measures it when base is null); returns its size.
inline size_t layout_scratch(char* base, int rows_padded, int head_dim, int head_dim_v,
                             Scratch* s) {
  size_t offset = 0;
  auto take = [&](size_t bytes) -> char* {
    char* p = base ? base + offset : nullptr;
    offset += (bytes + 63) / 64 * 64;
    return p;
  };
  const size_t rp = rows_padded;
  const int max_dim = head_dim > head_dim_v ? head_dim : head_dim_v;
  s->qt = reinterpret_cast<float*>(take(4 * rp * head_dim));
  s->s = reinterpret_cast<float*>(take(4 * kKeyBlock * kChunkRows));
  s->bias = reinterpret_cast<float*>(take(4 * kKeyBlock * kChunkRows));
  s->p_pairs = reinterpret_cast<uint32_t*>(take(4 * (kKeyBlock / 2) * kChunkRows));
  s->ot = reinterpret_cast<float*>(take(4 * rp * head_dim_v));
  s->k_conv = reinterpret_cast<float*>(take(4 * size_t(kKeyBlock) * head_dim));
  s->v_conv = reinterpret_cast<float*>(take(4 * size_t(kKeyBlock) * head_dim_v));
  s->zero_row = reinterpret_cast<float*>(take(4 * size_t(max_dim)));
  s->k_rows = reinterpret_cast<const void**>(take(sizeof(void*) * kKeyBlock));
  s->v_rows = reinterpret_cast<const void**>(take(sizeof(void*) * kKeyBlock));
  s->key_begin = reinterpret_cast<int*>(take(4 * rp));
  s->key_end = reinterpret_cast<int*>(take(4 * rp));
  s->diagonal = reinterpret_cast<int*>(take(4 * rp));
  s->slope = reinterpret_cast<float*>(take(4 * rp));
  s->row_max = reinterpret_cast<float*>(take(4 * rp));
  s->row_sum = reinterpret_cast<float*>(take(4 * rp));
  s->alpha = reinterpret_cast<float*>(take(4 * rp));
  s->dropout_token = reinterpret_cast<uint32_t*>(take(4 * rp));
  s->dropout_head = reinterpret_cast<uint32_t*>(take(4 * rp));
  return offset;
}

size_t scratch_bytes(int max_rows, int head_dim, int head_dim_v) {
  Scratch unused;
  return layout_scratch(nullptr, round_up(max_rows, kLanes), head_dim, head_dim_v, &unused);
}

// ---------------------------------------------------------------- products

// s^T[j][chunk] = sum_d k_j[d] * q^T[d][chunk] for `count` keys (a multiple of kKeyGroup).
// Dot products are summed in pieces of kDotPiece dims, then the pieces are added: a long fp32
// running sum loses accuracy that large unscaled scores (e.g. scale = 1, head_dim 256) expose.
constexpr int kDotPiece = 32;

template <int MR>
void qk_f32(const void* const* k_rows, int count, const float* qt, int rows_padded, int head_dim,
            float* s) {
  for (int j0 = 0; j0 < count; j0 += kKeyGroup) {
    const float* k[kKeyGroup];
    for (int i = 0; i < kKeyGroup; ++i) k[i] = static_cast<const float*>(k_rows[j0 + i]);
    for (int d0 = 0; d0 < head_dim; d0 += kDotPiece) {
      __m512 acc[kKeyGroup][MR];
#pragma GCC unroll 8
      for (int i = 0; i < kKeyGroup; ++i)
        for (int r = 0; r < MR; ++r) acc[i][r] = _mm512_setzero_ps();
      const int d1 = std::min(head_dim, d0 + kDotPiece);
      for (int d = d0; d < d1; ++d) {
        const float* qd = qt + size_t(d) * rows_padded;
        __m512 q[MR];
        for (int r = 0; r < MR; ++r) q[r] = _mm512_load_ps(qd + kLanes * r);
#pragma GCC unroll 8
        for (int i = 0; i < kKeyGroup; ++i) {
          const __m512 kb = _mm512_set1_ps(k[i][d]);
          for (int r = 0; r < MR; ++r) acc[i][r] = _mm512_fmadd_ps(kb, q[r], acc[i][r]);
        }
      }
#pragma GCC unroll 8
      for (int i = 0; i < kKeyGroup; ++i)
        for (int r = 0; r < MR; ++r) {
          float* dst = s + (j0 + i) * kChunkRows + kLanes * r;
          _mm512_store_ps(dst, d0 == 0 ? acc[i][r] : _mm512_add_ps(_mm512_load_ps(dst), acc[i][r]));
        }
    }
  }
}

// o^T[dv][chunk] = alpha[chunk] * o^T[dv][chunk] + sum_j v_j[dv] * p^T[j][chunk].
template <int MR>
void pv_f32(const void* const* v_rows, int count, const float* p, const float* alpha,
            int head_dim_v, float* ot, int rows_padded) {
  __m512 a[MR];
  for (int r = 0; r < MR; ++r) a[r] = _mm512_load_ps(alpha + kLanes * r);
  for (int dv0 = 0; dv0 < head_dim_v; dv0 += kDvGroup) {
    __m512 acc[kDvGroup][MR];
#pragma GCC unroll 8
    for (int i = 0; i < kDvGroup; ++i)
      for (int r = 0; r < MR; ++r)
        acc[i][r] = _mm512_mul_ps(a[r], _mm512_load_ps(ot + size_t(dv0 + i) * rows_padded + kLanes * r));
    for (int j = 0; j < count; ++j) {
      __m512 pj[MR];
      for (int r = 0; r < MR; ++r) pj[r] = _mm512_load_ps(p + j * kChunkRows + kLanes * r);
      const float* v = static_cast<const float*>(v_rows[j]) + dv0;
#pragma GCC unroll 8
      for (int i = 0; i < kDvGroup; ++i) {
        const __m512 vb = _mm512_set1_ps(v[i]);
        for (int r = 0; r < MR; ++r) acc[i][r] = _mm512_fmadd_ps(vb, pj[r], acc[i][r]);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < kDvGroup; ++i)
      for (int r = 0; r < MR; ++r)
        _mm512_store_ps(ot + size_t(dv0 + i) * rows_padded + kLanes * r, acc[i][r]);
  }
}

#ifdef MFS_AVX512_BF16_DOT
// acc + sum of the products of the bf16 pairs of a and b (vdpbf16ps).
inline __m512 dot_bf16_pairs(__m512 acc, __m512i a, __m512i b) {
  return dot_pairs(acc, _mm512_castsi512_ps(a), _mm512_castsi512_ps(b));
}

// As qk_f32, with bf16 keys (pairs of dims broadcast as one word) and q^T in bf16 pairs.
template <int MR>
void qk_bf16(const void* const* k_rows, int count, const uint32_t* qt, int rows_padded,
             int head_dim, float* s) {
  const int pairs = head_dim / 2;
  for (int j0 = 0; j0 < count; j0 += kKeyGroup) {
    const char* k[kKeyGroup];
    for (int i = 0; i < kKeyGroup; ++i) k[i] = static_cast<const char*>(k_rows[j0 + i]);
    __m512 acc[kKeyGroup][MR];
#pragma GCC unroll 8
    for (int i = 0; i < kKeyGroup; ++i)
      for (int r = 0; r < MR; ++r) acc[i][r] = _mm512_setzero_ps();
    for (int d = 0; d < pairs; ++d) {
      const uint32_t* qd = qt + size_t(d) * rows_padded;
      __m512i q[MR];
      for (int r = 0; r < MR; ++r) q[r] = _mm512_load_si512(qd + kLanes * r);
#pragma GCC unroll 8
      for (int i = 0; i < kKeyGroup; ++i) {
        const __m512i kb = _mm512_set1_epi32(static_cast<int>(load_u32(k[i] + 4 * d)));
        for (int r = 0; r < MR; ++r) acc[i][r] = dot_bf16_pairs(acc[i][r], q[r], kb);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < kKeyGroup; ++i)
      for (int r = 0; r < MR; ++r)
        _mm512_store_ps(s + (j0 + i) * kChunkRows + kLanes * r, acc[i][r]);
  }
}

// As pv_f32, with probabilities in bf16 (key, key+1) pairs and values packed the same way:
// v_pairs[j/2][dv]. `count` is even.
template <int MR>
void pv_bf16(const uint32_t* v_pairs, int count, const uint32_t* p, const float* alpha,
             int head_dim_v, float* ot, int rows_padded) {
  __m512 a[MR];
  for (int r = 0; r < MR; ++r) a[r] = _mm512_load_ps(alpha + kLanes * r);
  for (int dv0 = 0; dv0 < head_dim_v; dv0 += kDvGroup) {
    __m512 acc[kDvGroup][MR];
#pragma GCC unroll 8
    for (int i = 0; i < kDvGroup; ++i)
      for (int r = 0; r < MR; ++r)
        acc[i][r] = _mm512_mul_ps(a[r], _mm512_load_ps(ot + size_t(dv0 + i) * rows_padded + kLanes * r));
    for (int j = 0; j < count / 2; ++j) {
      __m512i pj[MR];
      for (int r = 0; r < MR; ++r) pj[r] = _mm512_load_si512(p + j * kChunkRows + kLanes * r);
      const uint32_t* v = v_pairs + size_t(j) * head_dim_v + dv0;
#pragma GCC unroll 8
      for (int i = 0; i < kDvGroup; ++i) {
        const __m512i vb = _mm512_set1_epi32(static_cast<int>(v[i]));
        for (int r = 0; r < MR; ++r) acc[i][r] = dot_bf16_pairs(acc[i][r], pj[r], vb);
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < kDvGroup; ++i)
      for (int r = 0; r < MR; ++r)
        _mm512_store_ps(ot + size_t(dv0 + i) * rows_padded + kLanes * r, acc[i][r]);
  }
}

// Probabilities p^T[j][chunk] (fp32) -> bf16 pairs (p[j], p[j+1]) per row, rounded to nearest.
inline void pack_probability_pairs(const float* p, int count, int vecs, uint32_t* pairs) {
  const __m512i half = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
  auto round_bits = [&](__m512 x) {  // a NaN probability (a NaN score) is kept as it is
    const __m512i b = _mm512_castps_si512(x);
    const __mmask16 number = _mm512_cmp_ps_mask(x, x, _CMP_ORD_Q);
    return _mm512_mask_add_epi32(b, number, b, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(b, 16), one)));
  };
  for (int j = 0; j < count; j += 2) {
    for (int r = 0; r < vecs; ++r) {
      const __m512i lo = round_bits(_mm512_load_ps(p + j * kChunkRows + kLanes * r));
      const __m512i hi = round_bits(_mm512_load_ps(p + (j + 1) * kChunkRows + kLanes * r));
      const __m512i w = _mm512_or_si512(_mm512_srli_epi32(lo, 16),
                                        _mm512_and_si512(hi, _mm512_set1_epi32(int(0xffff0000u))));
      _mm512_store_si512(pairs + (j / 2) * kChunkRows + kLanes * r, w);
    }
  }
}
#endif  // MFS_AVX512_BF16_DOT

// ---------------------------------------------------------------- online softmax of one chunk

struct ScoreRules {
  float scale, softcap;
};

// Turns raw products s^T[j][chunk] of keys key0 + j into probabilities (in place): score =
// softcap(scale * q.k) + alibi by attention_semantics.h's rule templates at V = __m512, masked
// outside each row's visible range (visible_keys); then updates the rows' running max and sum
// and leaves in `alpha` the factor their accumulators must be rescaled by.
template <bool kSoftcap, bool kAlibi, bool kMask, bool kBias>
void softmax_chunk(float* s, int count, int key0, int vecs, const ScoreRules& rules,
                   const int* key_begin, const int* key_end, const int* diagonal,
                   const float* slope, const float* bias, float* row_max, float* row_sum,
                   float* alpha) {
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  const __m512 scale = _mm512_set1_ps(rules.scale);
  for (int r = 0; r < vecs; ++r) {
    const int o = kLanes * r;
    const __m512i begin = _mm512_load_si512(key_begin + o);
    const __m512i end = _mm512_load_si512(key_end + o);
    const __m512i diag = _mm512_load_si512(diagonal + o);
    const __m512 sl = _mm512_load_ps(slope + o);
    __m512 mx = neg_inf;
    for (int j = 0; j < count; ++j) {
      float* sj = s + j * kChunkRows + o;
      __m512 x = _mm512_mul_ps(_mm512_load_ps(sj), scale);
      if constexpr (kSoftcap) x = softcapped<Avx512Math>(x, rules.softcap);
      const __m512i key = _mm512_set1_epi32(key0 + j);
      if constexpr (kAlibi) x = alibi_biased(x, sl, abs_distance(diag, key));
      if constexpr (kBias) x = mask_biased(x, _mm512_load_ps(bias + j * kChunkRows + o));
      if constexpr (kMask) {
        const __mmask16 visible = _mm512_cmpge_epi32_mask(key, begin) & _mm512_cmplt_epi32_mask(key, end);
        x = _mm512_mask_mov_ps(neg_inf, visible, x);
      }
      _mm512_store_ps(sj, x);
      mx = _mm512_max_ps(x, mx);  // skips a NaN x (maxps returns its second operand)
    }
    const __m512 old_max = _mm512_load_ps(row_max + o);
    const __m512 new_max = _mm512_max_ps(old_max, mx);
    // softmax_reference(): a row that has seen no visible key yet keeps max -inf: subtract 0
    // instead (all p = 0).
    const __m512 ref = _mm512_mask_mov_ps(new_max, _mm512_cmp_ps_mask(new_max, neg_inf, _CMP_EQ_OQ),
                                          _mm512_setzero_ps());
    const __m512 a = exp_ps(_mm512_sub_ps(old_max, ref));
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < count; ++j) {
      float* sj = s + j * kChunkRows + o;
      const __m512 p = exp_ps(_mm512_sub_ps(_mm512_load_ps(sj), ref));
      _mm512_store_ps(sj, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_store_ps(row_max + o, new_max);
    _mm512_store_ps(row_sum + o, _mm512_fmadd_ps(_mm512_load_ps(row_sum + o), a, sum));
    _mm512_store_ps(alpha + o, a);
  }
}

using SoftmaxFn = void (*)(float*, int, int, int, const ScoreRules&, const int*, const int*,
                           const int*, const float*, const float*, float*, float*, float*);

// `bias`: attn_mask (attention_semantics.h's mask_biased), from the chunk's bias buffer.
SoftmaxFn pick_softmax(bool softcap, bool alibi, bool mask, bool bias) {
  static const SoftmaxFn table[16] = {
      softmax_chunk<false, false, false, false>, softmax_chunk<false, false, true, false>,
      softmax_chunk<false, true, false, false>,  softmax_chunk<false, true, true, false>,
      softmax_chunk<true, false, false, false>,  softmax_chunk<true, false, true, false>,
      softmax_chunk<true, true, false, false>,   softmax_chunk<true, true, true, false>,
      softmax_chunk<false, false, false, true>,  softmax_chunk<false, false, true, true>,
      softmax_chunk<false, true, false, true>,   softmax_chunk<false, true, true, true>,
      softmax_chunk<true, false, false, true>,   softmax_chunk<true, false, true, true>,
      softmax_chunk<true, true, false, true>,    softmax_chunk<true, true, true, true>};
  return table[(bias ? 8 : 0) | (softcap ? 4 : 0) | (alibi ? 2 : 0) | (mask ? 1 : 0)];
}

// ---------------------------------------------------------------- attn_mask of one chunk

// The state (attention_semantics.h's MaskTileState) of the chunk's rows [r0, r1) over keys
// [k0, k1): closed only if every row's every summary tile is, open only if every one is.
inline int chunk_mask_state(const TileJob& job, int r0, int r1, int k0, int k1) {
  int state = -1;
  for (int r = r0; r < r1; ++r) {
    for (int t = k0 / kMaskTileKeys; t * kMaskTileKeys < k1; ++t) {
      const int st = job.mask.tile_state(job.row_mask[r], t);
      state = state < 0 ? st : merge_mask_tile_states(state, st);
      if (state == kMaskTileMixed) return state;
    }
  }
  return state < 0 ? int(kMaskTileOpen) : state;
}

// bias[j][r - r0] for keys key0 + j, j < count, of rows [r0, r0 + kChunkRows): 0 in open
// tiles, -inf in closed ones, the mask's value in mixed ones; 0 past the block's real keys
// (key_limit) and in padding rows (those keys and rows are masked or unused anyway).
inline void fill_chunk_bias(const TileJob& job, int r0, int vecs, int key0, int count,
                            int key_limit, float* bias) {
  float row_bias[kKeyBlock];
  for (int i = 0; i < vecs * kLanes; ++i) {
    const int r = r0 + i;
    std::fill(row_bias, row_bias + count, 0.0f);
    if (r < job.rows) {
      // Tile by tile: open tiles stay 0, closed ones -inf, mixed ones are read (vector loops).
      for (int k0 = key0; k0 < std::min(key0 + count, key_limit);) {
        const int k1 = std::min({(k0 / kMaskTileKeys + 1) * kMaskTileKeys, key0 + count, key_limit});
        const int st = job.mask.tile_state(job.row_mask[r], k0 / kMaskTileKeys);
        if (st == kMaskTileClosed) std::fill(row_bias + (k0 - key0), row_bias + (k1 - key0), -INFINITY);
        if (st == kMaskTileMixed) job.mask.add_biases(job.row_mask[r], k0, k1 - k0, row_bias + (k0 - key0));
        k0 = k1;
      }
      // The next block's values of the row (memory-bound otherwise: a full mask is read once).
      if (key0 + count < job.key_end) {
        job.mask.prefetch(job.row_mask[r], key0 + count, std::min(kKeyBlock, job.key_end - key0 - count));
      }
    }
    for (int j = 0; j < count; ++j) bias[j * kChunkRows + i] = row_bias[j];
  }
}

// ---------------------------------------------------------------- the output

// Normalises and writes row r of the tile from its running max m, sum l and accumulator
// o[d * o_stride], by finish_row() (attention_semantics.h).
template <ElementType T>
void write_row(const TileJob& job, int r, float m, float l, const float* o, int o_stride) {
  float* lse = job.lse_rows ? job.lse_rows[r] : nullptr;
  void* out = job.out_rows[r];
  const RowFinish f = finish_row(m, l, job.row_key_begin[r] < job.row_key_end[r], job.has_sinks,
                                 job.has_sinks ? job.row_sink[r] : 0.0f);
  // A row that saw no key: f.inv = 0 (its accumulator is 0 too) gives zeros.
  for (int d = 0; d < job.head_dim_v; ++d) store_scalar<T>(out, d, o[size_t(d) * o_stride] * f.inv);
  if (lse) *lse = f.lse;
}

// ---------------------------------------------------------------- the tile

// Which keys of the block a chunk of rows has to visit, from the rows' visible ranges.
struct ChunkKeys {
  int min_begin, max_begin, min_end, max_end;
};

template <ElementType T, bool kBf16Dot>
void run_tile(const TileJob& job, void* scratch_base) {
  const int rows = job.rows, rows_padded = round_up(rows, kLanes);
  const int head_dim = job.head_dim, head_dim_v = job.head_dim_v;
  Scratch sc;
  layout_scratch(static_cast<char*>(scratch_base), rows_padded, head_dim, head_dim_v, &sc);

  // Per-row rules, padded to whole vectors (padding rows see nothing and are never written).
  for (int r = 0; r < rows_padded; ++r) {
    const bool real = r < rows;
    sc.key_begin[r] = real ? job.row_key_begin[r] : 0;
    sc.key_end[r] = real ? job.row_key_end[r] : 0;
    sc.diagonal[r] = real ? job.row_diagonal[r] : 0;
    sc.slope[r] = real && job.has_alibi ? job.row_alibi_slope[r] : 0.0f;
    sc.row_max[r] = -INFINITY;
    sc.row_sum[r] = 0.0f;
    sc.dropout_token[r] = real && job.dropout.on ? job.row_dropout[r].token : 0;
    sc.dropout_head[r] = real && job.dropout.on ? job.row_dropout[r].head : 0;
  }
  std::memset(sc.ot, 0, sizeof(float) * size_t(rows_padded) * head_dim_v);
  std::memset(sc.zero_row, 0, sizeof(float) * (head_dim > head_dim_v ? head_dim : head_dim_v));

  // q^T, once per tile.
  if constexpr (kBf16Dot) {
    uint32_t* qt = reinterpret_cast<uint32_t*>(sc.qt);
    for (int r = 0; r < rows_padded; ++r) {
      const char* q = r < rows ? static_cast<const char*>(job.q_rows[r]) : nullptr;
      for (int d = 0; d < head_dim / 2; ++d) qt[size_t(d) * rows_padded + r] = q ? load_u32(q + 4 * d) : 0;
    }
  } else {
    for (int r = 0; r < rows_padded; ++r) {
      const void* q = r < rows ? job.q_rows[r] : nullptr;
      for (int d = 0; d < head_dim; ++d) sc.qt[size_t(d) * rows_padded + r] = q ? load_scalar<T>(q, d) : 0.0f;
    }
  }

  // Which keys each chunk of rows can see at all.
  const int num_chunks = (rows_padded + kChunkRows - 1) / kChunkRows;
  ChunkKeys chunks[(kMaxTileRows + kChunkRows - 1) / kChunkRows];
  for (int c = 0; c < num_chunks; ++c) {
    const int r0 = c * kChunkRows, r1 = std::min(rows, r0 + kChunkRows);
    ChunkKeys ck{INT32_MAX, INT32_MIN, INT32_MAX, INT32_MIN};
    for (int r = r0; r < r1; ++r) {
      ck.min_begin = std::min(ck.min_begin, sc.key_begin[r]);
      ck.max_begin = std::max(ck.max_begin, sc.key_begin[r]);
      ck.min_end = std::min(ck.min_end, sc.key_end[r]);
      ck.max_end = std::max(ck.max_end, sc.key_end[r]);
    }
    chunks[c] = ck;
  }

  const int k_row_bytes = head_dim * int(element_size(T)), v_row_bytes = head_dim_v * int(element_size(T));
  for (int j = 0; j < std::min(kKeyBlock, job.key_end - job.key_begin); ++j) {
    prefetch_row(job.k.row(job.key_begin + j), k_row_bytes);
    prefetch_row(job.v.row(job.key_begin + j), v_row_bytes);
  }
  const ScoreRules rules{job.scale, job.softcap};
  const bool softcap = job.softcap > 0.0f;
  for (int n0 = job.key_begin; n0 < job.key_end; n0 += kKeyBlock) {
    const int n = std::min(kKeyBlock, job.key_end - n0);
    const int n_padded = round_up(n, kKeyGroup);

    // Keys and values are read once per tile, row by row (rows may be far apart, e.g. a
    // [batch, seq, heads, dim] cache): fetch the next block's rows while this one is computed.
    const int next_n = std::min(kKeyBlock, job.key_end - (n0 + kKeyBlock));
    for (int j = 0; j < next_n; ++j) {
      prefetch_row(job.k.row(n0 + kKeyBlock + j), k_row_bytes);
      prefetch_row(job.v.row(n0 + kKeyBlock + j), v_row_bytes);
    }

    // Stage the block's keys and values: row pointers, fp32 copies, or bf16 value pairs.
    for (int j = 0; j < n_padded; ++j) {
      if (j >= n) {
        sc.k_rows[j] = sc.zero_row;
        sc.v_rows[j] = sc.zero_row;
        continue;
      }
      const void* k = job.k.row(n0 + j);
      const void* v = job.v.row(n0 + j);
      if constexpr (T == ElementType::kFloat32 || kBf16Dot) {
        sc.k_rows[j] = k;
      } else {
        float* kc = sc.k_conv + size_t(j) * head_dim;
        for (int d = 0; d < head_dim; d += 8) _mm256_store_ps(kc + d, load8<T>(k, d));
        sc.k_rows[j] = kc;
      }
      if constexpr (T == ElementType::kFloat32 || kBf16Dot) {
        sc.v_rows[j] = v;
      } else {
        float* vc = sc.v_conv + size_t(j) * head_dim_v;
        for (int d = 0; d < head_dim_v; d += 8) _mm256_store_ps(vc + d, load8<T>(v, d));
        sc.v_rows[j] = vc;
      }
    }
#ifdef MFS_AVX512_BF16_DOT
    uint32_t* v_pairs = reinterpret_cast<uint32_t*>(sc.v_conv);
    if constexpr (kBf16Dot) {
      // v_pairs[j/2][dv] = (v[j][dv], v[j+1][dv]): interleave two rows 16 dims at a time.
      const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                              39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
      for (int j = 0; j < n_padded; j += 2) {
        const uint16_t* a = static_cast<const uint16_t*>(sc.v_rows[j]);
        const uint16_t* b = static_cast<const uint16_t*>(sc.v_rows[j + 1]);
        uint32_t* dst = v_pairs + size_t(j / 2) * head_dim_v;
        for (int d = 0; d < head_dim_v; d += 16) {
          const __mmask16 m = d + 16 <= head_dim_v ? 0xffff : 0xff;
          const __m512i va = _mm512_castsi256_si512(_mm256_maskz_loadu_epi16(m, a + d));
          const __m512i vb = _mm512_castsi256_si512(_mm256_maskz_loadu_epi16(m, b + d));
          const __m512i w = _mm512_permutex2var_epi16(va, lo_idx, vb);
          _mm512_mask_storeu_epi32(dst + d, m, w);
        }
      }
    }
#endif

    for (int c = 0; c < num_chunks; ++c) {
      const ChunkKeys& ck = chunks[c];
      const int lo = std::max(n0, ck.min_begin), hi = std::min(n0 + n, ck.max_end);
      if (lo >= hi) continue;  // no row of this chunk sees any key of this block
      const int j_lo = (lo - n0) / kKeyGroup * kKeyGroup;
      const int j_hi = round_up(hi - n0, kKeyGroup);
      const int count = j_hi - j_lo;
      const bool needs_mask = ck.max_begin > n0 + j_lo || ck.min_end < n0 + j_hi;
      const int r0 = c * kChunkRows;
      const int vecs = std::min(kChunkVecs, (rows_padded - r0) / kLanes);
      bool read_bias = false;
      if (job.mask.present()) {  // attn_mask: skip closed chunks, read nothing in open ones
        const int state = chunk_mask_state(job, r0, std::min(rows, r0 + kChunkRows), n0 + j_lo,
                                           std::min(n0 + n, n0 + j_hi));
        if (state == kMaskTileClosed) continue;
        read_bias = state == kMaskTileMixed;
        if (read_bias) fill_chunk_bias(job, r0, vecs, n0 + j_lo, count, n0 + n, sc.bias);
      }

#ifdef MFS_AVX512_BF16_DOT
      if constexpr (kBf16Dot) {
        const uint32_t* qt = reinterpret_cast<const uint32_t*>(sc.qt) + r0;
        if (vecs == 3) qk_bf16<3>(sc.k_rows + j_lo, count, qt, rows_padded, head_dim, sc.s);
        else if (vecs == 2) qk_bf16<2>(sc.k_rows + j_lo, count, qt, rows_padded, head_dim, sc.s);
        else qk_bf16<1>(sc.k_rows + j_lo, count, qt, rows_padded, head_dim, sc.s);
      }
#endif
      if constexpr (!kBf16Dot) {
        const float* qt = sc.qt + r0;
        if (vecs == 3) qk_f32<3>(sc.k_rows + j_lo, count, qt, rows_padded, head_dim, sc.s);
        else if (vecs == 2) qk_f32<2>(sc.k_rows + j_lo, count, qt, rows_padded, head_dim, sc.s);
        else qk_f32<1>(sc.k_rows + j_lo, count, qt, rows_padded, head_dim, sc.s);
      }

      pick_softmax(softcap, job.has_alibi, needs_mask, read_bias)(
          sc.s, count, n0 + j_lo, vecs, rules, sc.key_begin + r0, sc.key_end + r0,
          sc.diagonal + r0, sc.slope + r0, sc.bias, sc.row_max + r0, sc.row_sum + r0,
          sc.alpha + r0);
      // Dropout after the rows' sums: lse and the normaliser are the undropped softmax's.
      if (job.dropout.on) {
        for (int v = 0; v < vecs; ++v) {
          apply_dropout_columns(job.dropout, sc.dropout_token + r0 + kLanes * v,
                                sc.dropout_head + r0 + kLanes * v, n0 + j_lo, count,
                                sc.s + kLanes * v, kChunkRows);
        }
      }

      float* ot = sc.ot + r0;
#ifdef MFS_AVX512_BF16_DOT
      if constexpr (kBf16Dot) {
        pack_probability_pairs(sc.s, count, vecs, sc.p_pairs);
        const uint32_t* vp = v_pairs + size_t(j_lo / 2) * head_dim_v;
        if (vecs == 3) pv_bf16<3>(vp, count, sc.p_pairs, sc.alpha + r0, head_dim_v, ot, rows_padded);
        else if (vecs == 2) pv_bf16<2>(vp, count, sc.p_pairs, sc.alpha + r0, head_dim_v, ot, rows_padded);
        else pv_bf16<1>(vp, count, sc.p_pairs, sc.alpha + r0, head_dim_v, ot, rows_padded);
      }
#endif
      if constexpr (!kBf16Dot) {
        const void* const* vr = sc.v_rows + j_lo;
        if (vecs == 3) pv_f32<3>(vr, count, sc.s, sc.alpha + r0, head_dim_v, ot, rows_padded);
        else if (vecs == 2) pv_f32<2>(vr, count, sc.s, sc.alpha + r0, head_dim_v, ot, rows_padded);
        else pv_f32<1>(vr, count, sc.s, sc.alpha + r0, head_dim_v, ot, rows_padded);
      }
    }
  }

  for (int r = 0; r < rows; ++r) {
    write_row<T>(job, r, sc.row_max[r], sc.row_sum[r], sc.ot + r, rows_padded);
  }
}

// ---------------------------------------------------------------- tiles of few rows (decode)

// With only a few query rows (decode: one token per sequence, times the heads of a GQA group),
// vectors over rows would be mostly padding. Those tiles vectorise over head dims instead: each
// key row is read once for all rows, scores are reduced horizontally, and the softmax runs
// vectorised over keys. Such tiles are bound by streaming keys and values, not by arithmetic.
// Measured on Zen 5: 1-3x faster for 1 row; at 4 rows the row-vectorised kernel is as fast or
// faster (bf16 dot products), hence the limit.
constexpr int kFewRows = 3;

inline __mmask16 tail_mask(int remaining) {
  return remaining >= kLanes ? __mmask16(0xffff) : __mmask16((1u << remaining) - 1);
}

// 16 elements (fewer at the tail, zero-filled) of a row, as fp32.
template <ElementType T>
inline __m512 load16(const void* row, int i, __mmask16 m) {
  if constexpr (T == ElementType::kFloat32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(row) + i);
  const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + i);
  if constexpr (T == ElementType::kFloat16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// s[r][j] = q_r . k_{n0+j} for j < n: R rows and KS keys per step, so R * KS independent
// accumulator chains hide the FMA latency; dims beyond head_dim are zero in q and masked in k.
template <ElementType T, int R>
void few_rows_products_r(const KeyRowLocator& keys, int n0, int n, const float* q, int dp,
                         int head_dim, float* s) {
  constexpr int KS = R == 1 ? 8 : R == 2 ? 6 : 4;
  for (int j0 = 0; j0 < n; j0 += KS) {
    const void* k[KS];
    for (int i = 0; i < KS; ++i) k[i] = keys.row(n0 + std::min(j0 + i, n - 1));
    __m512 acc[KS][R];
#pragma GCC unroll 8
    for (int i = 0; i < KS; ++i)
      for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
    for (int d = 0; d < dp; d += kLanes) {
      const __mmask16 m = tail_mask(head_dim - d);
      __m512 qd[R];
      for (int r = 0; r < R; ++r) qd[r] = _mm512_load_ps(q + r * dp + d);
#pragma GCC unroll 8
      for (int i = 0; i < KS; ++i) {
        const __m512 kd = load16<T>(k[i], d, m);
        for (int r = 0; r < R; ++r) acc[i][r] = _mm512_fmadd_ps(kd, qd[r], acc[i][r]);
      }
    }
    for (int i = 0; i < KS && j0 + i < n; ++i)
      for (int r = 0; r < R; ++r) s[r * kKeyBlock + j0 + i] = _mm512_reduce_add_ps(acc[i][r]);
  }
}

template <ElementType T>
void few_rows_products(int rows, const KeyRowLocator& keys, int n0, int n, const float* q, int dp,
                       int head_dim, float* s) {
  switch (rows) {
    case 1: return few_rows_products_r<T, 1>(keys, n0, n, q, dp, head_dim, s);
    case 2: return few_rows_products_r<T, 2>(keys, n0, n, q, dp, head_dim, s);
    default: return few_rows_products_r<T, 3>(keys, n0, n, q, dp, head_dim, s);
  }
}

template <ElementType T>
void run_few_rows_tile(const TileJob& job, void* scratch_base) {
  const int rows = job.rows, head_dim = job.head_dim, head_dim_v = job.head_dim_v;
  const int dp = round_up(head_dim, kLanes), dvp = round_up(head_dim_v, kLanes);
  Scratch sc;  // q in sc.qt [rows][dp], o in sc.ot [rows][dvp], scores in sc.s [rows][kKeyBlock]
  layout_scratch(static_cast<char*>(scratch_base), kLanes, head_dim, head_dim_v, &sc);
  float row_max[kFewRows], row_sum[kFewRows];
  for (int r = 0; r < rows; ++r) {
    for (int d = 0; d < dp; d += kLanes) {
      _mm512_store_ps(sc.qt + r * dp + d, load16<T>(job.q_rows[r], d, tail_mask(head_dim - d)));
    }
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
  }
  std::memset(sc.ot, 0, sizeof(float) * rows * dvp);

  const int k_row_bytes = head_dim * int(element_size(T)), v_row_bytes = head_dim_v * int(element_size(T));
  const bool softcap = job.softcap > 0.0f;
  const __m512 neg_inf = _mm512_set1_ps(-INFINITY);
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (int n0 = job.key_begin; n0 < job.key_end; n0 += kKeyBlock) {
    const int n = std::min(kKeyBlock, job.key_end - n0);
    for (int j = 0; j < std::min(kKeyBlock, job.key_end - n0 - kKeyBlock); ++j) {
      prefetch_row(job.k.row(n0 + kKeyBlock + j), k_row_bytes);
      prefetch_row(job.v.row(n0 + kKeyBlock + j), v_row_bytes);
    }

    // Raw products q_r . k_j, every key row read once for all rows.
    few_rows_products<T>(rows, job.k, n0, n, sc.qt, dp, head_dim, sc.s);

    // Scores and online softmax per row, 16 keys at a time (same rules as softmax_chunk).
    for (int r = 0; r < rows; ++r) {
      float* s = sc.s + r * kKeyBlock;
      const __m512i begin = _mm512_set1_epi32(job.row_key_begin[r]);
      const __m512i end = _mm512_set1_epi32(job.row_key_end[r]);
      const __m512i diag = _mm512_set1_epi32(job.row_diagonal[r]);
      const __m512 slope = _mm512_set1_ps(job.has_alibi ? job.row_alibi_slope[r] : 0.0f);
      __m512 mx = neg_inf;
      for (int j = 0; j < n; j += kLanes) {
        const __mmask16 in_block = tail_mask(n - j);
        __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(in_block, s + j), _mm512_set1_ps(job.scale));
        if (softcap) x = softcapped<Avx512Math>(x, job.softcap);
        const __m512i key = _mm512_add_epi32(_mm512_set1_epi32(n0 + j), iota);
        if (job.has_alibi) x = alibi_biased(x, slope, abs_distance(diag, key));
        const __mmask16 visible =
            in_block & _mm512_cmpge_epi32_mask(key, begin) & _mm512_cmplt_epi32_mask(key, end);
        x = _mm512_mask_mov_ps(neg_inf, visible, x);
        _mm512_mask_storeu_ps(s + j, in_block, x);
        mx = _mm512_max_ps(x, mx);  // skips a NaN x (maxps returns its second operand)
      }
      const float new_max = std::max(row_max[r], _mm512_reduce_max_ps(mx));
      const float ref = softmax_reference(new_max);
      const float alpha = std::exp(row_max[r] - ref);
      __m512 sum = _mm512_setzero_ps();
      for (int j = 0; j < n; j += kLanes) {
        const __mmask16 in_block = tail_mask(n - j);
        const __m512 p = _mm512_maskz_mov_ps(in_block, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(in_block, s + j), _mm512_set1_ps(ref))));
        _mm512_mask_storeu_ps(s + j, in_block, p);
        sum = _mm512_add_ps(sum, p);
      }
      row_max[r] = new_max;
      row_sum[r] = row_sum[r] * alpha + _mm512_reduce_add_ps(sum);
      if (job.dropout.on) apply_dropout_row(job.dropout, job.row_dropout[r], n0, n, s);
      if (alpha != 1.0f) {
        float* o = sc.ot + r * dvp;
        for (int d = 0; d < dvp; d += kLanes) _mm512_store_ps(o + d, _mm512_mul_ps(_mm512_load_ps(o + d), _mm512_set1_ps(alpha)));
      }
    }

    // o_r += sum_j p_rj v_j, 32 value dims at a time for all rows.
    for (int d = 0; d < dvp; d += 2 * kLanes) {
      const bool two = d + kLanes < dvp;
      const __mmask16 m0 = tail_mask(head_dim_v - d), m1 = two ? tail_mask(head_dim_v - d - kLanes) : 0;
      __m512 acc[kFewRows][2] = {};
#pragma GCC unroll 8
      for (int r = 0; r < kFewRows; ++r) {
        if (r >= rows) continue;
        acc[r][0] = _mm512_load_ps(sc.ot + r * dvp + d);
        acc[r][1] = two ? _mm512_load_ps(sc.ot + r * dvp + d + kLanes) : _mm512_setzero_ps();
      }
      for (int j = 0; j < n; ++j) {
        const void* v = job.v.row(n0 + j);
        const __m512 v0 = load16<T>(v, d, m0);
        const __m512 v1 = two ? load16<T>(v, d + kLanes, m1) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int r = 0; r < kFewRows; ++r) {
          if (r >= rows) continue;
          const __m512 p = _mm512_set1_ps(sc.s[r * kKeyBlock + j]);
          acc[r][0] = _mm512_fmadd_ps(p, v0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(p, v1, acc[r][1]);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < kFewRows; ++r) {
        if (r >= rows) continue;
        _mm512_store_ps(sc.ot + r * dvp + d, acc[r][0]);
        if (two) _mm512_store_ps(sc.ot + r * dvp + d + kLanes, acc[r][1]);
      }
    }
  }

  for (int r = 0; r < rows; ++r) write_row<T>(job, r, row_max[r], row_sum[r], sc.ot + r * dvp, 1);
}

template <ElementType T, bool kBf16Dot>
void run_any_tile(const TileJob& job, void* scratch) {
  // The few-rows path reads no attn_mask: masked tiles of any size take the row-vector one.
  if (job.rows <= kFewRows && !job.mask.present()) return run_few_rows_tile<T>(job, scratch);
  run_tile<T, kBf16Dot>(job, scratch);
}

}  // namespace
