// Prefill: one threadgroup owns BQ = 32 query rows of one (sequence, query head); its 4
// SIMD-groups own 8 rows each. K and V stream through threadgroup memory in tiles of BK keys;
// S = Q.K^T and O += P.V are simdgroup_matrix 8x8 MMAs into fp32 accumulators; the softmax is
// online, in log2 units (scale x log2(e) folded into one multiply when there is no softcap or
// ALiBi). Key tiles outside the union of the tile's rows' visible ranges (causal, window) are
// never loaded nor computed; the mask is applied per element only inside the visited range.
//
// Head dims: instantiated for the tiles of metal_kernel_config.h; a call with a smaller head dim
// runs on the next tile up and skips the 8-wide chunks past its head_dim / head_dim_v.
#include "attention_kernel_common.h"

// Apple's simdgroup_matrix<T, 8, 8> lane layout: lane holds (row, col) and (row, col + 1).
inline int frag_row(uint lane) { return (int)(((lane / 4) & 4) + ((lane / 2) % 4)); }
inline int frag_col(uint lane) { return (int)(((lane / 4) & 2) * 2 + (lane % 2) * 2); }

template <typename T, int D>
[[kernel]] void mfs_prefill(
    const device T* q [[buffer(MFS_BUF_Q)]],
    const device T* k [[buffer(MFS_BUF_K)]],
    const device T* v [[buffer(MFS_BUF_V)]],
    device T* out [[buffer(MFS_BUF_OUT)]],
    device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device int* block_table [[buffer(MFS_BUF_BLOCK_TABLE)]],
    const device float* alibi_slopes [[buffer(MFS_BUF_ALIBI)]],
    const device float* sinks [[buffer(MFS_BUF_SINKS)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int ES = sizeof(T);
  constexpr int BQ = MFS_PREFILL_BQ;
  constexpr int BK = mfs_prefill_bk(D, ES);
  constexpr int LD = mfs_prefill_ld(D, ES);
  constexpr int NT = 32 * MFS_PREFILL_SIMDGROUPS;
  constexpr int DC = D / 8;   // 8-wide chunks of the head-dim tile
  constexpr int KC = BK / 8;  // 8-key chunks of a key tile
  // One declaration holding both tiles (K rows, then V rows) and the rows' pages (paged K/V).
  threadgroup T kv_tiles[mfs_prefill_tg_bytes(D, ES) / ES];
  threadgroup T* k_tile = kv_tiles;
  threadgroup T* v_tile = kv_tiles + BK * LD;
  threadgroup int* pages = (threadgroup int*)(kv_tiles + 2 * BK * LD);

  const int b = (int)tg.z;
  const int h = (int)tg.y;
  const SequenceRows s = sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_k, b, lane);
  const int row0 = (int)tg.x * BQ;
  if (row0 >= s.seqlen_q) return;  // the whole threadgroup: past this sequence's queries
  const int rows_end = min(row0 + BQ, s.seqlen_q);
  const int hk = h / (p.heads_q / p.heads_kv);
  const int qc = p.head_dim / 8;    // chunks of q/k in use
  const int vc = p.head_dim_v / 8;  // chunks of v/out in use

  const int fr = frag_row(lane);
  const int fc = frag_col(lane);
  const int row = row0 + (int)sg * 8 + fr;  // this lane's query row (of the sequence)
  const bool row_valid = row < s.seqlen_q;
  KeyRange mine = {0, 0};
  if (row_valid) mine = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const KeyRange hull =
      visible_keys_for_rows(row0, rows_end, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  // This SIMD-group's rows and the keys they see: 8-key chunks outside are neither multiplied
  // nor accumulated (their scores would all be masked), and a SIMD-group without rows (the last,
  // partial query tile) only helps stage the tiles.
  const int sg_row0 = row0 + (int)sg * 8;
  const bool sg_has_rows = sg_row0 < s.seqlen_q;
  KeyRange sg_keys = {0, 0};
  if (sg_has_rows) {
    sg_keys = visible_keys_for_rows(sg_row0, min(sg_row0 + 8, s.seqlen_q), s.seqlen_q,
                                    s.seqlen_k, p.window_left, p.window_right);
  }
  const ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);

  // Q rows of this SIMD-group, in registers as 8x8 fragments (rows past the sequence: zeros).
  simdgroup_float8x8 qf[DC];
  const device T* q_row = q + q_row_offset(p, s, b, row) + (long)h * p.q_head_stride;
  for (int c = 0; c < DC; ++c) {
    float e0 = 0.0f, e1 = 0.0f;
    if (c < qc && row_valid) {
      e0 = float(q_row[c * 8 + fc]);
      e1 = float(q_row[c * 8 + fc + 1]);
    }
    qf[c].thread_elements()[0] = e0;
    qf[c].thread_elements()[1] = e1;
  }

  const bool with_sink = (p.flags & kHasSinks) != 0;
  RowState st = row_state_start(with_sink, with_sink ? sink_log2(sinks, h, lane, mfs_sink_dtype) : 0.0f);
  simdgroup_float8x8 of[DC];
  for (int c = 0; c < DC; ++c) of[c] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);

  const bool paged = (p.flags & kPagedKV) != 0;
  const long k_head = (long)hk * p.k_head_stride;
  const long v_head = (long)hk * p.v_head_stride;
  for (int k0 = hull.begin; k0 < hull.end; k0 += BK) {
    const int kn = min(BK, hull.end - k0);  // keys of this tile

    // Stage K and V rows [k0, k0 + kn) in threadgroup memory; V rows past kn are zeroed (P is 0
    // there, and 0 x NaN would not be). K rows past kn are never used: their scores are masked.
    threadgroup_barrier(mem_flags::mem_threadgroup);  // every SIMD-group is done with the last tile
    if (paged) {  // each row's page, looked up once (the whole threadgroup takes this branch)
      for (int r = (int)tid; r < kn; r += NT) pages[r] = key_page(p, block_table, b, k0 + r);
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    for (int i = (int)tid; i < kn * qc; i += NT) {
      const int r = i / qc, c = i - (i / qc) * qc;
      const int page = paged ? pages[r] : 0;
      const device T* src = k + key_row_offset(p, s, b, k0 + r, page, p.k_batch_stride,
                                               p.k_row_stride) + k_head + c * 8;
      threadgroup T* dst = k_tile + r * LD + c * 8;
      for (int e = 0; e < 8; ++e) dst[e] = src[e];
    }
    for (int i = (int)tid; i < BK * vc; i += NT) {
      const int r = i / vc, c = i - (i / vc) * vc;
      threadgroup T* dst = v_tile + r * LD + c * 8;
      if (r < kn) {
        const int page = paged ? pages[r] : 0;
        const device T* src = v + key_row_offset(p, s, b, k0 + r, page, p.v_batch_stride,
                                                 p.v_row_stride) + v_head + c * 8;
        for (int e = 0; e < 8; ++e) dst[e] = src[e];
      } else {
        for (int e = 0; e < 8; ++e) dst[e] = T(0.0f);
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the tile is complete
    // This SIMD-group's 8-key chunks of the tile: [j_begin, j_end).
    const int j_begin = max(0, (sg_keys.begin - k0) / 8);
    const int j_end = min((kn + 7) / 8, (sg_keys.end - k0 + 7) / 8);
    if (j_begin >= j_end) continue;  // nothing of this tile for these rows (whole SIMD-group)

    // S = Q . K^T for this SIMD-group's 8 rows and the tile's keys. The head dim is summed in
    // groups of 32 (4 MMAs into a zeroed partial, then added to S): fp32 rounding then grows with
    // D / 32 large additions instead of D (scale 1 and head dim 256 need it).
    simdgroup_float8x8 sf[KC];
    for (int j = 0; j < KC; ++j) sf[j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    for (int c0 = 0; c0 < DC; c0 += 4) {
      if (c0 >= qc) continue;
      for (int j = 0; j < KC; ++j) {
        if (j < j_begin || j >= j_end) continue;
        simdgroup_float8x8 part = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
        for (int c = c0; c < c0 + 4 && c < DC; ++c) {
          if (c >= qc) continue;
          simdgroup_float8x8 kt;  // (d, key) = k_tile[key][d]
          kt.thread_elements()[0] = float(k_tile[(j * 8 + fc) * LD + c * 8 + fr]);
          kt.thread_elements()[1] = float(k_tile[(j * 8 + fc + 1) * LD + c * 8 + fr]);
          simdgroup_multiply_accumulate(part, qf[c], kt, part);
        }
        sf[j].thread_elements()[0] += part.thread_elements()[0];
        sf[j].thread_elements()[1] += part.thread_elements()[1];
      }
    }

    // Logits, mask, online softmax. A row's 8 columns of a fragment sit on lanes differing in
    // bits 0 and 3: shuffles over 1 and 8 reduce across them.
    float tile_max = MFS_MASKED;
    for (int j = 0; j < KC; ++j) {
      for (int e = 0; e < 2; ++e) {
        const int key = k0 + j * 8 + fc + e;
        const float x = logit_log2(rule, sf[j].thread_elements()[e], row, key, mine);
        sf[j].thread_elements()[e] = x;
        tile_max = max(tile_max, x);
      }
    }
    tile_max = max(tile_max, simd_shuffle_xor(tile_max, 1));
    tile_max = max(tile_max, simd_shuffle_xor(tile_max, 8));
    const float m_new = max(st.m, tile_max);
    const float base = softmax_base(m_new);
    const float factor = exp2(st.m - base);
    float row_sum = 0.0f;
    for (int j = 0; j < KC; ++j) {
      for (int e = 0; e < 2; ++e) {
        const float pe = exp2(sf[j].thread_elements()[e] - base);
        sf[j].thread_elements()[e] = pe;
        row_sum += pe;
      }
    }
    row_sum += simd_shuffle_xor(row_sum, 1);
    row_sum += simd_shuffle_xor(row_sum, 8);
    st.l = st.l * factor + row_sum;
    st.m = m_new;

    // O = O * factor + P . V
    for (int c = 0; c < DC; ++c) {
      if (c >= vc) continue;
      of[c].thread_elements()[0] *= factor;
      of[c].thread_elements()[1] *= factor;
      for (int j = 0; j < KC; ++j) {
        if (j < j_begin || j >= j_end) continue;
        simdgroup_float8x8 vf;  // (key, dv) = v_tile[key][dv]
        vf.thread_elements()[0] = float(v_tile[(j * 8 + fr) * LD + c * 8 + fc]);
        vf.thread_elements()[1] = float(v_tile[(j * 8 + fr) * LD + c * 8 + fc + 1]);
        simdgroup_multiply_accumulate(of[c], sf[j], vf, of[c]);
      }
    }
  }

  if (!row_valid) return;
  const bool none = mine.end <= mine.begin;
  const float inv = (none || !(st.l > 0.0f)) ? 0.0f : 1.0f / st.l;
  device T* o_row = out + o_row_offset(p, s, b, row) + (long)h * p.o_head_stride;
  for (int c = 0; c < DC; ++c) {
    if (c >= vc) continue;
    o_row[c * 8 + fc] = T(of[c].thread_elements()[0] * inv);
    o_row[c * 8 + fc + 1] = T(of[c].thread_elements()[1] * inv);
  }
  if ((p.flags & kWriteLse) && fc == 0) lse[lse_offset(p, s, b, h, row)] = row_lse(st, none);
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
