// Prefill: one threadgroup owns BQ = 32 query rows of one (sequence, query head), in 4 row groups
// of 8 rows (causal: a sequence's heaviest query tiles first, mfs_prefill_query_tile). K and V
// stream through threadgroup memory in tiles of BK keys; S = Q.K^T and O += P.V are 8x8
// simdgroup_matrix MMAs accumulating in fp32; the softmax is online, in log2 units.
// Double-buffered (mfs_prefill_double_buffered: 16-bit tiles 32-128, float32 tile 32), one
// barrier per K/V tile, none other (paged K/V too: the first tile's staging looks its pages up):
//   barrier | stage the next tile's K and V into the other pair | S = Q.K^T | softmax, O += P.V.
// Otherwise (four tiles do not fit 32 KiB, or the head dim is split), two barriers per tile:
//   stage K (row-major like V; S = Q.K^T reads K^T as transposed fragments, frag_load_transposed)
//   | S = Q.K^T, then stage V | softmax, O += P.V.
// V's loads there complete before the second barrier: they overlap other SIMD-groups' S, not
// this tile's softmax. Where the K and V tiles share one buffer (float32 at tile 512,
// metal_kernel_config.h), V waits for every S and the next K for every P.V: four barriers.
// Key tiles outside the union of the tile's rows' visible ranges (causal, window) are never
// loaded; a tile every row of a SIMD-group sees whole (interior, decided before S) takes a path
// with no per-element mask or bound and, unless attn_mask closes a chunk of it, MMAs with no
// key-range test; only the diagonal, window-edge and sequence-end tiles are masked. With
// function constant 16 (head dims equal to the tile) no MMA, load or store tests the head dim.
//
// Registers (metal_kernel_config.h, mfs_prefill_registers): Q is kept in its input dtype (half/
// bfloat: one register per fragment; read by 16-byte loads, frag_rows_by_words), O in fp32; from head-dim tile 192 on, each row group is two
// (four at tile 512) SIMD-groups that split the head dim (Q, O and the Q.K^T contraction),
// summing their partial S through threadgroup memory, every one in the same order.
//
// Head dims: instantiated for the tiles of metal_kernel_config.h; a call with a smaller head dim
// runs on the next tile up and skips the 8-wide chunks past its head_dim / head_dim_v.
#include "attention_mask_tiles.h"
#include "attention_tiles.h"
#include "attention_dropout.h"

// Stages rows [0, kn) of a key tile, chunks [0, chunks) of each: thread tid's slots are
// stage_slot(tid, n < SLOTS) (divisions the compiler keeps out of the key loop; nothing else of
// the staging is held across it). Element e of chunk c of row r goes to
// tile[r * LD + 8 c + e], copied as 16-byte words (load_words8 / store_words8: one 16-byte load and
// store per chunk for half/bfloat with mfs_vector_kv, two for float). Rows past kn are
// zeroed when zero_tail (V: P is 0 there, and 0 x NaN would not be). Source rows: `tile_src` (the
// tile's first row, head included) by row_stride (contiguous K/V), or `head_src` + the (page,
// row in page) of `pages` (paged).
template <typename T, int BK, int NT, int SLOTS, int LD>
inline void stage_rows(threadgroup T* tile, const device T* tile_src,
                       const device T* head_src, long batch_stride, long row_stride,
                       threadgroup const int* pages, int kn, int chunks, int tid, bool zero_tail) {
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) {
    const StageSlot slot = stage_slot(tid, n, NT, BK, chunks);
    const int r = slot.row;
    const int c = slot.chunk;
    if (r < 0) continue;
    threadgroup T* dst = tile + r * LD + c * 8;
    if (r >= kn) {
      if (zero_tail) zero_words8(dst);
      continue;
    }
    const device T* src = mfs_paged_kv
        ? head_src + (long)pages[2 * r] * batch_stride + (long)pages[2 * r + 1] * row_stride
        : tile_src + (long)r * row_stride;
    store_words8(dst, load_words8(src + c * 8));
  }
}

