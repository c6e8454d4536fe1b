// The dropout mask of 16 query rows at once, for the AVX-512 forward (avx512_tile_kernel.h),
// whose scores s^T run along keys x rows with 16 rows per vector. dropout_stream.h's
// Philox4x32-7 evaluated on 16 counters {key / 4, token[i], head[i], offset} (one per lane) in
// AVX-512 registers: each 32 x 32 -> 64-bit product as vpmuludq on the even and on the odd lanes.
// The compiler's own vectorisation of dropout_block widens every lane to 64 bits (vpmovzxdq,
// vpmullq, repacking): three times the instructions, which cost the bf16 forward at head dim 64
// half its time again. The rounds below are dropout_block's, lane by lane;
// tests/test_dropout.py reads every kernel's mask back against an independent Philox.
// Included after the AVX-512 target pragma only (internal linkage).
#pragma once

#include <immintrin.h>

#include "dropout_rule.h"

namespace {

// (hi, lo) 32-bit halves of c * m per lane.
inline void dropout_mulhilo(__m512i c, __m512i m, __m512i* hi, __m512i* lo) {
  const __m512i even = _mm512_mul_epu32(c, m);                         // lanes 0, 2, ...
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);  // lanes 1, 3, ...
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// Words 0..3 of the 16 blocks {key_block, token[i], head[i], offset} under the call's seed.
inline void dropout_blocks_avx512(const DropoutRule& d, uint32_t key_block, __m512i token,
                                  __m512i head, __m512i word[4]) {
  const __m512i m0 = _mm512_set1_epi32(int(0xD2511F53u)), m1 = _mm512_set1_epi32(int(0xCD9E8D57u));
  __m512i c0 = _mm512_set1_epi32(int(key_block)), c1 = token, c2 = head;
  __m512i c3 = _mm512_set1_epi32(int(d.offset));
  uint32_t k0 = d.seed_lo, k1 = d.seed_hi;
  for (int round = 0; round < 7; ++round) {
    __m512i hi0, lo0, hi1, lo1;
    dropout_mulhilo(c0, m0, &hi0, &lo0);
    dropout_mulhilo(c2, m1, &hi1, &lo1);
    // 0x96: a ^ b ^ c
    c0 = _mm512_ternarylogic_epi32(hi1, c1, _mm512_set1_epi32(int(k0)), 0x96);
    c2 = _mm512_ternarylogic_epi32(hi0, c3, _mm512_set1_epi32(int(k1)), 0x96);
    c1 = lo1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  word[0] = c0;
  word[1] = c1;
  word[2] = c2;
  word[3] = c3;
}

// s[j * stride + i] *= the factor of (row i, key key0 + j) (1 / (1 - p) kept, 0 dropped) for
// the 16 rows i whose counter words are token[i], head[i], and keys j < count.
inline void apply_dropout_columns(const DropoutRule& d, const uint32_t* token,
                                  const uint32_t* head, int key0, int count, float* s,
                                  int stride) {
  const __m512i tokens = _mm512_loadu_si512(token), heads = _mm512_loadu_si512(head);
  const __m512i threshold = _mm512_set1_epi32(int(d.threshold));
  const __m512 scale = _mm512_set1_ps(d.scale);
  __m512i word[4];
  for (int block = key0 >> 2; 4 * block < key0 + count; ++block) {
    dropout_blocks_avx512(d, uint32_t(block), tokens, heads, word);
    for (int w = 0; w < 4; ++w) {
      const int j = 4 * block + w - key0;
      if (j < 0 || j >= count) continue;
      float* sj = s + size_t(j) * stride;
      const __mmask16 kept = _mm512_cmpge_epu32_mask(word[w], threshold);  // dropout_keeps
      // times 0, not masked to 0: a NaN probability stays NaN, as in dropout_tiles.h
      _mm512_storeu_ps(sj, _mm512_mul_ps(_mm512_loadu_ps(sj), _mm512_maskz_mov_ps(kept, scale)));
    }
  }
}

}  // namespace
