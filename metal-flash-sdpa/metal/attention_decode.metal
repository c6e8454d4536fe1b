// Decode (at most MFS_DECODE_MAX_Q queries per sequence) and the small kernels around it.
//
// mfs_decode: one threadgroup = the (query head, row) pairs of a GQA group that share one KV head
// (heads_per_tg heads x rows_per_tg rows: the whole group when it fits), for one sequence and one
// key split, with W = mfs_decode_simdgroups SIMD-groups that each take a contiguous run of the
// split's keys. K/V rows are read straight from device memory, no threadgroup staging and no
// barrier in the key loop: a key's row is spread over L lanes (mfs_decode_lanes_per_key), each
// owning E contiguous elements (one to four 4-element vector loads), and that one read serves
// every pair of the threadgroup. A lane group holds P pairs in registers (their q too, except at
// tile 512, where q is read from the threadgroup copy of the pairs' rows); with more pairs than
// that, the lane groups of a SIMD-group form C cohorts that hold different pairs of the same
// key: the first cohort loads the key and the others take it by shuffle. V is loaded after the
// key's scores.
// Each lane group keeps its own online-softmax state per pair; the states are combined across
// lane groups (shuffles) and across SIMD-groups (threadgroup memory, once at the end). With
// num_splits > 1 (few threadgroups for the GPU's cores, long keys) each split writes an
// unnormalised partial (o, m, l) to scratch and mfs_decode_reduce combines them (and the sink)
// into out and lse.
//
// mfs_clear_rows: zeros the rows of a varlen q past cu_seqlens_q[batch] and, with seqused_q, the
// rows of each sequence's slot past its used ones (functional form), whose positions the host
// cannot read on the GPU.
#include "attention_tiles.h"

// Merges online-softmax state (m2, l2, o2) into (m, l, o) (both in log2 units, l and o relative
// to softmax_base of their own m).
template <int E>
inline void merge_state(thread float& m, thread float& l, thread float* o, float m2, float l2,
                        const thread float* o2) {
  const float mm = max(m, m2);
  const float base = softmax_base(mm);
  const float w1 = exp2(m - base), w2 = exp2(m2 - base);
  l = l * w1 + l2 * w2;
#pragma unroll
  for (int e = 0; e < E; ++e) o[e] = o[e] * w1 + o2[e] * w2;
  m = mm;
}

// One key's score of one pair, log2 units: masked past the run's keys, the mask evaluated only
// where some row of the threadgroup may not see the key.
inline float key_score(ScoreRule rule, float dot, bool live, bool unmasked, int row, int key,
                       KeyRange mine) {
  return !live ? kMaskedScore
         : unmasked ? score_log2(rule, dot, row, key)
                    : logit_log2(rule, dot, row, key, mine);
}

// The pairs each lane group works on (<= mfs_decode_max_pairs; the plan's
// mfs_decode_live_pairs): a launch whose threadgroups hold fewer pairs than the registers admit
// (GQA 1, GQA 4 at a 5-pair tile) computes no score, shuffle or o update for pairs it would
// discard. Set on every decode launch.
constant int mfs_decode_pairs [[function_constant(MFS_FC_DECODE_PAIRS)]];
// Whether the launch splits its keys (num_splits > 1): each split writes unnormalised partials
// to scratch and mfs_decode_reduce writes out and lse; without a split the scratch parameters do
// not exist (nothing is bound there) and the kernel writes out and lse itself.
constant bool mfs_decode_split [[function_constant(MFS_FC_DECODE_SPLIT)]];

