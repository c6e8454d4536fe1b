// Where one sequence's queries and keys are, from the offsets the caller gives: written once,
// read by C++ (the cpu backend) and MSL (the Metal kernels) alike.
//
// The offsets come in as plain ints, already loaded by the caller from cu_seqlens_q,
// cu_seqlens_k, seqused_q or seqused_k (the Metal kernels load them from device memory, the cpu backend from
// host tensors), so the function needs no pointers and no address spaces. Every value is clamped
// to what exists in the tensors: whatever the offsets hold, reading query rows
// [q_begin, q_begin + seqlen_q) and logical keys [0, seqlen_k) never leaves the buffers. On the
// cpu the offsets are checked first (attention_inputs.cpp), so there the clamps change nothing.
#pragma once

#include "attention_params.h"

struct SequenceBounds {
  int q_begin;   // first row of q/out (varlen: into the packed rows; fixed: 0)
  int seqlen_q;  // queries of the sequence
  int k_begin;   // first row of k/v (contiguous varlen k only; paged and fixed: 0)
  int seqlen_k;  // keys of the sequence
};

inline int clamp_to(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// The offsets of sequence b as read by the caller; entries the flags do not use may hold anything
// (0 is customary).
struct SequenceOffsets {
  int cu_q_begin, cu_q_end;  // cu_seqlens_q[b], cu_seqlens_q[b + 1]   (kVarlenQ)
  int cu_k_begin, cu_k_end;  // cu_seqlens_k[b], cu_seqlens_k[b + 1]   (kVarlenK)
  int used_k;                // seqused_k[b]                           (kSequsedK)
  int used_q;                // seqused_q[b]                           (kSequsedQ)
};

// flash-attn 3's seqused: of a slot of `slot` rows, only the first `used` count (a negative
// `used` counts none).
inline int used_part(int used, int slot) { return clamp_to(used, 0, slot); }

// `p` is passed by value: one signature serves a `constant AttentionParams&` (MSL) and a host
// reference alike.
inline SequenceBounds sequence_bounds(AttentionParams p, SequenceOffsets o) {
  SequenceBounds s;
  if (p.flags & kVarlenQ) {
    s.q_begin = clamp_to(o.cu_q_begin, 0, p.q_rows);
    s.seqlen_q = clamp_to(o.cu_q_end, s.q_begin, p.q_rows) - s.q_begin;
  } else {
    s.q_begin = 0;
    s.seqlen_q = clamp_to(p.seqlen_q, 0, p.q_rows);
  }
  if (p.flags & kSequsedQ) s.seqlen_q = used_part(o.used_q, s.seqlen_q);
  s.k_begin = 0;
  if (p.flags & kPagedKV) {
    // Logical keys live in the sequence's pages: at most max_pages_per_seq * page_size of them.
    // cu_seqlens_k only gives lengths here; their difference is taken in 64 bits (no overflow).
    const int capacity = p.max_pages_per_seq * p.page_size;
    if (p.flags & kVarlenK) {
      const mfs_i64 len = (mfs_i64)o.cu_k_end - (mfs_i64)o.cu_k_begin;
      s.seqlen_k = len < 0 ? 0 : (len > (mfs_i64)capacity ? capacity : (int)len);
      if (p.flags & kSequsedK) s.seqlen_k = used_part(o.used_k, s.seqlen_k);
    } else {
      s.seqlen_k = clamp_to(o.used_k, 0, capacity);
    }
  } else if (p.flags & kVarlenK) {
    s.k_begin = clamp_to(o.cu_k_begin, 0, p.k_rows);
    s.seqlen_k = clamp_to(o.cu_k_end, s.k_begin, p.k_rows) - s.k_begin;
    // The slot is [cu_seqlens_k[b], cu_seqlens_k[b + 1]); its end = min(start + seqused, next).
    if (p.flags & kSequsedK) s.seqlen_k = used_part(o.used_k, s.seqlen_k);
  } else if (p.flags & kSequsedK) {
    s.seqlen_k = clamp_to(o.used_k, 0, p.k_rows);
  } else {
    s.seqlen_k = clamp_to(p.seqlen_k, 0, p.k_rows);
  }
  return s;
}
