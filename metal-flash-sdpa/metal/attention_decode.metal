// Decode (at most MFS_DECODE_MAX_Q queries per sequence) and the small kernels around it.
//
// mfs_decode: one threadgroup = the query rows of `heads_per_tg` query heads that share one KV
// head (a whole GQA group when it fits in 32 SIMD-groups), for one sequence and one key split.
// One SIMD-group owns one (head, query row); its lanes split the head dim (lane d, d + 32, ...).
// K/V rows are staged in threadgroup memory once per threadgroup, so each K/V row is read from
// device memory once for every query head of the group. With num_splits > 1 (long keys, few
// threadgroups) each split writes an unnormalised partial (o, m, l) to scratch and
// mfs_decode_reduce combines them (and the sink) into out and lse.
//
// mfs_clear_rows: zeros the rows of a varlen q past cu_seqlens_q[batch] (functional form), whose
// position the host cannot read on the GPU.
#include "attention_kernel_common.h"

template <typename T, int D>
[[kernel]] void mfs_decode(
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
    device float* partial_o [[buffer(MFS_BUF_SCRATCH0)]],
    device float* partial_ml [[buffer(MFS_BUF_SCRATCH1)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalLaunchArgs& a [[buffer(MFS_BUF_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint tid [[thread_index_in_threadgroup]],
    uint sg [[simdgroup_index_in_threadgroup]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int BK = mfs_decode_bk(D, (int)sizeof(T));
  constexpr int E = (D + 31) / 32;  // head-dim elements per lane
  // One declaration holding both tiles (K rows, then V rows).
  threadgroup T kv_tiles[mfs_decode_tg_bytes(D, (int)sizeof(T)) / (int)sizeof(T)];
  threadgroup T* k_tile = kv_tiles;
  threadgroup T* v_tile = kv_tiles + BK * D;
  threadgroup int* pages = (threadgroup int*)(kv_tiles + 2 * BK * D);  // paged K/V

  const int split = (int)tg.x;
  const int b = (int)tg.z;
  const int group = p.heads_q / p.heads_kv;
  const int parts = group / a.heads_per_tg;  // threadgroups per GQA group
  const int hk = (int)tg.y / parts;
  const int h = hk * group + ((int)tg.y % parts) * a.heads_per_tg + (int)sg / a.rows_per_head;
  const int row = (int)sg % a.rows_per_head;
  const int nt = 32 * a.heads_per_tg * a.rows_per_head;

  const SequenceRows s = sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_k, b, lane);
  const int rows = min(s.seqlen_q, a.rows_per_head);
  if (rows == 0) return;  // the whole threadgroup
  const bool active = row < rows;  // the whole SIMD-group
  KeyRange mine = {0, 0};
  if (active) mine = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const KeyRange hull =
      visible_keys_for_rows(0, rows, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const int split_begin = split * a.keys_per_split;
  const int kb = max(hull.begin, split_begin);
  const int ke = min(hull.end, split_begin + a.keys_per_split);
  const ScoreRule rule = score_rule(p, alibi_slopes, s, b, h, lane);
  const int hd = p.head_dim, hdv = p.head_dim_v;

  float qv[E];
  float o[E];
  const device T* q_row = q + q_row_offset(p, s, b, row) + (long)h * p.q_head_stride;
  for (int e = 0; e < E; ++e) {
    const int d = (int)lane + 32 * e;
    qv[e] = (active && d < hd) ? float(q_row[d]) : 0.0f;
    o[e] = 0.0f;
  }
  // The sink joins the softmax here only when this launch writes the final rows.
  const bool with_sink = (p.flags & kHasSinks) != 0 && a.num_splits == 1;
  RowState st = row_state_start(with_sink, with_sink ? sink_log2(sinks, h, lane, mfs_sink_dtype) : 0.0f);

  const bool paged = (p.flags & kPagedKV) != 0;
  const long k_head = (long)hk * p.k_head_stride;
  const long v_head = (long)hk * p.v_head_stride;
  const int qc = hd / 8, vc = hdv / 8;
  for (int k0 = kb; k0 < ke; k0 += BK) {
    const int kn = min(BK, ke - k0);
    threadgroup_barrier(mem_flags::mem_threadgroup);  // every SIMD-group is done with the last rows
    if (paged) {  // each row's page, looked up once (the whole threadgroup takes this branch)
      for (int r = (int)tid; r < kn; r += nt) pages[r] = key_page(p, block_table, b, k0 + r);
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    for (int i = (int)tid; i < kn * qc; i += nt) {
      const int r = i / qc, c = i - (i / qc) * qc;
      const int page = paged ? pages[r] : 0;
      const device T* src = k + key_row_offset(p, s, b, k0 + r, page, p.k_batch_stride,
                                               p.k_row_stride) + k_head + c * 8;
      for (int e = 0; e < 8; ++e) k_tile[r * D + c * 8 + e] = src[e];
    }
    for (int i = (int)tid; i < kn * vc; i += nt) {
      const int r = i / vc, c = i - (i / vc) * vc;
      const int page = paged ? pages[r] : 0;
      const device T* src = v + key_row_offset(p, s, b, k0 + r, page, p.v_batch_stride,
                                               p.v_row_stride) + v_head + c * 8;
      for (int e = 0; e < 8; ++e) v_tile[r * D + c * 8 + e] = src[e];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the rows are staged
    if (!active) continue;

    float x[BK];
    float tile_max = MFS_MASKED;
    for (int j = 0; j < BK; ++j) {
      x[j] = MFS_MASKED;
      if (j >= kn) continue;
      float partial = 0.0f;
      for (int e = 0; e < E; ++e) {
        const int d = (int)lane + 32 * e;
        if (d < hd) partial += qv[e] * float(k_tile[j * D + d]);
      }
      x[j] = logit_log2(rule, simd_sum(partial), row, k0 + j, mine);
      tile_max = max(tile_max, x[j]);
    }
    const float m_new = max(st.m, tile_max);
    const float base = softmax_base(m_new);
    const float factor = exp2(st.m - base);
    for (int e = 0; e < E; ++e) o[e] *= factor;
    float row_sum = 0.0f;
    for (int j = 0; j < BK; ++j) {
      if (j >= kn) continue;
      const float pj = exp2(x[j] - base);
      row_sum += pj;
      for (int e = 0; e < E; ++e) {
        const int d = (int)lane + 32 * e;
        if (d < hdv) o[e] += pj * float(v_tile[j * D + d]);
      }
    }
    st.l = st.l * factor + row_sum;
    st.m = m_new;
  }
  if (!active) return;

  const bool none = mine.end <= mine.begin;
  if (a.num_splits == 1) {
    const float inv = (none || !(st.l > 0.0f)) ? 0.0f : 1.0f / st.l;
    device T* o_row = out + o_row_offset(p, s, b, row) + (long)h * p.o_head_stride;
    for (int e = 0; e < E; ++e) {
      const int d = (int)lane + 32 * e;
      if (d < hdv) o_row[d] = T(o[e] * inv);
    }
    if ((p.flags & kWriteLse) && lane == 0) lse[lse_offset(p, s, b, h, row)] = row_lse(st, none);
  } else {
    const long slot = (((long)b * p.heads_q + h) * a.rows_per_head + row) * a.num_splits + split;
    for (int e = 0; e < E; ++e) {
      const int d = (int)lane + 32 * e;
      if (d < hdv) partial_o[slot * hdv + d] = o[e];
    }
    if (lane == 0) {
      partial_ml[slot * 2] = st.m;
      partial_ml[slot * 2 + 1] = st.l;
    }
  }
}

// Combines the splits of one (sequence, head, row): grid (rows_per_head, heads_q, batch), one
// SIMD-group per threadgroup. Lane i holds split i's (m, l) (num_splits <= 32, the plan's limit),
// so each partial is read once.
template <typename T>
[[kernel]] void mfs_decode_reduce(
    device T* out [[buffer(MFS_BUF_OUT)]],
    device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    const device int* cu_seqlens_k [[buffer(MFS_BUF_CU_K)]],
    const device int* seqused_k [[buffer(MFS_BUF_SEQUSED_K)]],
    const device float* sinks [[buffer(MFS_BUF_SINKS)]],
    const device float* partial_o [[buffer(MFS_BUF_SCRATCH0)]],
    const device float* partial_ml [[buffer(MFS_BUF_SCRATCH1)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    constant MetalLaunchArgs& a [[buffer(MFS_BUF_ARGS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]]) {
  constexpr int E = MFS_MAX_HEAD_DIM / 32;
  const int row = (int)tg.x, h = (int)tg.y, b = (int)tg.z;
  const SequenceRows s = sequence_rows(p, cu_seqlens_q, cu_seqlens_k, seqused_k, b, lane);
  if (row >= min(s.seqlen_q, a.rows_per_head)) return;  // the whole SIMD-group
  const KeyRange mine = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  const bool none = mine.end <= mine.begin;
  const bool with_sink = (p.flags & kHasSinks) != 0;
  const float sink = with_sink ? sink_log2(sinks, h, lane, mfs_sink_dtype) : MFS_MASKED;
  const int splits = min(a.num_splits, 32);
  const long slot0 = (((long)b * p.heads_q + h) * a.rows_per_head + row) * a.num_splits;

  const bool mine_split = (int)lane < splits;
  const float m_i = mine_split ? partial_ml[(slot0 + lane) * 2] : MFS_MASKED;
  const float l_i = mine_split ? partial_ml[(slot0 + lane) * 2 + 1] : 0.0f;
  RowState st;
  st.m = max(sink, simd_max(m_i));
  const float base = softmax_base(st.m);
  const float w_i = mine_split ? exp2(m_i - base) : 0.0f;  // split i's weight
  st.l = simd_sum(l_i * w_i) + (with_sink ? exp2(sink - base) : 0.0f);
  const float inv = (none || !(st.l > 0.0f)) ? 0.0f : 1.0f / st.l;

  float acc[E];
  for (int e = 0; e < E; ++e) acc[e] = 0.0f;
  for (int i = 0; i < splits; ++i) {
    const float w = simd_shuffle(w_i, (ushort)i);
    for (int e = 0; e < E; ++e) {
      const int d = (int)lane + 32 * e;
      if (d < p.head_dim_v) acc[e] += partial_o[(slot0 + i) * p.head_dim_v + d] * w;
    }
  }
  device T* o_row = out + o_row_offset(p, s, b, row) + (long)h * p.o_head_stride;
  for (int e = 0; e < E; ++e) {
    const int d = (int)lane + 32 * e;
    if (d < p.head_dim_v) o_row[d] = T(acc[e] * inv);
  }
  if ((p.flags & kWriteLse) && lane == 0) lse[lse_offset(p, s, b, h, row)] = row_lse(st, none);
}

// Rows of a varlen q at or past cu_seqlens_q[batch] (clamped to q_rows) belong to no sequence:
// zeros in out, -inf in lse. Grid (ceil(q_rows / MFS_CLEAR_ROWS_PER_TG), heads_q), 32 threads.
template <typename T>
[[kernel]] void mfs_clear_rows(
    device T* out [[buffer(MFS_BUF_OUT)]],
    device float* lse [[buffer(MFS_BUF_LSE)]],
    const device int* cu_seqlens_q [[buffer(MFS_BUF_CU_Q)]],
    constant AttentionParams& p [[buffer(MFS_BUF_PARAMS)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint lane [[thread_index_in_simdgroup]]) {
  const int covered = mfs_clamp(uniform_load(cu_seqlens_q, p.batch, lane), 0, p.q_rows);
  const int h = (int)tg.y;
  for (int r = 0; r < MFS_CLEAR_ROWS_PER_TG; ++r) {
    const int row = (int)tg.x * MFS_CLEAR_ROWS_PER_TG + r;
    if (row < covered || row >= p.q_rows) continue;
    device T* o_row = out + (long)row * p.o_row_stride + (long)h * p.o_head_stride;
    for (int d = (int)lane; d < p.head_dim_v; d += 32) o_row[d] = T(0.0f);
    if ((p.flags & kWriteLse) && lane == 0) {
      lse[(long)h * p.lse_head_stride + row] = MFS_NEG_INF;
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

#define MFS_INSTANTIATE_BY_DTYPE(fn, T, tname)                                    \
  template [[host_name(MFS_STR(MFS_CAT2(fn, tname)))]] [[kernel]]                 \
  decltype(fn<T>) fn<T>;

MFS_INSTANTIATE_BY_DTYPE(mfs_decode_reduce, float, _f32)
MFS_INSTANTIATE_BY_DTYPE(mfs_decode_reduce, half, _f16)
MFS_INSTANTIATE_BY_DTYPE(mfs_decode_reduce, bfloat, _bf16)
MFS_INSTANTIATE_BY_DTYPE(mfs_clear_rows, float, _f32)
MFS_INSTANTIATE_BY_DTYPE(mfs_clear_rows, half, _f16)
MFS_INSTANTIATE_BY_DTYPE(mfs_clear_rows, bfloat, _bf16)
