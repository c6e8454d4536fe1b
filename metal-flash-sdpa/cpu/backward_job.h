// The units of work of the cpu backward pass, as the backward tile kernels see them.
//
// The driver (cpu_backward.cpp) resolves everything sequence-specific (varlen offsets, the visible
// keys of each row from attention_semantics.h, ALiBi slopes, the forward's lse and
// D = rowsum(dO * O)) into these plain descriptions. Like tile_job.h, this header is included by
// the ISA-specific files before their target pragma.
#pragma once

#include "tile_job.h"

// One query row of one head, as both passes see it.
struct BackwardRow {
  const void* q;     // [head_dim], the input dtype
  const void* dout;  // [head_dim_v]
  float* dq_acc;     // [head_dim] fp32: the row's dq, accumulated over the key tiles in order
  float lse;         // the forward's lse (including the sink); -inf: the row saw no key
  float d;           // rowsum(dO * O)
  int key_begin, key_end;  // the row's visible keys (visible_keys)
  int diagonal;            // the row's key position (ALiBi distance origin)
  float slope;             // ALiBi slope of the row's head (0 without ALiBi)
  MaskRow mask;            // the row's attn_mask (BackwardJob::mask)
  float* dmask;            // fp32 [seqlen_k]: d loss / d mask of the row's keys, or null
  DropoutRow dropout;      // the row's counter words (BackwardJob::dropout)
};

struct BackwardJob {
  ElementType dtype;
  int head_dim, head_dim_v;
  float scale, softcap;  // softcap 0 = off
  bool has_alibi;
  KeyRowLocator k, v;    // the sequence's keys and values of one kv head
  MaskReader mask;       // attn_mask (mask.present()); tiles start at multiples of kBackwardKeyTile
  DropoutRule dropout;   // the forward's dropout, regenerated (dropout_tiles.h)
  int key_begin, key_end;  // the tile (<= kBackwardKeyTile keys)
  const BackwardRow* rows;  // every row (of every head of the group) that sees the tile
  int row_count;
  // Where dk and dv of key key_begin + j go, j < key_end - key_begin.
  void* const* dk_rows;
  void* const* dv_rows;
};

// Keys per tile; query rows per block of a tile's rows. A key tile is two tiles of the mask
// summary: every key tile streams all of its rows' q, dO and dq accumulators through the cache,
// so wider tiles stream them half as often (with 64 keys, fp32 head dim 128 with a full mask
// spent ~7 % of the backward copying rows in from L3). Causal calls do a little more dead work
// on the diagonal (bf16 head dim 128 causal: ~4 % slower backward).
constexpr int kBackwardKeyTile = 128;
constexpr int kBackwardRowTile = 64;
static_assert(kBackwardKeyTile % kMaskTileKeys == 0, "a key tile covers whole tiles of the mask summary");

// The backward kernel of one instruction set.
struct BackwardKernel {
  size_t (*scratch_bytes)(int head_dim, int head_dim_v);
  // dk, dv of the job's keys: sum over the job's rows (every head of a GQA group), written once;
  // adds each row's share of dq to its accumulator.
  void (*key_tile)(const BackwardJob& job, void* scratch);
};

BackwardKernel portable_backward_kernel();
#ifdef MFS_HAVE_X86_KERNELS
BackwardKernel avx2_backward_kernel();
BackwardKernel avx512_backward_kernel();
// AVX-512 + AVX512_BF16, for bf16 inputs: products on bf16 pairs (vdpbf16ps), fp32 sums.
BackwardKernel avx512_bf16_backward_kernel();
#endif
