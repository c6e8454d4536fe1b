// Tile building blocks of the Metal attention kernels (MSL only): staging device rows into
// threadgroup tiles, 8x8 fragments loaded from those tiles, and the row reductions of a
// fragment. The forward kernels are built on them; the backward passes (S, P, dP = dO.V^T, dS,
// and the transposed products dV += P^T.dO, dK += dS^T.Q) use the same pieces with other
// operands: nothing here knows about attention's rules.
#pragma once

#include "attention_kernel_common.h"

// ---- fragments ------------------------------------------------------------------------------
// Apple's simdgroup_matrix<T, 8, 8> lane layout (MSL spec 6.7, "SIMD-group Matrix Functions";
// the layout MLX's steel mma.h relies on): lane holds (row, col) and (row, col + 1).
inline int frag_row(uint lane) { return (int)(((lane / 4) & 4) + ((lane / 2) % 4)); }
inline int frag_col(uint lane) { return (int)(((lane / 4) & 2) * 2 + (lane % 2) * 2); }

// The fragment whose (r, c) is tile[(row0 + r) * ld + col0 + c]: a lane's two elements are
// adjacent in memory (one 2-element read). S = Q.K^T reads K^T this way from a K tile stored
// transposed; O += P.V reads V this way from a row-major V tile.
template <typename T>
inline simdgroup_float8x8 frag_load(const threadgroup T* tile, int ld, int row0, int col0,
                                    int fr, int fc) {
  simdgroup_float8x8 f;
  const threadgroup T* src = tile + (row0 + fr) * ld + col0 + fc;
  f.thread_elements()[0] = float(src[0]);
  f.thread_elements()[1] = float(src[1]);
  return f;
}

// The transposed fragment: (r, c) is tile[(col0 + c) * ld + row0 + r] (S = Q.K^T reads K^T from
// a row-major K tile). A lane's two elements are in two tile rows: two 1-element reads, each
// conflict-free when ld's 4-byte words are 4 mod 32 (the 16-byte row pad; 2-way at most for
// the other padded widths).
template <typename T>
inline simdgroup_float8x8 frag_load_transposed(const threadgroup T* tile, int ld, int row0,
                                               int col0, int fr, int fc) {
  simdgroup_float8x8 f;
  const threadgroup T* src = tile + (col0 + fc) * ld + row0 + fr;
  f.thread_elements()[0] = float(src[0]);
  f.thread_elements()[1] = float(src[ld]);
  return f;
}

// A fragment kept in registers in its input dtype (half/bfloat: one 32-bit register per lane
// instead of two), widened to fp32 for the MMA, which accumulates in fp32.
template <typename T>
struct FragStore {
  vec<T, 2> e;
};
template <typename T>
inline FragStore<T> frag_store(float e0, float e1) {
  FragStore<T> s;
  s.e = vec<T, 2>(T(e0), T(e1));
  return s;
}
template <typename T>
inline simdgroup_float8x8 frag_widen(const FragStore<T> s) {
  simdgroup_float8x8 f;
  f.thread_elements()[0] = float(s.e.x);
  f.thread_elements()[1] = float(s.e.y);
  return f;
}

// One 32-bit word of a 16-byte word, by a per-lane index (selects, no indexed register array).
inline uint word_at(const vec<uint, 4> v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// A SIMD-group's fragments of 8 rows x N 8-wide chunks (chunks chunk0 + [0, N) of the lane's row
// `row`), kept in the input dtype, read from device memory by 16-byte loads (the row 16-byte
// aligned at every chunk). In half/bfloat a lane's two elements of a chunk are word w = fc / 2
// (lane bits 3 and 0) of the chunk's 16-byte row piece, and a row's 4 lanes are lane ^ {0, 1, 8,
// 9}: in each group of 4 chunks, the lane with word index w loads the whole piece of chunk w of
// its row, then the 4 lanes swap words as a 4 x 4 transpose, 3 xor shuffles (round x: a lane
// sends word w ^ x, which its partner lane ^ (bits of x) wants, and receives its own word w of
// chunk w ^ x). Chunks from `live` on and rows with !row_live are zeros (never loaded). float:
// a lane's two elements are one 8-byte load per chunk.
template <typename T, int N>
inline void frag_rows_by_words(thread FragStore<T> (&f)[N], const device T* row, int chunk0,
                               int live, bool row_live, uint lane) {
  const int w = (int)(((lane >> 3) & 1u) * 2u + (lane & 1u));
#pragma unroll
  for (int g = 0; g < N; g += 4) {
    vec<uint, 4> piece = vec<uint, 4>(0u, 0u, 0u, 0u);
    if (row_live && g + w < N && chunk0 + g + w < live) {
      piece = *((const device vec<uint, 4>*)(row + (chunk0 + g + w) * 8));
    }
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const uint send = word_at(piece, w ^ x);
      const uint got = x == 0 ? send : simd_shuffle_xor(send, (ushort)((x & 1) | ((x & 2) << 2)));
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (g + j < N && (w ^ x) == j) f[g + j].e = as_type<vec<T, 2>>(got);
      }
    }
  }
}
template <int N>
inline void frag_rows_by_words(thread FragStore<float> (&f)[N], const device float* row,
                               int chunk0, int live, bool row_live, uint lane) {
  const int fc = frag_col(lane);
#pragma unroll
  for (int c = 0; c < N; ++c) {
    f[c].e = float2(0.0f);
    if (row_live && chunk0 + c < live) f[c].e = *((const device float2*)(row + (chunk0 + c) * 8 + fc));
  }
}