template <typename T, int D>
[[kernel, max_total_threads_per_threadgroup(mfs_decode_threads(D))]] void mfs_decode(
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
    device float* partial_o [[buffer(MFS_BUF_SCRATCH0), function_constant(mfs_decode_split)]],
    device float* partial_ml [[buffer(MFS_BUF_SCRATCH1), function_constant(mfs_decode_split)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalLaunchArgs& a [[buffer(MFS_BUF_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int W = mfs_decode_simdgroups(D);
  constexpr int H = mfs_decode_simdgroups_per_key(D);  // SIMD-groups sharing a key's row
  constexpr int R = W / H;                             // key runs (SIMD-groups of one slice)
  constexpr int E = mfs_decode_elems_per_lane(D, (int)sizeof(T));  // contiguous elements per lane
  constexpr int L = mfs_decode_lanes_per_key(D, (int)sizeof(T));   // lanes per key (of one SIMD-group)
  constexpr int G = 32 / L;                        // lane groups per SIMD-group
  constexpr int P = mfs_decode_max_pairs(D, (int)sizeof(T));  // (head, row) pairs a lane group holds
  constexpr int CW = D + 4;                        // combine row: o[D], m, l (16-byte aligned)
  // A lane's K/V share starts at a multiple of E elements of its row (load_row_vec: 16-byte
  // loads for 16-bit shares of 8 with aligned rows), except at tile 192, which keeps 8-byte
  // loads: with 16-byte ones ptxas spilled 44 bytes under the 512-thread bound (demand 116).
  constexpr int KVA = D == 192 ? 4 : E;
  constexpr int QP = mfs_decode_max_tg_pairs(D, (int)sizeof(T));  // q rows staged
  constexpr bool QREG = mfs_decode_q_in_registers(D);  // else q is read from q_tile per key
  // With 4 to 8 live pairs at tiles 96/128 in 16-bit dtypes (mfs_decode_uses_mma; the function
  // constant, so known when the pipeline is built), S and P.V are 8x8 MMAs over 8 keys x 8 pairs
  // (the MMA state below) instead of a shuffle reduction per pair and key.
  constexpr bool MMA_TILE = mfs_decode_mma_tile(D, (int)sizeof(T));
  static_assert(!MMA_TILE || (L * E >= D && H == 1 && D % 32 == 0),
                "MMA: a key's row is one SIMD-group's (the combine's lanes of group 0 cover it)");
  const bool mma = mfs_decode_uses_mma(mfs_decode_pairs, D, (int)sizeof(T));
  constexpr int DC = MMA_TILE ? D / 8 : 4;  // 8-wide chunks of the tile (4: any, unused)
  constexpr int VG = DC % 8 == 0 ? 8 : 4;    // V elements per load group (of a lane's D/8)
  static_assert(!MMA_TILE || (DC % 4 == 0 && DC % VG == 0), "MMA: whole K and V load groups");
  constexpr int MP = MMA_TILE ? MFS_DECODE_MMA_PAIRS : P;  // pairs the combine loop may see
  static_assert(H * L * E >= D, "a key's lanes cover the head-dim tile");
  static_assert(QREG || H * L * E == D, "q read from q_tile: every lane's share is inside the tile");
  static_assert(H == 1 || L == 32, "a key over SIMD-groups: one lane group (one cohort) each");
  // [G][R][CW] combine area, with H > 1 the partial scores [2][W][P], the sequence's bounds, then
  // the pairs' q rows [G * P][D] (read from device memory once per threadgroup, not once per
  // SIMD-group; the MMA path: Q^T's fragments, the same bytes).
  threadgroup float combine[mfs_decode_tg_bytes(D, (int)sizeof(T)) / 4];
  threadgroup float* partial_dots = combine + mfs_decode_combine_floats(D, (int)sizeof(T));
  threadgroup int* bounds_tg =
      (threadgroup int*)(partial_dots + mfs_decode_exchange_floats(D, (int)sizeof(T)));
  threadgroup T* q_tile = (threadgroup T*)(bounds_tg + 4);

  const int split = (int)tg.x;
  const int b = (int)tg.z;
  const int group = p.heads_q / p.heads_kv;
  const int parts = group / a.heads_per_tg;  // threadgroups per GQA group (heads)
  const int row_chunks = (a.rows_per_head + a.rows_per_tg - 1) / a.rows_per_tg;
  const int hk = (int)tg.y / (parts * row_chunks);
  const int part = ((int)tg.y / row_chunks) % parts;
  const int row_first = ((int)tg.y % row_chunks) * a.rows_per_tg;
  const int h_first = hk * group + part * a.heads_per_tg;
  const int hd = p.head_dim, hdv = p.head_dim_v;

  // SIMD-group 0 reads the sequence's offsets (once per threadgroup) and stages the pairs' q
  // rows, 8 elements per lane; the others wait at the barrier and read the bounds back.
  // Per pair i: head h_first + i / rows_in, row row_first + i % rows_in. Every row slot is
  // filled to the tile's width, with zeros past head_dim and in slots without a pair: a q element
  // read from it is 0 wherever no K element was loaded.
  if (sg == 0) {
    const SequenceRows s0 = sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
    if (lane == 0) {
      bounds_tg[0] = s0.q_begin;
      bounds_tg[1] = s0.seqlen_q;
      bounds_tg[2] = s0.k_begin;
      bounds_tg[3] = s0.seqlen_k;
    }
    const int rows_in0 = min(min(s0.seqlen_q, a.rows_per_head), row_first + a.rows_per_tg) - row_first;
    const int live_pairs = a.heads_per_tg * rows_in0;  // <= 0 when the threadgroup has no row
    // The MMA path: Q^T in fragment order, q_frag[j * 32 + lane] the lane's two elements of
    // chunk j (see the MMA state below), so each key step reads one 4-byte word per lane and
    // chunk, without bank conflicts. Zeros past head_dim and in columns without a pair.
    threadgroup vec<T, 2>* q_frag = (threadgroup vec<T, 2>*)q_tile;
    const int qr = frag_row(lane), qc = frag_col(lane);
    for (int j = 0; mma && j < DC; ++j) {
      const int d = (qr / 2) * (D / 4) + 2 * j + qr % 2;
      vec<T, 2> x;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int pair = qc + e;
        x[e] = pair < live_pairs && d < hd
                   ? q[q_row_offset(p, s0, b, row_first + pair % rows_in0) +
                       (long)(h_first + pair / rows_in0) * p.q_head_stride + d]
                   : T(0.0f);
      }
      q_frag[j * 32 + (int)lane] = x;
    }
    for (int i = (int)lane; !mma && i < QP * (D / 8); i += 32) {
      const int pair = i / (D / 8), c = i % (D / 8);
      threadgroup T* dst = q_tile + pair * D + c * 8;
      if (pair >= live_pairs || c >= hd / 8) {
#pragma unroll
        for (int e = 0; e < 8; ++e) dst[e] = T(0.0f);
        continue;
      }
      const device T* src = q + q_row_offset(p, s0, b, row_first + pair % rows_in0) +
                            (long)(h_first + pair / rows_in0) * p.q_head_stride + c * 8;
#pragma unroll
      for (int e = 0; e < 8; ++e) dst[e] = src[e];
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);  // bounds and q are staged (before the keys)
  SequenceRows s;
  s.q_begin = bounds_tg[0];
  s.seqlen_q = bounds_tg[1];
  s.k_begin = bounds_tg[2];
  s.seqlen_k = bounds_tg[3];
  const int rows = min(s.seqlen_q, a.rows_per_head);
  if (row_first >= rows) return;  // the whole threadgroup
  const int row_end = min(row_first + a.rows_per_tg, rows);
  const int rows_in = row_end - row_first;
  const int npairs = a.heads_per_tg * rows_in;  // live pairs, <= C * P
  const KeyRange hull = visible_keys_for_rows(row_first, row_end, s.seqlen_q, s.seqlen_k,
                                              p.window_left, p.window_right);
  // The keys every row of the threadgroup sees (no mask needed): the last row's begin, the
  // first row's end (visible ranges only move right as the row grows).
  KeyRange all = hull;
  if (mfs_window) {
    all.begin = visible_keys(row_end - 1, s.seqlen_q, s.seqlen_k, p.window_left,
                             p.window_right).begin;
    all.end = visible_keys(row_first, s.seqlen_q, s.seqlen_k, p.window_left,
                           p.window_right).end;
  }
  const int split_begin = split * a.keys_per_split;
  const int kb = max(hull.begin, split_begin);
  const int ke = min(hull.end, split_begin + a.keys_per_split);

  // Lane group g of the SIMD-group: cohort g % C (which pairs), slot g / C (which key of a step).
  // Each cohort works on NP pairs (the plan's live count: C * NP covers the threadgroup's pairs),
  // registers for P. NP is a function constant: every pair loop below stops at it at compile time.
  const int C = mfs_decode_cohorts(a.heads_per_tg * a.rows_per_tg, D, (int)sizeof(T));
  const int NP = min(P, mfs_decode_pairs);
  const int KS = G / C;                // keys per SIMD-group step
  const int g = (int)lane / L;
  const int cohort = g % C, slot = g / C;
  const int first_pair = cohort * NP;
  const ushort key_lane = (ushort)(slot * C * L + (int)lane % L);  // the lane that loads my key
  const int slice = (int)sg % H, key_run = (int)sg / H;  // my head-dim slice, my run of keys
  const int d0 = slice * (D / H) + ((int)lane % L) * E;  // this lane's first head-dim element
  const bool v_lane = d0 < hdv;
  const int KSTEP = mma ? 8 : KS;  // keys per SIMD-group step

  T qv[P][E];  // input dtype: half the registers for half/bfloat (unused without QREG)
  const threadgroup T* q_mine = q_tile + first_pair * D + d0;  // my pairs' q, without QREG
  float o[P][E];
  float m[P], l[P];
  KeyRange mine[P];
  ScoreRule rule[P];
#pragma unroll
  for (int i = 0; i < P; ++i) {
    if (i >= NP || mma) break;  // (the MMA path holds its own state)
    const int pair = first_pair + i;
    const bool live = pair < npairs;
    const int h = h_first + (live ? pair / rows_in : 0);
    const int row = row_first + (live ? pair % rows_in : 0);
    mine[i].begin = 0;
    mine[i].end = 0;  // a pair past the threadgroup's: sees no key
    if (live) mine[i] = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
    rule[i] = score_rule(p, alibi_slopes, s, b, h, lane, C > 1 ? L : 32);  // heads per cohort
#pragma unroll
    for (int e = 0; e < E; ++e) {
      if (QREG) qv[i][e] = d0 < D ? q_mine[i * D + e] : T(0.0f);  // lanes past the tile: 0
      o[i][e] = 0.0f;
    }
    m[i] = kMaskedScore;
    l[i] = 0.0f;
  }

  // This SIMD-group's contiguous run of keys (whole steps), and this lane's K/V row pointers at
  // its first key, advanced by one step (KS rows) per iteration. Paged K/V looks a page up only
  // when the lane group's key crosses into the next one.
  // With H > 1 every SIMD-group steps through `run` keys (a barrier per step), live or not.
  const int run = (((ke - kb + R - 1) / R + KSTEP - 1) / KSTEP) * KSTEP;
  const int run_begin = kb + key_run * run;
  const int run_end = min(ke, run_begin + run);
  const int loop_end = H > 1 ? run_begin + run : run_end;
  const long k_head = (long)hk * p.k_head_stride + d0;
  const long v_head = (long)hk * p.v_head_stride + d0;
  const int first = run_begin + slot;
  const device T* k_ptr = k + key_row_offset(p, s, b, first, 0, p.k_batch_stride, p.k_row_stride) + k_head;
  const device T* v_ptr = v + key_row_offset(p, s, b, first, 0, p.v_batch_stride, p.v_row_stride) + v_head;
  const long k_step = (long)KS * p.k_row_stride;
  const long v_step = (long)KS * p.v_row_stride;
  const bool loads = cohort == 0;  // the first cohort loads each key for the others
  int page = 0, page_index = -1;   // the loading lanes' current page
  int parity = 0;                  // which half of partial_dots this step writes (H > 1)

  // MMA state. S^T = K.Q^T (8 keys x 8 pairs) and O^T += V^T.P^T (head dim x pairs): P^T is S^T's
  // own fragment and each lane's o elements belong to the two pairs of its S^T columns, so
  // neither P nor the rescale factors move between lanes. The head dim is permuted per product
  // (a sum over it does not care): S's chunk j holds elements (i / 2) * D/4 + 2j + i % 2, so a
  // lane's K elements of every chunk are D/4 contiguous ones of its key's row; O^T's chunk j
  // holds rows r * D/8 + j, so a lane's V elements are D/8 contiguous ones of each of its two
  // keys' rows, and its o elements of a pair are D/8 contiguous ones of the output row.
  // Q^T's chunk j (head-dim element (r / 2) * D/4 + 2j + r % 2, pair c) is read from q_frag at
  // each step: held in registers it took 32 (ptxas counts a 16-bit element as a whole register).
  const int fr = frag_row(lane), fc = frag_col(lane);
  simdgroup_float8x8 ot[DC];  // O^T, chunk j: (head-dim element r * D/8 + j, pair c)
  const threadgroup vec<T, 2>* q_frag_mine = (const threadgroup vec<T, 2>*)q_tile + lane;
  float mm[2], lm[2];  // pairs fc, fc + 1: running max (log2) and this lane's keys' sum
  KeyRange mine_m[2];
  ScoreRule rule_m = score_rule(p, alibi_slopes, s, b, h_first, lane);  // the pairs' slopes below
  float slope_m[2];
  int row_m[2];
  if (mma) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int pair = fc + e;
      const bool live = pair < npairs;
      row_m[e] = row_first + (live ? pair % rows_in : 0);
      mine_m[e].begin = 0;
      mine_m[e].end = 0;  // a pair past the threadgroup's: sees no key
      if (live) mine_m[e] = visible_keys(row_m[e], s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
      const long slope_at = (long)b * p.alibi_batch_stride + h_first + (live ? pair / rows_in : 0);
      slope_m[e] = mfs_alibi ? alibi_slopes[slope_at] : 0.0f;
      mm[e] = kMaskedScore;
      lm[e] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < DC; ++j) ot[j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }
  const long k_head_m = (long)hk * p.k_head_stride + (fc / 2) * (D / 4);
  const long v_head_m = (long)hk * p.v_head_stride + fr * (D / 8);
  // Paged K/V: lane j < 8 holds the page of key k0 + j, looked up only when that key enters the
  // next page, and the lanes take their keys' pages by shuffle (a lookup per lane, key and step
  // read the block table for 12 % more bytes at page 16, one per lane and page still 5 %).
  // A lane's columns past the live pairs are discarded (GQA 4: half of every MMA and shuffle).
  MSL_SIM_DEAD_WORK(mma && fc >= npairs);
  for (int k0 = run_begin; mma && k0 < run_end; k0 += 8) {  // uniform per SIMD-group
    const int key = k0 + fr;  // S^T's row fr: K's row this lane loads
    const bool live = key < run_end;
    int kpage = 0, vpage[2] = {0, 0};
    if (mfs_paged_kv) {
      const int lane_key = k0 + (int)lane;  // (lanes 0-7)
      if (lane < 8 && lane_key < run_end && page_index != lane_key / p.page_size) {
        page_index = lane_key / p.page_size;
        page = key_page(p, block_table, b, lane_key);
      }
      kpage = simd_shuffle(page, (ushort)fr);
      vpage[0] = simd_shuffle(page, (ushort)fc);
      vpage[1] = simd_shuffle(page, (ushort)(fc + 1));
    }
    const device T* kr = k + key_row_offset(p, s, b, key, kpage, p.k_batch_stride, p.k_row_stride) + k_head_m;
    // K in 8-element groups (4 chunks each; D/4 is a multiple of 8 at every MMA tile, and so is
    // the group's offset in the row: one 16-byte load with aligned rows), so at most one group
    // of the row is live at once, whatever the tile.
    const int k_live = live ? hd - (fc / 2) * (D / 4) : 0;
    simdgroup_float8x8 st = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
#pragma unroll
    for (int kg = 0; kg < DC / 4; ++kg) {
      const RowVec<T, 8> kx = load_row_vec<T, 8, 8>(kr + kg * 8, k_live - kg * 8);
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int j = kg * 4 + jj;
        simdgroup_float8x8 ka;
        ka.thread_elements()[0] = row_vec_at(kx, 2 * jj);
        ka.thread_elements()[1] = row_vec_at(kx, 2 * jj + 1);
        const vec<T, 2> qj = q_frag_mine[j * 32];
        simdgroup_float8x8 qb;
        qb.thread_elements()[0] = float(qj[0]);
        qb.thread_elements()[1] = float(qj[1]);
        simdgroup_multiply_accumulate(st, ka, qb, st);
      }
    }
    const bool unmasked = !mfs_window || (key >= all.begin && key < all.end);
    float factor[2];
    simdgroup_float8x8 pt;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      rule_m.slope = slope_m[e];
      const float x = key_score(rule_m, st.thread_elements()[e], live, unmasked, row_m[e], key, mine_m[e]);
      float kmax = x;  // over the column's 8 keys: the lanes of the other rows (lane bits 1, 2, 4)
      kmax = max(kmax, simd_shuffle_xor(kmax, (ushort)2));
      kmax = max(kmax, simd_shuffle_xor(kmax, (ushort)4));
      kmax = max(kmax, simd_shuffle_xor(kmax, (ushort)16));
      const float m_new = max(mm[e], kmax);
      const float base = softmax_base(m_new);
      factor[e] = exp2(mm[e] - base);
      const float pe = exp2(x - base);
      lm[e] = lm[e] * factor[e] + pe;
      mm[e] = m_new;
      pt.thread_elements()[e] = pe;
    }
    // V's rows of this lane's columns (keys k0 + fc, k0 + fc + 1), loaded after the scores (K's
    // registers are free by then), VG elements of each at a time (8: one 16-byte load with
    // aligned rows; 4 at tile 96, whose D/8 = 12).
    const device T* vr[2];
    int v_live[2];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int vkey = k0 + fc + e;
      vr[e] = v + key_row_offset(p, s, b, vkey, vpage[e], p.v_batch_stride, p.v_row_stride) + v_head_m;
      v_live[e] = vkey < run_end ? hdv - fr * (D / 8) : 0;
    }
#pragma unroll
    for (int vg = 0; vg < DC / VG; ++vg) {
      RowVec<T, VG> vx[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) vx[e] = load_row_vec<T, VG, VG>(vr[e] + vg * VG, v_live[e] - vg * VG);
#pragma unroll
      for (int jj = 0; jj < VG; ++jj) {
        const int j = vg * VG + jj;
        simdgroup_float8x8 va;
        va.thread_elements()[0] = row_vec_at(vx[0], jj);
        va.thread_elements()[1] = row_vec_at(vx[1], jj);
        ot[j].thread_elements()[0] *= factor[0];
        ot[j].thread_elements()[1] *= factor[1];
        simdgroup_multiply_accumulate(ot[j], va, pt, ot[j]);
      }
    }
  }
  if (mma) {  // each lane summed its own keys: the column's sum
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      lm[e] += simd_shuffle_xor(lm[e], (ushort)2);
      lm[e] += simd_shuffle_xor(lm[e], (ushort)4);
      lm[e] += simd_shuffle_xor(lm[e], (ushort)16);
    }
  }
  MSL_SIM_DEAD_WORK(false);

  for (int step = run_begin; !mma && step < loop_end; step += KS) {  // uniform per SIMD-group (H > 1: threadgroup)
    const int key = step + slot;
    const bool live = key < run_end;
    const device T* kr = k_ptr;
    const device T* vr = v_ptr;
    if (mfs_paged_kv) {
      if (live && loads && (int)lane % L == 0 && key / p.page_size != page_index) {
        page_index = key / p.page_size;
        page = key_page(p, block_table, b, key);
      }
      const int key_page_now = simd_shuffle(page, (ushort)(slot * C * L));
      const int in_page = key % p.page_size;
      kr = k + (long)key_page_now * p.k_batch_stride + (long)in_page * p.k_row_stride + k_head;
      vr = v + (long)key_page_now * p.v_batch_stride + (long)in_page * p.v_row_stride + v_head;
    }
    // This lane's share of the row: hd - d0 elements of it exist (none, some or all E).
    const int k_live = live && loads ? hd - d0 : 0, v_live = live && loads ? hdv - d0 : 0;
    const RowVec<float, E> kx =
        shared_row_vec<T, E>(load_row_vec<T, E, KVA>(kr, k_live), key_lane, C > 1);
    // Scores of this key for every live pair, then V (its load's latency behind the softmax).
    float x[P];
    const bool unmasked = !mfs_window || (key >= all.begin && key < all.end);
#pragma unroll
    for (int i = 0; i < P; ++i) {
      if (i >= NP) break;
      MSL_SIM_DEAD_WORK(first_pair + i >= npairs);
      float dot = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        dot += (QREG ? float(qv[i][e]) : float(q_mine[i * D + e])) * row_vec_at(kx, e);
      }
      dot = group_sum(dot, L);
      const int row = row_first + (first_pair + i) % rows_in;  // used by ALiBi only
      x[i] = H > 1 ? dot : key_score(rule[i], dot, live, unmasked, row, key, mine[i]);
    }
    MSL_SIM_DEAD_WORK(false);
    if (H > 1) {
      // The key's dot products: this SIMD-group's slice plus the others' (summed in slice order,
      // so every slice gets the same bits). Two buffers alternate: a step's writes cannot meet
      // the last step's reads, which all come before this step's barrier.
      threadgroup float* dots = partial_dots + parity * W * P;
      if (lane == 0) {
#pragma unroll
        for (int i = 0; i < P; ++i) {
          if (i >= NP) break;
          dots[(int)sg * P + i] = x[i];
        }
      }
      threadgroup_barrier(mem_flags::mem_threadgroup);  // every slice's partial dots of the step
#pragma unroll
      for (int i = 0; i < P; ++i) {
        if (i >= NP) break;
        float sum = 0.0f;
#pragma unroll
        for (int h = 0; h < H; ++h) sum += dots[(key_run * H + h) * P + i];
        const int row = row_first + (first_pair + i) % rows_in;  // used by ALiBi only
        x[i] = key_score(rule[i], sum, live, unmasked, row, key, mine[i]);
      }
      parity ^= 1;
    }
    const RowVec<float, E> vx =
        shared_row_vec<T, E>(load_row_vec<T, E, KVA>(vr, v_live), key_lane, C > 1);
#pragma unroll
    for (int i = 0; i < P; ++i) {
      if (i >= NP) break;
      const float m_new = max(m[i], x[i]);
      const float base = softmax_base(m_new);
      const float factor = exp2(m[i] - base);
      const float pe = exp2(x[i] - base);
      l[i] = l[i] * factor + pe;
#pragma unroll
      for (int e = 0; e < E; ++e) o[i][e] = o[i][e] * factor + pe * row_vec_at(vx, e);
      m[i] = m_new;
    }
    k_ptr += k_step;
    v_ptr += v_step;
  }

  // Combine the lane groups of one cohort (other slots; lanes d0-aligned across groups hold the
  // same elements), then the key runs, P pair indices at a time (every cohort's i-th pair at
  // once), through threadgroup memory (each slice of a run writes its part of the o row).
#pragma unroll
  for (int i = 0; i < P; ++i) {
    if (i >= NP || mma) break;  // (the MMA path's lanes hold their columns' whole state)
    MSL_SIM_DEAD_WORK(first_pair + i >= npairs);
    for (int mask = C * L; mask < 32; mask *= 2) {
      const float m2 = simd_shuffle_xor(m[i], (ushort)mask);
      const float l2 = simd_shuffle_xor(l[i], (ushort)mask);
      float o2[E];
#pragma unroll
      for (int e = 0; e < E; ++e) o2[e] = simd_shuffle_xor(o[i][e], (ushort)mask);
      merge_state<E>(m[i], l[i], o[i], m2, l2, o2);
    }
  }
  MSL_SIM_DEAD_WORK(false);
  const bool with_sink = mfs_sinks && !mfs_decode_split;  // else the reduction adds the sink
  const bool writer = slot == 0 && d0 < D;  // one lane group per cohort writes its state
#pragma unroll
  for (int i = 0; i < MP; ++i) {
    if (i >= (mma ? MP : NP) || i >= npairs) break;  // uniform: NP and npairs are the threadgroup's
    if (i > 0) threadgroup_barrier(mem_flags::mem_threadgroup);  // the last pairs' reads done
    threadgroup float* mine_area = combine + (cohort * R + key_run) * CW;
    if (mma && fc == (i & ~1)) {  // the 8 lanes of pair i's column: D/8 elements each
#pragma unroll
      for (int j = 0; j < DC; ++j) mine_area[fr * (D / 8) + j] = ot[j].thread_elements()[i & 1];
      if (fr == 0) {
        mine_area[D] = mm[i & 1];
        mine_area[D + 1] = lm[i & 1];
      }
    }
    if (!mma && writer) {
#pragma unroll
      for (int e = 0; e < E; ++e) mine_area[d0 + e] = o[min(i, P - 1)][e];  // (i < P here)
    }
    if (!mma && writer && (int)lane % L == 0 && slice == 0) {  // (m, l): the same in every slice
      mine_area[D] = m[min(i, P - 1)];
      mine_area[D + 1] = l[min(i, P - 1)];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // every key run's state of pairs i
    for (int c = 0; c < C; ++c) {
      const int pair = c * NP + i;
      if (pair >= npairs || key_run != pair % R) continue;  // (each slice writes its part)
      const threadgroup float* area = combine + c * R * CW;
      const int h = h_first + pair / rows_in;
      const int row = row_first + pair % rows_in;
      float mt = kMaskedScore;
      for (int w = 0; w < R; ++w) mt = max(mt, area[w * CW + D]);
      const float sink = with_sink ? sink_log2(sinks, h, lane, mfs_sink_dtype) : kMaskedScore;
      if (with_sink) mt = max(mt, sink);
      const float base = softmax_base(mt);
      float lt = with_sink ? exp2(sink - base) : 0.0f;
      float ot[E];
#pragma unroll
      for (int e = 0; e < E; ++e) ot[e] = 0.0f;
      for (int w = 0; w < R; ++w) {
        const float wt = exp2(area[w * CW + D] - base);
        lt += area[w * CW + D + 1] * wt;
        if (g == 0 && d0 < D) {
#pragma unroll
          for (int e = 0; e < E; ++e) ot[e] += area[w * CW + d0 + e] * wt;
        }
      }
      const KeyRange seen = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
      const bool none = seen.end <= seen.begin;
      if (!mfs_decode_split) {
        const float inv = row_inv(lt, none);
        device T* o_row = out + o_row_offset(p, s, b, row) + (long)h * p.o_head_stride;
        if (g == 0 && v_lane) {
#pragma unroll
          for (int e = 0; e < E; ++e) {
            if (d0 + e < hdv) o_row[d0 + e] = T(ot[e] * inv);  // a share can pass head_dim_v
          }
        }
        if (mfs_write_lse && lane == 0 && slice == 0) {
          RowState st;
          st.m = mt;
          st.l = lt;
          store_lse(lse, lse_offset(p, s, b, h, row), row_lse(st, none));
        }
      } else {
        const long slot_index =
            (((long)b * p.heads_q + h) * a.rows_per_head + row) * a.num_splits + split;
        if (g == 0 && v_lane) {
#pragma unroll
          for (int e = 0; e < E; ++e) {
            if (d0 + e < hdv) partial_o[slot_index * hdv + d0 + e] = ot[e];
          }
        }
        if (lane == 0 && slice == 0) {
          partial_ml[slot_index * 2] = mt;
          partial_ml[slot_index * 2 + 1] = lt;
        }
      }
    }
  }
}

// Combines the splits of one (sequence, head, row): grid (rows_per_head, heads_q, batch), one
// SIMD-group per threadgroup. Lane i takes splits i, i + 32, ... (their (m, l) are read once).
template <typename T>
[[kernel, max_total_threads_per_threadgroup(32)]] void mfs_decode_reduce(
    device T* out [[buffer(MFS_BUF_OUT)]],
    device float* lse [[buffer(MFS_BUF_LSE), function_constant(mfs_write_lse)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    const device float* sinks [[buffer(MFS_BUF_SINKS)]],
    const device float* partial_o [[buffer(MFS_BUF_SCRATCH0)]],
    const device float* partial_ml [[buffer(MFS_BUF_SCRATCH1)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalLaunchArgs& a [[buffer(MFS_BUF_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int E = MFS_MAX_HEAD_DIM / 32;
  const int row = (int)tg.x, h = (int)tg.y, b = (int)tg.z;
  const SequenceRows s = sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, b, lane);
  if (row >= min(s.seqlen_q, a.rows_per_head)) return;  // the whole SIMD-group
  const KeyRange mine = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const bool none = mine.end <= mine.begin;
  const float sink = mfs_sinks ? sink_log2(sinks, h, lane, mfs_sink_dtype) : kMaskedScore;
  const int splits = a.num_splits;
  const long slot0 = (((long)b * p.heads_q + h) * a.rows_per_head + row) * a.num_splits;

  float m_lane = kMaskedScore;
  for (int i = (int)lane; i < splits; i += 32) m_lane = max(m_lane, partial_ml[(slot0 + i) * 2]);
  RowState st;
  st.m = max(sink, simd_max(m_lane));
  const float base = softmax_base(st.m);
  float l_lane = 0.0f;
  float acc[E];
  for (int e = 0; e < E; ++e) acc[e] = 0.0f;
  for (int i0 = 0; i0 < splits; i0 += 32) {
    const int i = i0 + (int)lane;
    const bool mine_split = i < splits;
    const float w_i = mine_split ? exp2(partial_ml[(slot0 + i) * 2] - base) : 0.0f;
    if (mine_split) l_lane += partial_ml[(slot0 + i) * 2 + 1] * w_i;
    for (int j = 0; j < 32 && i0 + j < splits; ++j) {
      const float w = simd_shuffle(w_i, (ushort)j);
      for (int e = 0; e < E; ++e) {
        const int d = (int)lane + 32 * e;
        if (d < p.head_dim_v) acc[e] += partial_o[(slot0 + i0 + j) * p.head_dim_v + d] * w;
      }
    }
  }
  st.l = simd_sum(l_lane) + (mfs_sinks ? exp2(sink - base) : 0.0f);
  const float inv = row_inv(st.l, none);
  device T* o_row = out + o_row_offset(p, s, b, row) + (long)h * p.o_head_stride;
  for (int e = 0; e < E; ++e) {
    const int d = (int)lane + 32 * e;
    if (d < p.head_dim_v) o_row[d] = T(acc[e] * inv);
  }
  if (mfs_write_lse && lane == 0) store_lse(lse, lse_offset(p, s, b, h, row), row_lse(st, none));
}

// With seqused_q: whether `row` (< cu_seqlens_q[batch]) is one of the used rows of the sequence
// whose slot holds it: the last b with cu_seqlens_q[b] <= row (binary search; an empty slot
// starting at row is skipped), then sequence_bounds' rule. Reached by the whole SIMD-group.
inline bool row_is_used(constant AttentionParams& p, const device int* cu_seqlens_q,
                        const device int* seqused_q, int row, uint lane) {
  int lo = 0, hi = p.batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (uniform_load(cu_seqlens_q, mid, lane) <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  SequenceOffsets o;
  o.cu_q_begin = uniform_load(cu_seqlens_q, lo, lane);
  o.cu_q_end = uniform_load(cu_seqlens_q, lo + 1, lane);
  o.cu_k_begin = 0;
  o.cu_k_end = 0;
  o.used_k = 0;
  o.used_q = uniform_load(seqused_q, lo, lane);
  const SequenceBounds s = sequence_bounds(p, o);
  return row >= s.q_begin && row < s.q_begin + s.seqlen_q;
}

// Rows of a varlen q at or past cu_seqlens_q[batch] (clamped to q_rows) belong to no sequence,
// nor, with seqused_q, the rows of a slot past its used ones: zeros in out, -inf in lse.
// Grid (ceil(q_rows / MFS_CLEAR_ROWS_PER_TG), heads_q), 32 threads.
template <typename T>
[[kernel, max_total_threads_per_threadgroup(32)]] void mfs_clear_rows(
    device T* out [[buffer(MFS_BUF_OUT)]],
    device float* lse [[buffer(MFS_BUF_LSE), function_constant(mfs_write_lse)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* seqused_q [[buffer(MFS_BUF_SEQUSED_Q)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]]) {
  const int covered = clamp_to(uniform_load(cu_seqlens_q, p.batch, lane), 0, p.q_rows);
  const int h = (int)tg.y;
  for (int r = 0; r < MFS_CLEAR_ROWS_PER_TG; ++r) {
    const int row = (int)tg.x * MFS_CLEAR_ROWS_PER_TG + r;
    if (row >= p.q_rows) continue;
    if (row < covered && !(mfs_seqused_q && p.batch > 0)) continue;
    if (row < covered && row_is_used(p, cu_seqlens_q, seqused_q, row, lane)) continue;
    device T* o_row = out + (long)row * p.o_row_stride + (long)h * p.o_head_stride;
    for (int d = (int)lane; d < p.head_dim_v; d += 32) o_row[d] = T(0.0f);
    if (mfs_write_lse && lane == 0) {
      store_lse(lse, (long)h * p.lse_head_stride + row, kMaskedScore);
    }
  }
}

#define MFS_STR_(x) #x
#define MFS_STR(x) MFS_STR_(x)
#define MFS_CAT4_(a, b, c, d) a##b##c##d
#define MFS_CAT4(a, b, c, d) MFS_CAT4_(a, b, c, d)
#define MFS_CAT2_(a, b) a##b
#define MFS_CAT2(a, b) MFS_CAT2_(a, b)

#define MFS_INSTANTIATE_DECODE(T, tname, D)                                         \
  template [[host_name(MFS_STR(MFS_CAT4(mfs_decode_, tname, _d, D)))]] [[kernel]] \
  decltype(mfs_decode<T, D>) mfs_decode<T, D>;

#define MFS_INSTANTIATE_DECODE_DTYPES(D)  \
  MFS_INSTANTIATE_DECODE(float, f32, D)   \
  MFS_INSTANTIATE_DECODE(half, f16, D)    \
  MFS_INSTANTIATE_DECODE(bfloat, bf16, D)

// Keep in step with mfs_head_dim_tile_at() (test_metal_design.py checks every plan pick exists).
MFS_INSTANTIATE_DECODE_DTYPES(32)
MFS_INSTANTIATE_DECODE_DTYPES(64)
MFS_INSTANTIATE_DECODE_DTYPES(72)
MFS_INSTANTIATE_DECODE_DTYPES(80)
MFS_INSTANTIATE_DECODE_DTYPES(96)
MFS_INSTANTIATE_DECODE_DTYPES(128)
MFS_INSTANTIATE_DECODE_DTYPES(192)
MFS_INSTANTIATE_DECODE_DTYPES(256)
MFS_INSTANTIATE_DECODE_DTYPES(512)

#define MFS_INSTANTIATE_BY_DTYPE(fn, T, tname)                                    \
  template [[host_name(MFS_STR(MFS_CAT2(fn, tname)))]] [[kernel]]                 \
  decltype(fn<T>) fn<T>;

MFS_INSTANTIATE_BY_DTYPE(mfs_decode_reduce, float, _f32)
MFS_INSTANTIATE_BY_DTYPE(mfs_decode_reduce, half, _f16)
MFS_INSTANTIATE_BY_DTYPE(mfs_decode_reduce, bfloat, _bf16)
MFS_INSTANTIATE_BY_DTYPE(mfs_clear_rows, float, _f32)
MFS_INSTANTIATE_BY_DTYPE(mfs_clear_rows, half, _f16)
MFS_INSTANTIATE_BY_DTYPE(mfs_clear_rows, bfloat, _bf16)
