// The dropout mask's random stream: written once, read by C++ (cpu backend) and MSL (Metal
// kernels) alike, so both builds drop the same entries for the same seed and offset.
//
// A counter-based generator (Philox4x32, Salmon et al., SC'11) keyed by the call's 64-bit seed:
// the mask of entry (query token, query head, key position) is a pure function of those indices,
// so the backward regenerates it (nothing N^2 is stored) and the result does not depend on the
// order in which threads or tiles visit the entries. 7 rounds: the variant that passes the
// TestU01 BigCrush battery in the paper, at 70% of the cost of 10 (the cpu build draws one 4-word
// block per 4 keys of every row, forward and backward).
//
// Counter of the block holding key position `key`: {key / 4, query_token, head, offset}; word
// key % 4 of the block is the entry's draw. query_token is the packed row index of the query
// (dropout_query_token), key is the position within its sequence (0 .. seqlen_k - 1), head the
// query head. An entry is kept when its draw is >= threshold (dropout_threshold(p)); kept
// probabilities are scaled by 1 / (1 - p).
#pragma once

#ifdef __METAL_VERSION__
#include <metal_stdlib>
#define MFS_DROPOUT_MULHI(a, b) metal::mulhi(a, b)
#define MFS_DROPOUT_RULE inline
typedef uint mfs_u32;
#else
#include <cstdint>
#define MFS_DROPOUT_MULHI(a, b) static_cast<mfs_u32>((static_cast<uint64_t>(a) * (b)) >> 32)
#define MFS_DROPOUT_RULE __attribute__((always_inline)) inline
typedef uint32_t mfs_u32;
#endif

// One 128-bit block of the stream.
struct DropoutBlock {
  mfs_u32 word[4];
};

// Philox4x32-7 of `counter` under `key`. Constants from the paper (multipliers M0, M1; Weyl
// increments W0, W1 for the key schedule).
MFS_DROPOUT_RULE DropoutBlock dropout_block(mfs_u32 seed_lo, mfs_u32 seed_hi, mfs_u32 key_block,
                                            mfs_u32 query_token, mfs_u32 head, mfs_u32 offset) {
  mfs_u32 c0 = key_block, c1 = query_token, c2 = head, c3 = offset;
  mfs_u32 k0 = seed_lo, k1 = seed_hi;
  for (int round = 0; round < 7; ++round) {
    const mfs_u32 m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
    mfs_u32 hi0 = MFS_DROPOUT_MULHI(m0, c0), lo0 = m0 * c0;
    mfs_u32 hi1 = MFS_DROPOUT_MULHI(m1, c2), lo1 = m1 * c2;
    mfs_u32 n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  DropoutBlock block;
  block.word[0] = c0;
  block.word[1] = c1;
  block.word[2] = c2;
  block.word[3] = c3;
  return block;
}

// Whether a draw keeps its entry. threshold = round(p * 2^32) (dropout_threshold on the host).
MFS_DROPOUT_RULE bool dropout_keeps(mfs_u32 draw, mfs_u32 threshold) { return draw >= threshold; }

// The query token of row `row` of sequence b (the counter's second word): its packed row index
// in a call with cu_seqlens_q (q_begin = cu_seqlens_q[b], the slot's first row, also with
// seqused_q), and b * seqlen_q + row in a fixed-length call (the row it would have packed), so a
// fixed-length batch and the same batch packed draw the same mask. Scalars only: the cpu passes
// its flags, the Metal kernels their function constant. Wraps modulo 2^32 (the counter word).
MFS_DROPOUT_RULE mfs_u32 dropout_query_token(bool varlen_q, int q_begin, int b, int seqlen_q,
                                             int row) {
  return varlen_q ? (mfs_u32)q_begin + (mfs_u32)row
                  : (mfs_u32)b * (mfs_u32)seqlen_q + (mfs_u32)row;
}

// One entry's draw, for code that visits entries one by one (references, tests, the Metal
// backward's scalar paths). Tiled code calls dropout_block once per 4 keys instead.
MFS_DROPOUT_RULE mfs_u32 dropout_draw(mfs_u32 seed_lo, mfs_u32 seed_hi, mfs_u32 offset,
                                      mfs_u32 query_token, mfs_u32 head, mfs_u32 key) {
  DropoutBlock block = dropout_block(seed_lo, seed_hi, key >> 2, query_token, head, offset);
  return block.word[key & 3u];
}

#ifndef __METAL_VERSION__
// The keep threshold for dropout probability p in [0, 1): entries whose draw is below it drop.
inline mfs_u32 dropout_threshold(double p) {
  double scaled = p * 4294967296.0;
  return scaled >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<mfs_u32>(scaled + 0.5);
}
#endif

#undef MFS_DROPOUT_MULHI
#undef MFS_DROPOUT_RULE