// ---- row reductions of a fragment row --------------------------------------------------------
// A row's 8 columns sit on the lanes that differ in bits 0 and 3 of the lane index.
inline float frag_row_max(float x) {
  x = max(x, simd_shuffle_xor(x, 1));
  return max(x, simd_shuffle_xor(x, 8));
}
inline float frag_row_sum(float x) {
  x += simd_shuffle_xor(x, 1);
  return x + simd_shuffle_xor(x, 8);
}

// ---- staging ---------------------------------------------------------------------------------
// 8 contiguous elements of one device row. With mfs_vector_kv (rows 4-element aligned, as the
// plan checked) they are read as two 4-element vectors: 8-byte loads for half/bfloat, 16-byte for
// float (MSL spec 2.2: vector types are aligned to their size; device pointers to them are legal
// casts of an aligned scalar pointer).
template <typename T>
struct Chunk8 {
  vec<T, 4> lo, hi;
};
template <typename T>
inline Chunk8<T> load_chunk8(const device T* src) {
  Chunk8<T> c;
  if (mfs_vector_kv) {
    c.lo = *((const device vec<T, 4>*)src);
    c.hi = *((const device vec<T, 4>*)(src + 4));
  } else {
    c.lo = vec<T, 4>(src[0], src[1], src[2], src[3]);
    c.hi = vec<T, 4>(src[4], src[5], src[6], src[7]);
  }
  return c;
}
// Stores a chunk as 8 elements of a tile row (dst[e]) or of a tile column (dst[e * ld]: the
// transposed layout, K^T for S = Q.K^T).
template <typename T>
inline void store_chunk8(threadgroup T* dst, int step, const Chunk8<T> c) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    dst[e * step] = c.lo[e];
    dst[(e + 4) * step] = c.hi[e];
  }
}
template <typename T>
inline void zero_chunk8(threadgroup T* dst, int step) {
#pragma unroll
  for (int e = 0; e < 8; ++e) dst[e * step] = T(0.0f);
}

// The prefill's staging copies bytes, not values: 8 contiguous elements of a row as 32-bit
// words, one 16-byte vector for half/bfloat, two for float. With mfs_vector_kv (the plan found
// every k/v row 16-byte aligned) each is one 16-byte device load, else the elements are loaded one
// by one; either way they go into a row-major tile (16-byte aligned rows) as 16-byte stores.
template <typename T>
struct Words8 {
  vec<uint, 4> w[sizeof(T) / 2];
};
inline Words8<half> words8(const Chunk8<half> c) {
  Words8<half> r;
  const vec<uint, 2> lo = as_type<vec<uint, 2>>(c.lo), hi = as_type<vec<uint, 2>>(c.hi);
  r.w[0] = vec<uint, 4>(lo.x, lo.y, hi.x, hi.y);
  return r;
}
inline Words8<bfloat> words8(const Chunk8<bfloat> c) {
  Words8<bfloat> r;
  const vec<uint, 2> lo = as_type<vec<uint, 2>>(c.lo), hi = as_type<vec<uint, 2>>(c.hi);
  r.w[0] = vec<uint, 4>(lo.x, lo.y, hi.x, hi.y);
  return r;
}
inline Words8<float> words8(const Chunk8<float> c) {
  Words8<float> r;
  r.w[0] = as_type<vec<uint, 4>>(c.lo);
  r.w[1] = as_type<vec<uint, 4>>(c.hi);
  return r;
}
template <typename T>
inline Words8<T> load_words8(const device T* src) {
  if (!mfs_vector_kv) return words8(load_chunk8(src));
  Words8<T> r;
#pragma unroll
  for (int i = 0; i < (int)sizeof(T) / 2; ++i) r.w[i] = ((const device vec<uint, 4>*)src)[i];
  return r;
}
template <typename T>
inline void store_words8(threadgroup T* dst, const Words8<T> c) {
#pragma unroll
  for (int i = 0; i < (int)sizeof(T) / 2; ++i) ((threadgroup vec<uint, 4>*)dst)[i] = c.w[i];
}
template <typename T>
inline void zero_words8(threadgroup T* dst) {
#pragma unroll
  for (int i = 0; i < (int)sizeof(T) / 2; ++i) ((threadgroup vec<uint, 4>*)dst)[i] = vec<uint, 4>(0u, 0u, 0u, 0u);
}