// Paged K/V: the page of the key row of staging slot `s` (tile rows from key k0, kn of them),
// loaded from block_table by one lane per row and SIMD-group, the lane staging the row's chunk 0
// (or, for a row begun in the SIMD-group before, its first lane here: a row's slots are
// consecutive threads) and passed to the row's other lanes by simd_shuffle. Every lane of the
// SIMD-group calls it (slots past the tile included).
inline int slot_page(constant AttentionParams& p, const device int* block_table, int b, int k0,
                     int kn, const StageSlot s, uint lane) {
  const ushort src = (ushort)((int)lane >= s.chunk ? (int)lane - s.chunk : (int)lane);
  int page = 0;
  if (src == (ushort)lane && s.row >= 0 && s.row < kn) page = key_page(p, block_table, b, k0 + s.row);
  return simd_shuffle(page, src);
}

// Paged K/V, double-buffered: the first key tile (rows [0, kn) from key k0) staged with each
// row's page looked up by the staging itself (slot_page), not read from the pages buffer, so no
// barrier stands between the lookup and the staging. K and V share the lookups when their rows
// have the same chunks (head_dim == head_dim_v); the layout is stage_rows' (V's tail zeroed).
template <typename T, int BK, int NT, int SLOTS, int LD>
inline void stage_first_paged(threadgroup T* k_tile, threadgroup T* v_tile, const device T* k_head,
                              const device T* v_head, constant AttentionParams& p,
                              const device int* block_table, int b, int k0, int kn, int qc, int vc,
                              int tid, uint lane) {
#pragma unroll
  for (int n = 0; n < SLOTS; ++n) {
    const StageSlot ks = stage_slot(tid, n, NT, BK, qc);
    const StageSlot vs = stage_slot(tid, n, NT, BK, vc);
    const int k_page = slot_page(p, block_table, b, k0, kn, ks, lane);
    const int v_page = qc == vc ? k_page : slot_page(p, block_table, b, k0, kn, vs, lane);
    if (ks.row >= 0 && ks.row < kn) {
      const device T* src = k_head + (long)k_page * p.k_batch_stride +
                            (long)((k0 + ks.row) % p.page_size) * p.k_row_stride;
      store_words8(k_tile + ks.row * LD + ks.chunk * 8, load_words8(src + ks.chunk * 8));
    }
    if (vs.row >= 0) {
      threadgroup T* dst = v_tile + vs.row * LD + vs.chunk * 8;
      if (vs.row >= kn) {
        zero_words8(dst);
      } else {
        const device T* src = v_head + (long)v_page * p.v_batch_stride +
                              (long)((k0 + vs.row) % p.page_size) * p.v_row_stride;
        store_words8(dst, load_words8(src + vs.chunk * 8));
      }
    }
  }
}

// The first key tile from k0 on (tiles of bk keys, up to `end`) that attn_mask does not close for
// every row of the threadgroup (>= end: none). The decision is the threadgroup's, so every thread
// stages the same tiles and reaches the same barriers; without attn_mask it is k0.
inline int open_key_tile(int k0, int end, int bk, const device uchar* mask_tiles,
                         constant AttentionParams& p, int b, int h, int row0, int rows_end) {
  if (mfs_mask_kind == kNoMask) return k0;
  for (; k0 < end; k0 += bk) {
    if (mask_range_state(mask_tiles, mask_summary(p), b, h, row0, rows_end, k0,
                         min(k0 + bk, end)) != kMaskTileClosed) {
      break;
    }
  }
  return k0;
}

// Each tile row's (page, row in page) of the key tile at k0 (paged K/V), looked up once per row.
inline void look_up_pages(threadgroup int* pages, constant AttentionParams& p,
                          const device int* block_table, int b, int k0, int kn, int tid, int nt) {
  for (int r = tid; r < kn; r += nt) {
    pages[2 * r] = key_page(p, block_table, b, k0 + r);
    pages[2 * r + 1] = (k0 + r) % p.page_size;
  }
}