// One thread's share of staging a tile of `rows` rows x `chunks` 8-element chunks: slot n is
// (row, chunk) = divmod(tid + n * nthreads, chunks), fixed for the whole key loop. Computed once
// per kernel (the only division), so the per-tile loop is pointer arithmetic.
struct StageSlot {
  int row;    // row of the tile (-1: no slot)
  int chunk;  // 8-element chunk of the row
};
inline StageSlot stage_slot(int tid, int n, int nthreads, int rows, int chunks) {
  StageSlot s;
  const int i = tid + n * nthreads;
  s.row = (chunks > 0 && i < rows * chunks) ? i / chunks : -1;
  s.chunk = s.row >= 0 ? i - s.row * chunks : 0;
  return s;
}

// ---- device row vectors (decode: a lane's contiguous elements of one K or V row) -------------
// N (a multiple of 4) contiguous elements. With mfs_vector_kv (the plan found every k/v row
// 16-byte aligned: storage offset and strides multiples of 16 bytes, metal_plan_tensors.h) and
// src's offset in its row a multiple of A elements: half/bfloat read 8 elements per 16-byte load
// wherever A and N are multiples of 8 (two 4-element vectors reinterpreted from one 16-byte word
// vector, MSL spec 2.19 as_type), else 4-element vectors (8-byte loads for half/bfloat, 16-byte
// for float); without it element by element. `live`: how many exist from src on (<= 0: none);
// parts past it are zeros, never loaded (head dims are multiples of 8, so with A a multiple of 8
// a lane's 8-element share is whole or absent).
template <typename T, int N>
struct RowVec {
  vec<T, 4> part[N / 4];
};
// Two 32-bit words as four 16-bit elements (the half of a 16-byte load); float never takes this
// path (its branch is compiled, not taken: the overload keeps as_type to same-size types).
inline vec<half, 4> words_as4(const vec<uint, 2> w, half) { return as_type<vec<half, 4>>(w); }
inline vec<bfloat, 4> words_as4(const vec<uint, 2> w, bfloat) { return as_type<vec<bfloat, 4>>(w); }
inline vec<float, 4> words_as4(const vec<uint, 2> w, float) { return vec<float, 4>(0.0f); }
template <typename T, int N, int A = 4>
inline RowVec<T, N> load_row_vec(const device T* src, int live) {
  static_assert(N % 4 == 0 && A % 4 == 0, "4-element parts at 4-element aligned offsets");
  constexpr bool WIDE = sizeof(T) == 2 && N % 8 == 0 && A % 8 == 0;
  RowVec<T, N> r;
  if (WIDE && mfs_vector_kv) {
#pragma unroll
    for (int i = 0; i < N / 8; ++i) {
      if (8 * i >= live) {
        r.part[2 * i] = vec<T, 4>(T(0.0f));
        r.part[2 * i + 1] = vec<T, 4>(T(0.0f));
      } else {
        const vec<uint, 4> w = *((const device vec<uint, 4>*)(src + 8 * i));
        const vec<uint, 2> lo = vec<uint, 2>(w.x, w.y), hi = vec<uint, 2>(w.z, w.w);
        r.part[2 * i] = words_as4(lo, T(0.0f));
        r.part[2 * i + 1] = words_as4(hi, T(0.0f));
      }
    }
    return r;
  }
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    if (4 * i >= live) {
      r.part[i] = vec<T, 4>(T(0.0f));
    } else if (mfs_vector_kv) {
      r.part[i] = *((const device vec<T, 4>*)(src + 4 * i));
    } else {
      r.part[i] = vec<T, 4>(src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]);
    }
  }
  return r;
}
template <typename T, int N>
inline float row_vec_at(const RowVec<T, N> r, int e) {
  return float(r.part[e / 4][e % 4]);
}

// A row vector widened to fp32; with `shared`, the one lane `src` loaded (decode's cohorts: lane
// groups holding different pairs of the same key read it once, MSL spec 6.9.2 simd_shuffle).
// `shared` must be uniform across the SIMD-group.
template <typename T, int N>
inline RowVec<float, N> shared_row_vec(const RowVec<T, N> r, ushort src, bool shared) {
  RowVec<float, N> f;
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    f.part[i] = float4(r.part[i]);
    if (shared) f.part[i] = simd_shuffle(f.part[i], src);
  }
  return f;
}

// Sum of x over aligned groups of `lanes` lanes (a power of two <= 32).
inline float group_sum(float x, int lanes) {
  for (int m = lanes / 2; m >= 1; m /= 2) x += simd_shuffle_xor(x, (ushort)m);
  return x;
}