// The call's head_dim and head_dim_v both equal the kernel's tile (function constant 16, set by
// the plan): no 8-wide head-dim chunk is past them, so no MMA, load or store needs a head-dim
// guard (qc and vc below are constants and every `c_lo + c < qc` test folds away).
constant bool mfs_head_dim_full [[function_constant(MFS_FC_HEAD_DIM_FULL)]];
// Every q row starts on a 16-byte boundary (function constant 18, set by the plan): Q's
// fragments are read by 16-byte loads (frag_rows_by_words).
constant bool mfs_vector_q [[function_constant(MFS_FC_VECTOR_Q)]];

template <typename T, int D>
[[kernel, max_total_threads_per_threadgroup(mfs_prefill_threads(D))]] void mfs_prefill(
    const device T* q [[buffer(MFS_BUF_Q)]],
    const device T* k [[buffer(MFS_BUF_K)]],
    const device T* v [[buffer(MFS_BUF_V)]],
    device T* out [[buffer(MFS_BUF_OUT)]],
    device float* lse [[buffer(MFS_BUF_LSE), function_constant(mfs_write_lse)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device int* block_table [[buffer(MFS_BUF_BLOCK_TABLE)]],
    const device float* alibi_slopes [[buffer(MFS_BUF_ALIBI)]],
    const device float* sinks [[buffer(MFS_BUF_SINKS)]],
    const device uchar* mask [[buffer(MFS_BUF_MASK)]],
    const device uchar* mask_tiles [[buffer(MFS_BUF_MASK_TILES)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int ES = sizeof(T);
  constexpr int BQ = MFS_PREFILL_BQ;
  constexpr int BK = mfs_prefill_bk(D, ES);
  constexpr int LD = mfs_prefill_ld(D, ES);  // V tile: [BK][LD]
  constexpr int DS = mfs_prefill_dsplit(D);   // SIMD-groups per row group (head-dim split)
  constexpr int NT = mfs_prefill_threads(D);
  constexpr int DQ = D / 8 / DS;  // 8-wide head-dim chunks of this SIMD-group (Q and O)
  constexpr int KC = BK / 8;      // 8-key chunks of a key tile
  constexpr int G = mfs_score_group_chunks(D);  // chunks S is summed in from zero (the backward's)
  static_assert(DS == 1 || DQ % G == 0, "a head-dim share is whole S groups (the backward sums per share)");
  constexpr int SLOTS = (BK * (D / 8) + NT - 1) / NT;  // staging slots per thread
  constexpr bool KV_SHARED = mfs_prefill_kv_shared(D, ES);  // K and V tiles in one buffer
  constexpr bool DB = mfs_prefill_double_buffered(D, ES);   // two K and two V tiles
  static_assert(!DB || (DS == 1 && !KV_SHARED), "double-buffered: the head dim not split");
  static_assert(mfs_prefill_tg_bytes(D, ES) <= 32768, "prefill threadgroup memory");
  static_assert(mfs_prefill_k_tile_bytes(D, ES) == BK * LD * ES, "K tile layout");
  static_assert((LD * ES) % 16 == 0, "16-byte aligned tile rows (staging stores 16 bytes)");
  static_assert(mfs_prefill_v_tile_bytes(D, ES) == BK * LD * ES, "V tile layout");
  // One declaration (16-byte words: the staging stores 16 bytes): the K tile, the V tile (after it, or over it when shared), each
  // tile row's element offset (paged K/V) and the SIMD-groups' partial S (head-dim split).
  threadgroup vec<uint, 4> kv_words[mfs_prefill_tg_bytes(D, ES) / 16];  // 16-byte aligned
  threadgroup T* kv_tiles = (threadgroup T*)kv_words;
  threadgroup T* k_tile = kv_tiles;  // double-buffered: the pair of the tile being multiplied
  threadgroup T* v_tile = KV_SHARED ? kv_tiles : kv_tiles + BK * LD;
  // (page, row in page) of each tile row, two buffers: the tile staged now, the next one.
  threadgroup int* page_rows = (threadgroup int*)(kv_tiles + mfs_prefill_kv_bytes(D, ES) / ES);
  threadgroup float* partial_s = (threadgroup float*)(page_rows + 4 * BK);

  const int b = (int)tg.z;
  const int h = (int)tg.y;
  const SequenceRows s = sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  const int q_tiles = (s.seqlen_q + BQ - 1) / BQ;
  if ((int)tg.x >= q_tiles) return;  // the whole threadgroup: past this sequence's queries
  // Causal / right-bounded windows: the heaviest query tiles first (mfs_prefill_query_tile).
  const int row0 =
      mfs_prefill_query_tile((int)tg.x, q_tiles, mfs_window && p.window_right >= 0) * BQ;
  const int rows_end = min(row0 + BQ, s.seqlen_q);
  const int hk = h / (p.heads_q / p.heads_kv);
  const int qc = mfs_head_dim_full ? D / 8 : p.head_dim / 8;    // chunks of q/k in use
  const int vc = mfs_head_dim_full ? D / 8 : p.head_dim_v / 8;  // chunks of v/out in use

  const int rg = (int)sg % MFS_PREFILL_ROW_GROUPS;  // row group
  const int c_lo = ((int)sg / MFS_PREFILL_ROW_GROUPS) * DQ;  // this SIMD-group's first chunk
  const int fr = frag_row(lane);
  const int fc = frag_col(lane);
  const int sg_row0 = row0 + rg * 8;
  const int row = sg_row0 + fr;  // this lane's query row (of the sequence)
  const bool row_valid = row < s.seqlen_q;
  KeyRange mine = {0, 0};
  if (row_valid) mine = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const KeyRange hull =
      visible_keys_for_rows(row0, rows_end, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  // This row group's rows: the keys some row sees (8-key chunks outside are neither multiplied
  // nor accumulated) and the keys every row sees (a tile inside them needs no mask). A row group
  // without rows (the last, partial query tile) only helps stage the tiles.
  const bool sg_has_rows = sg_row0 < s.seqlen_q;
  const bool sg_full = sg_row0 + 8 <= s.seqlen_q;
  KeyRange sg_keys = {0, 0};
  KeyRange sg_all = {0, 0};
  if (sg_has_rows) {
    const int sg_rows_end = min(sg_row0 + 8, s.seqlen_q);
    sg_keys = visible_keys_for_rows(sg_row0, sg_rows_end, s.seqlen_q, s.seqlen_k,
                                    p.window_left, p.window_right);
    // Visible ranges only move right as the row grows: the last row's begin, the first's end.
    sg_all.begin = visible_keys(sg_rows_end - 1, s.seqlen_q, s.seqlen_k, p.window_left,
                                p.window_right).begin;
    sg_all.end = visible_keys(sg_row0, s.seqlen_q, s.seqlen_k, p.window_left,
                              p.window_right).end;
  }
  const ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);

  // This SIMD-group's share of Q, as fragments in the input dtype (rows past the sequence: 0):
  // by 16-byte loads when the plan found q's rows 16-byte aligned (mfs_vector_q; float: 8-byte
  // loads), else element by element.
  FragStore<T> qf[DQ];
  const device T* q_row = q + q_row_offset(p, s, b, row) + (long)h * p.q_head_stride;
  if (mfs_vector_q) {
    frag_rows_by_words(qf, q_row, c_lo, qc, row_valid, lane);
  } else {
#pragma unroll
    for (int c = 0; c < DQ; ++c) {
      float e0 = 0.0f, e1 = 0.0f;
      if (c_lo + c < qc && row_valid) {
        e0 = float(q_row[(c_lo + c) * 8 + fc]);
        e1 = float(q_row[(c_lo + c) * 8 + fc + 1]);
      }
      qf[c] = frag_store<T>(e0, e1);
    }
  }

  RowState st = row_state_start(mfs_sinks, mfs_sinks ? sink_log2(sinks, h, lane, mfs_sink_dtype) : 0.0f);
  simdgroup_float8x8 of[DQ];
#pragma unroll
  for (int c = 0; c < DQ; ++c) of[c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

  // Staging: a tile is BK rows x D / 8 chunks of 8 elements, slot n of thread tid is chunk
  // tid + n * NT (stage_rows): nothing of it is held across the key loop.
  const long k_head = (long)hk * p.k_head_stride;
  const long v_head = (long)hk * p.v_head_stride;
  // The tile's first K and V rows (contiguous K/V; paged K/V rebase on pages[]).
  const device T* k_rows = k + k_head;
  const device T* v_rows = v + v_head;
  if (!mfs_paged_kv) {
    k_rows += key_row_offset(p, s, b, hull.begin, 0, p.k_batch_stride, p.k_row_stride);
    v_rows += key_row_offset(p, s, b, hull.begin, 0, p.v_batch_stride, p.v_row_stride);
  }
  // Paged K/V: each tile row's (page, row in page), looked up once per row: the first tile's
  // here, each next one's (into the other buffer) while the current tile is staged.
  // Double-buffered: the first open tile is staged here (pair 0; paged, each row's page looked up
  // by its staging lanes, stage_first_paged: no pages buffer, no barrier before it) and, paged,
  // the next open tile's pages looked up (pages buffer 1).
  const int k_first = DB ? open_key_tile(hull.begin, hull.end, BK, mask_tiles, p, b, h, row0,
                                         rows_end) : hull.begin;
  if (mfs_paged_kv && !DB) {
    look_up_pages(page_rows, p, block_table, b, k_first, min(BK, hull.end - k_first), (int)tid, NT);
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the first tile's pages are visible
  }
  if (DB && k_first < hull.end) {
    const int kn = min(BK, hull.end - k_first);
    if (mfs_paged_kv) {
      stage_first_paged<T, BK, NT, SLOTS, LD>(kv_tiles, kv_tiles + BK * LD, k + k_head,
                                              v + v_head, p, block_table, b, k_first, kn, qc, vc,
                                              (int)tid, lane);
    } else {
      stage_rows<T, BK, NT, SLOTS, LD>(kv_tiles, k_rows + (long)(k_first - hull.begin) * p.k_row_stride,
                                       k + k_head, p.k_batch_stride, p.k_row_stride, page_rows, kn,
                                       qc, (int)tid, false);
      stage_rows<T, BK, NT, SLOTS, LD>(kv_tiles + BK * LD,
                                       v_rows + (long)(k_first - hull.begin) * p.v_row_stride,
                                       v + v_head, p.v_batch_stride, p.v_row_stride, page_rows, kn,
                                       vc, (int)tid, true);
    }
    if (mfs_paged_kv) {
      const int k_second = open_key_tile(k_first + BK, hull.end, BK, mask_tiles, p, b, h, row0,
                                         rows_end);
      look_up_pages(page_rows + 2 * BK, p, block_table, b, k_second, min(BK, hull.end - k_second),
                    (int)tid, NT);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the first tile and next pages complete
  }

  // Double-buffered: one barrier per open tile, at its start (below). Otherwise two barriers per
  // tile. Staging K of tile t + 1 needs no barrier of its own: every S of tile
  // t was computed before the barrier that completed V of tile t, and V of tile t + 1 is staged
  // after the barrier that completes K of tile t + 1, which no thread reaches before its P.V of
  // tile t is done. With a shared K/V buffer, K of tile t + 1 and V of tile t are in the same
  // place, and so are V and K of one tile: each staging waits for the last reader of the other.
  int tile = 0;
  int db_pair = 0;  // double-buffered: the K/V pair (and pages buffer) of the tile multiplied
  for (int k0 = hull.begin; k0 < hull.end; k0 += BK, ++tile) {
    const int kn = min(BK, hull.end - k0);  // keys of this tile
    threadgroup const int* pages = page_rows + (tile % 2) * 2 * BK;
    // attn_mask closes the whole tile for every row of the threadgroup: nothing is staged or
    // multiplied (the decision is the threadgroup's, so every thread skips the same barriers).
    if (mfs_mask_kind != kNoMask &&
        mask_range_state(mask_tiles, mask_summary(p), b, h, row0, rows_end, k0,
                         k0 + kn) == kMaskTileClosed) {
      k_rows += (long)BK * p.k_row_stride;
      v_rows += (long)BK * p.v_row_stride;
      continue;
    }
    if (tid == 0) MSL_SIM_COUNT("kv_tiles", 1);
    if (DB) {
      // Double-buffered, open tile t (of those staged): it is in pair t % 2. The one barrier:
      // tile t complete (staged during tile t - 1) and every read of pair (t + 1) % 2 and pages
      // buffer t % 2 (tile t - 1's S and P.V, tile t's staging) done.
      if (k0 != k_first) {
        threadgroup_barrier(mem_flags::mem_threadgroup);
        db_pair ^= 1;
      }
      k_tile = kv_tiles + db_pair * 2 * BK * LD;
      v_tile = k_tile + BK * LD;
      // (1) Stage the next open tile into the other pair (its pages were looked up during the
      // tile before), and look up the pages of the one after it into this tile's pages buffer.
      const int k_next = open_key_tile(k0 + BK, hull.end, BK, mask_tiles, p, b, h, row0, rows_end);
      if (k_next < hull.end) {
        threadgroup T* next_tiles = kv_tiles + (db_pair ^ 1) * 2 * BK * LD;
        threadgroup const int* next_pages = page_rows + (db_pair ^ 1) * 2 * BK;
        const int kn_next = min(BK, hull.end - k_next);
        stage_rows<T, BK, NT, SLOTS, LD>(next_tiles, k_rows + (long)(k_next - k0) * p.k_row_stride,
                                        k + k_head, p.k_batch_stride, p.k_row_stride, next_pages,
                                        kn_next, qc, (int)tid, false);
        stage_rows<T, BK, NT, SLOTS, LD>(next_tiles + BK * LD,
                                        v_rows + (long)(k_next - k0) * p.v_row_stride, v + v_head,
                                        p.v_batch_stride, p.v_row_stride, next_pages, kn_next, vc,
                                        (int)tid, true);
        if (mfs_paged_kv) {
          const int k_after = open_key_tile(k_next + BK, hull.end, BK, mask_tiles, p, b, h, row0,
                                            rows_end);
          look_up_pages(page_rows + db_pair * 2 * BK, p, block_table, b, k_after,
                        min(BK, hull.end - k_after), (int)tid, NT);
        }
      }
    } else {
      if (KV_SHARED && tile > 0) threadgroup_barrier(mem_flags::mem_threadgroup);  // P.V read V

      // (1) Stage K. K rows past kn are never used: their scores are masked.
      stage_rows<T, BK, NT, SLOTS, LD>(k_tile, k_rows, k + k_head, p.k_batch_stride,
                                      p.k_row_stride, pages, kn, qc, (int)tid, false);
      threadgroup_barrier(mem_flags::mem_threadgroup);  // the K tile is complete
    }

    // (2) S = Q.K^T for this SIMD-group's rows, its head-dim share and the 8-key chunks its rows
    // can see: [j_begin, j_end). The head dim is summed in groups of G chunks (G MMAs into a
    // zeroed partial, then added to S): the backward's groups (mfs_score_group_chunks).
    const int j_begin = max(0, (sg_keys.begin - k0) / 8);
    const int j_end = sg_has_rows ? min((kn + 7) / 8, (sg_keys.end - k0 + 7) / 8) : 0;
    // attn_mask: the states of this row group's 8-key chunks (closed chunks: no MMA).
    MaskChunks mc = 0u;
    if (mfs_mask_kind != kNoMask && sg_has_rows) {
      mc = mask_chunks<KC>(mask_row_tiles(mask_tiles, p, b, h, sg_row0), p, k0, kn);
    }
    // Interior (decided before S): every key of the tile visible to every row of this
    // SIMD-group, so its logits take no per-element mask; unguarded: interior and no chunk
    // closed by attn_mask, so its MMAs skip nothing and test nothing.
    const bool interior = sg_full && k0 >= sg_all.begin && k0 + BK <= sg_all.end;
    const bool unguarded = interior && !mask_chunks_any_closed(mc);
    simdgroup_float8x8 sf[KC];
#pragma unroll
    for (int j = 0; j < KC; ++j) sf[j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
    for (int c0 = 0; c0 < DQ; c0 += G) {
      if (c_lo + c0 >= qc) continue;
#pragma unroll
      for (int j = 0; j < KC; ++j) {
        if (!unguarded && (j < j_begin || j >= j_end || mask_chunk_closed(mc, j))) continue;
        simdgroup_float8x8 part = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
        for (int c = c0; c < c0 + G && c < DQ; ++c) {
          if (c_lo + c >= qc) continue;
          simdgroup_float8x8 qa = frag_widen(qf[c]);
          simdgroup_float8x8 kt = frag_load_transposed(k_tile, LD, (c_lo + c) * 8, j * 8, fr, fc);
          simdgroup_multiply_accumulate(part, qa, kt, part);
        }
        sf[j].thread_elements()[0] += part.thread_elements()[0];
        sf[j].thread_elements()[1] += part.thread_elements()[1];
      }
    }
    if (DS > 1) {  // publish this share's partial S for the row group's other SIMD-groups
#pragma unroll
      for (int j = 0; j < KC; ++j) {
        partial_s[((int)sg * 8 + fr) * BK + j * 8 + fc] = sf[j].thread_elements()[0];
        partial_s[((int)sg * 8 + fr) * BK + j * 8 + fc + 1] = sf[j].thread_elements()[1];
      }
    }

    if (!DB) {
      // (3) Stage V (rows past kn zeroed: P is 0 there, and 0 x NaN would not be).
      if (KV_SHARED) threadgroup_barrier(mem_flags::mem_threadgroup);  // every S read K
      stage_rows<T, BK, NT, SLOTS, LD>(v_tile, v_rows, v + v_head, p.v_batch_stride,
                                      p.v_row_stride, pages, kn, vc, (int)tid, true);
      k_rows += (long)BK * p.k_row_stride;
      v_rows += (long)BK * p.v_row_stride;
      if (mfs_paged_kv) {  // the next tile's rows, into the buffer tile t - 1 used
        threadgroup int* next = page_rows + ((tile + 1) % 2) * 2 * BK;
        for (int r = (int)tid; r < min(BK, hull.end - k0 - BK); r += NT) {
          const int key = k0 + BK + r;
          next[2 * r] = key_page(p, block_table, b, key);
          next[2 * r + 1] = key % p.page_size;
        }
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);  // V, partial S and next pages complete
    } else {
      k_rows += (long)BK * p.k_row_stride;
      v_rows += (long)BK * p.v_row_stride;
    }
    // nothing of this tile for these rows (whole SIMD-group), or attn_mask closes all of it
    if (j_begin >= j_end ||
        (mfs_mask_kind != kNoMask && mask_chunks_all_closed(mc, j_begin, j_end))) {
      continue;
    }
    if (DS > 1) {  // S = the shares' partials summed in share order: the same S in every share
#pragma unroll
      for (int j = 0; j < KC; ++j) {
        float e0 = 0.0f, e1 = 0.0f;
#pragma unroll
        for (int share = 0; share < DS; ++share) {
          const int from = share * MFS_PREFILL_ROW_GROUPS + rg;
          e0 += partial_s[(from * 8 + fr) * BK + j * 8 + fc];
          e1 += partial_s[(from * 8 + fr) * BK + j * 8 + fc + 1];
        }
        sf[j].thread_elements()[0] = e0;
        sf[j].thread_elements()[1] = e1;
      }
    }

    // (4) Logits and online softmax. Interior tiles (every key of the tile visible to every row
    // of this SIMD-group) take no per-element mask.
    float tile_max = kMaskedScore;
    if (interior) {
#pragma unroll
      for (int j = 0; j < KC; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float x = score_log2(rule, sf[j].thread_elements()[e], row, k0 + j * 8 + fc + e);
          sf[j].thread_elements()[e] = x;
          tile_max = max(tile_max, x);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < KC; ++j) {
        if (j < j_begin || j >= j_end) {
          sf[j].thread_elements()[0] = kMaskedScore;
          sf[j].thread_elements()[1] = kMaskedScore;
          continue;
        }
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float x =
              logit_log2(rule, sf[j].thread_elements()[e], row, k0 + j * 8 + fc + e, mine);
          sf[j].thread_elements()[e] = x;
          tile_max = max(tile_max, x);
        }
      }
    }
    if (mfs_mask_kind != kNoMask) {  // attn_mask's bias, after the scale (as torch)
      tile_max = mask_scores<KC>(sf, mc, mask, p, b, h, row, row_valid, s.seqlen_k, k0, fc,
                                 j_begin, j_end);
    }
    tile_max = frag_row_max(tile_max);
    const float m_new = max(st.m, tile_max);
    const float base = softmax_base(m_new);
    const float factor = exp2(st.m - base);
    float row_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < KC; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pe = exp2(sf[j].thread_elements()[e] - base);
        sf[j].thread_elements()[e] = pe;
        row_sum += pe;
      }
    }
    st.l = st.l * factor + frag_row_sum(row_sum);
    st.m = m_new;
    // Dropout acts on P.V only: l (hence lse) is the undropped softmax's.
    if (mfs_dropout) dropout_fragments<KC>(sf, p, dropout_query_token(p, s, b, row), h, k0, fc, j_begin, j_end);

    // (5) O = O * factor + P.V on this SIMD-group's head-dim share.
#pragma unroll
    for (int c = 0; c < DQ; ++c) {
      if (c_lo + c >= vc) continue;
      of[c].thread_elements()[0] *= factor;
      of[c].thread_elements()[1] *= factor;
#pragma unroll
      for (int j = 0; j < KC; ++j) {
        if (!unguarded && (j < j_begin || j >= j_end || mask_chunk_closed(mc, j))) continue;
        simdgroup_float8x8 vf = frag_load(v_tile, LD, j * 8, (c_lo + c) * 8, fr, fc);
        simdgroup_multiply_accumulate(of[c], sf[j], vf, of[c]);
      }
    }
  }

  if (!row_valid) return;
  const bool none = mine.end <= mine.begin;
  const float inv = row_inv(st.l, none);
  device T* o_row = out + o_row_offset(p, s, b, row) + (long)h * p.o_head_stride;
#pragma unroll
  for (int c = 0; c < DQ; ++c) {
    if (c_lo + c >= vc) continue;
    o_row[(c_lo + c) * 8 + fc] = T(of[c].thread_elements()[0] * inv);
    o_row[(c_lo + c) * 8 + fc + 1] = T(of[c].thread_elements()[1] * inv);
  }
  if (mfs_write_lse && fc == 0 && c_lo == 0) {
    store_lse(lse, lse_offset(p, s, b, h, row), row_lse(st, none));
  }
}

#define MFS_STR_(x) #x
#define MFS_STR(x) MFS_STR_(x)
#define MFS_CAT4_(a, b, c, d) a##b##c##d
#define MFS_CAT4(a, b, c, d) MFS_CAT4_(a, b, c, d)

#define MFS_INSTANTIATE_PREFILL(T, tname, D)                                         \
  template [[host_name(MFS_STR(MFS_CAT4(mfs_prefill_, tname, _d, D)))]] [[kernel]] \
  decltype(mfs_prefill<T, D>) mfs_prefill<T, D>;

#define MFS_INSTANTIATE_PREFILL_DTYPES(D)   \
  MFS_INSTANTIATE_PREFILL(float, f32, D)    \
  MFS_INSTANTIATE_PREFILL(half, f16, D)     \
  MFS_INSTANTIATE_PREFILL(bfloat, bf16, D)

// Keep in step with mfs_head_dim_tile_at() (test_metal_design.py checks every plan pick exists).
MFS_INSTANTIATE_PREFILL_DTYPES(32)
MFS_INSTANTIATE_PREFILL_DTYPES(64)
MFS_INSTANTIATE_PREFILL_DTYPES(72)
MFS_INSTANTIATE_PREFILL_DTYPES(80)
MFS_INSTANTIATE_PREFILL_DTYPES(96)
MFS_INSTANTIATE_PREFILL_DTYPES(128)
MFS_INSTANTIATE_PREFILL_DTYPES(192)
MFS_INSTANTIATE_PREFILL_DTYPES(256)
MFS_INSTANTIATE_PREFILL_DTYPES(512)
