// The cpu backward pass (FlashAttention-2): D = rowsum(dO * O) and the sink gradient per row, then
// one pass over work items (sequence, kv head): each runs the sequence's key tiles in order, every
// tile giving its dk and dv (summed over the GQA group's heads) and adding its share of dq to the
// item's fp32 accumulator of the group's rows, which is written once at the end. S and dP are
// computed once per (row block, key tile), not once per pass. Every output row is computed by one
// work item in a fixed order: no atomics, bitwise repeatable. Extra memory: D, one float per row
// and head, plus per thread the scratch and the dq accumulator of one sequence's group of heads.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "../common/attention_backend.h"
#include "../common/attention_semantics.h"
#include "backward_job.h"
#include "cpu_features.h"
#include "cpu_sequences.h"
#include "mask_tiles.h"

namespace {

BackwardKernel pick_backward_kernel(ElementType dtype) {
#ifdef MFS_HAVE_X86_KERNELS
  const CpuIsa isa = detected_cpu_isa();
  if (isa == CpuIsa::kAvx512Bf16 && dtype == ElementType::kBFloat16) {
    return avx512_bf16_backward_kernel();
  }
  if (isa == CpuIsa::kAvx512 || isa == CpuIsa::kAvx512Bf16) return avx512_backward_kernel();
  if (isa == CpuIsa::kAvx2) return avx2_backward_kernel();
#endif
  return portable_backward_kernel();
}

ElementType element_type(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return ElementType::kFloat16;
    case at::kBFloat16: return ElementType::kBFloat16;
    default: return ElementType::kFloat32;
  }
}

// Below this much work per thread (~ multiply-adds), fewer threads.
constexpr int64_t kMinCostPerThread = int64_t(1) << 21;

// Runs `count` independent work items, longest first (the caller sorts), on torch's pool.
template <typename Fn>
void run_items(size_t count, int64_t total_cost, Fn&& fn) {
  if (count == 0) return;
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>({at::get_num_threads(), int64_t(count), total_cost / kMinCostPerThread}));
  std::atomic<size_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) fn(i);
  });
}

struct WorkItem {
  int batch, kv_head;
  int64_t cost;
};

void sort_by_cost(std::vector<WorkItem>& items) {
  std::stable_sort(items.begin(), items.end(),
                   [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
}

// Everything the passes share.
struct Call {
  const AttentionParams& p;
  const std::vector<Sequence>& seqs;
  ElementType dtype;
  size_t esize;
  const char *q, *k, *v, *dout;
  char *dq, *dk, *dv;
  int64_t dout_batch, dout_row, dout_head;  // element strides of dout
  int64_t dq_batch, dq_row, dq_head;
  int64_t dk_batch, dk_row, dk_head, dv_batch, dv_row, dv_head;
  const float* lse;
  const float* alibi;
  const float* d;  // D, indexed like lse rows: [row_base(b) + row] * heads_q + h
  int64_t rows_per_batch;  // fixed length: seqlen_q; varlen: 0 (rows are global tokens)
  const MaskTiles& mask;
  float* dmask;  // fp32 [batch, heads_q, seqlen_q, seqlen_k] (contiguous), or null

  int64_t d_index(int b, int h, int row) const {
    const int64_t token = int64_t(b) * rows_per_batch + seqs[b].q_begin + row;
    return token * p.heads_q + h;
  }
  float lse_of(int b, int h, int row) const {
    return lse[b * p.lse_batch_stride + h * p.lse_head_stride + seqs[b].q_begin + row];
  }
};

BackwardRow make_row(const Call& c, int b, int h, int row) {
  const AttentionParams& p = c.p;
  const Sequence& s = c.seqs[b];
  const int64_t token = s.q_begin + row;
  BackwardRow r;
  r.q = c.q + (b * p.q_batch_stride + token * p.q_row_stride + h * p.q_head_stride) * c.esize;
  r.dout = c.dout + (b * c.dout_batch + token * c.dout_row + h * c.dout_head) * c.esize;
  r.dq_acc = nullptr;  // the driver's accumulator
  r.lse = c.lse_of(b, h, row);
  r.d = c.d[c.d_index(b, h, row)];
  const KeyRange range = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
  r.key_begin = range.begin;
  r.key_end = range.end;
  r.diagonal = row + s.seqlen_k - s.seqlen_q;
  r.slope = c.alibi ? c.alibi[int64_t(b) * p.alibi_batch_stride + h] : 0.0f;
  r.mask = c.mask.row(b, h, row);
  r.dmask = c.dmask ? c.dmask + ((int64_t(b) * p.heads_q + h) * p.seqlen_q + row) * p.seqlen_k
                    : nullptr;
  r.dropout = dropout_row(p, b, s, row, h);
  return r;
}

BackwardJob make_job(const Call& c, int b, int kv_head) {
  const AttentionParams& p = c.p;
  const Sequence& s = c.seqs[b];
  BackwardJob job{};
  job.dtype = c.dtype;
  job.head_dim = p.head_dim;
  job.head_dim_v = p.head_dim_v;
  job.scale = p.scale;
  job.softcap = p.softcap;
  job.has_alibi = c.alibi != nullptr;
  job.mask = c.mask.reader;
  job.dropout = dropout_rule(p);
  job.k.base = c.k + (b * p.k_batch_stride + int64_t(s.k_begin) * p.k_row_stride + kv_head * p.k_head_stride) * c.esize;
  job.k.row_stride = p.k_row_stride * c.esize;
  job.v.base = c.v + (b * p.v_batch_stride + int64_t(s.k_begin) * p.v_row_stride + kv_head * p.v_head_stride) * c.esize;
  job.v.row_stride = p.v_row_stride * c.esize;
  return job;
}

// D = rowsum(dO * O) for every row of every sequence (fp32, in a fixed order), and the sink
// gradient d s_aux[h] = sum over rows of sink_gradient(), summed per head in row order.
void row_terms(const Call& c, const AttentionTensors& t, const AttentionGradients& g,
               std::vector<float>& d) {
  const AttentionParams& p = c.p;
  const at::Tensor out = t.out.to(at::kFloat);
  const at::Tensor dout = g.dout.to(at::kFloat);
  const float* o = out.data_ptr<float>();
  const float* dO = dout.data_ptr<float>();
  const int r = (p.flags & kVarlenQ) ? 0 : 1;
  const int64_t o_b = r ? out.stride(0) : 0, o_row = out.stride(r), o_h = out.stride(r + 1);
  const int64_t g_b = r ? dout.stride(0) : 0, g_row = dout.stride(r), g_h = dout.stride(r + 1);
  at::parallel_for(0, p.batch, 1, [&](int64_t b0, int64_t b1) {
    for (int b = int(b0); b < int(b1); ++b) {
      const Sequence& s = c.seqs[b];
      for (int row = 0; row < s.seqlen_q; ++row) {
        const int64_t token = s.q_begin + row;
        for (int h = 0; h < p.heads_q; ++h) {
          const float* orow = o + b * o_b + token * o_row + h * o_h;
          const float* grow = dO + b * g_b + token * g_row + h * g_h;
          double acc = 0.0;  // O(rows) work: a long fp32 sum would cost accuracy for nothing
          for (int e = 0; e < p.head_dim_v; ++e) acc += double(orow[e]) * grow[e];
          d[c.d_index(b, h, row)] = float(acc);
        }
      }
    }
  });
  if (!(p.flags & kHasSinks)) return;
  const at::Tensor sinks = t.sinks->to(at::kFloat).contiguous();
  float* ds = g.ds_aux.data_ptr<float>();
  for (int h = 0; h < p.heads_q; ++h) {
    const float sink = sinks.data_ptr<float>()[h];
    double acc = 0.0;  // a sum over every row of the batch
    for (int b = 0; b < p.batch; ++b) {
      for (int row = 0; row < c.seqs[b].seqlen_q; ++row) {
        acc += sink_gradient(sink, c.lse_of(b, h, row), d[c.d_index(b, h, row)]);
      }
    }
    ds[h] = float(acc);
  }
}

// Per-thread memory kept across calls (as the forward's).
struct BackwardWorkspace {
  std::vector<char> buffer;
  std::vector<BackwardRow> group_rows, tile_rows;
  std::vector<float> dq_acc;
  std::vector<void*> dk_rows, dv_rows;

  void* scratch(size_t bytes) {
    if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t(63));
  }
};

BackwardWorkspace& backward_workspace() {
  static thread_local BackwardWorkspace workspace;
  return workspace;
}

template <typename T>
void store_row(const float* src, int n, void* dst) {
  T* d = static_cast<T*>(dst);
  for (int i = 0; i < n; ++i) d[i] = T(src[i]);
}

void store_dq_row(ElementType dtype, const float* src, int n, void* dst) {
  switch (dtype) {
    case ElementType::kFloat32: return store_row<float>(src, n, dst);
    case ElementType::kFloat16: return store_row<c10::Half>(src, n, dst);
    case ElementType::kBFloat16: return store_row<c10::BFloat16>(src, n, dst);
  }
}

// One work item: the key tiles of sequence w.batch for kv head w.kv_head, in order, over the rows
// of every head of the kv head's group that see each tile; then the group's dq rows.
void run_item(const Call& c, const BackwardKernel& kernel, size_t scratch_bytes, const WorkItem& w) {
  const AttentionParams& p = c.p;
  const int group = p.heads_q / p.heads_kv, hd = p.head_dim;
  const Sequence& s = c.seqs[w.batch];
  BackwardWorkspace& ws = backward_workspace();
  // Rows in (head of the group, row) order; accumulator rows in the same order.
  ws.dq_acc.assign(size_t(group) * s.seqlen_q * hd, 0.0f);
  ws.group_rows.clear();
  for (int hh = 0; hh < group; ++hh) {
    for (int row = 0; row < s.seqlen_q; ++row) {
      ws.group_rows.push_back(make_row(c, w.batch, w.kv_head * group + hh, row));
      ws.group_rows.back().dq_acc = ws.dq_acc.data() + (size_t(hh) * s.seqlen_q + row) * hd;
    }
  }
  ws.dk_rows.resize(kBackwardKeyTile);
  ws.dv_rows.resize(kBackwardKeyTile);
  BackwardJob job = make_job(c, w.batch, w.kv_head);
  void* scratch = ws.scratch(scratch_bytes);
  for (int k0 = 0; k0 < s.seqlen_k; k0 += kBackwardKeyTile) {
    const int k1 = std::min(s.seqlen_k, k0 + kBackwardKeyTile);
    const KeyRange visible = visible_queries_for_keys(k0, k1, s.seqlen_q, s.seqlen_k,
                                                      p.window_left, p.window_right);
    if (visible.end <= visible.begin) continue;  // no query sees these keys: dk = dv = 0
    ws.tile_rows.clear();
    for (int hh = 0; hh < group; ++hh) {
      const BackwardRow* first = ws.group_rows.data() + size_t(hh) * s.seqlen_q;
      for (const BackwardRow* row = first + visible.begin; row < first + visible.end; ++row) {
        // attn_mask: a row whose tiles are all closed takes no part (no products for it).
        bool any_open = false;
        for (int t = k0 / kMaskTileKeys; t * kMaskTileKeys < k1 && !any_open; ++t) {
          any_open = c.mask.reader.tile_state(row->mask, t) != kMaskTileClosed;
        }
        if (any_open) ws.tile_rows.push_back(*row);
      }
    }
    if (ws.tile_rows.empty()) continue;
    for (int j = k0; j < k1; ++j) {
      const int64_t key = s.k_begin + j;
      ws.dk_rows[j - k0] = c.dk + (w.batch * c.dk_batch + key * c.dk_row + w.kv_head * c.dk_head) * c.esize;
      ws.dv_rows[j - k0] = c.dv + (w.batch * c.dv_batch + key * c.dv_row + w.kv_head * c.dv_head) * c.esize;
    }
    job.key_begin = k0;
    job.key_end = k1;
    job.rows = ws.tile_rows.data();
    job.row_count = int(ws.tile_rows.size());
    job.dk_rows = ws.dk_rows.data();
    job.dv_rows = ws.dv_rows.data();
    kernel.key_tile(job, scratch);
  }
  for (int hh = 0; hh < group; ++hh) {
    const int h = w.kv_head * group + hh;
    for (int row = 0; row < s.seqlen_q; ++row) {
      const int64_t token = s.q_begin + row;
      char* dq = c.dq + (w.batch * c.dq_batch + token * c.dq_row + h * c.dq_head) * c.esize;
      store_dq_row(c.dtype, ws.dq_acc.data() + (size_t(hh) * s.seqlen_q + row) * hd, hd, dq);
    }
  }
}

// Every (sequence, kv head) with queries and keys, longest first.
void backward_pass(const Call& c, const BackwardKernel& kernel, size_t scratch_bytes) {
  const AttentionParams& p = c.p;
  const int group = p.heads_q / p.heads_kv;
  const int64_t dims = p.head_dim + p.head_dim_v;
  std::vector<WorkItem> items;
  int64_t total = 0;
  for (int b = 0; b < p.batch; ++b) {
    const Sequence& s = c.seqs[b];
    int64_t cost = 0;  // ~ multiply-adds of the five products
    for (int k0 = 0; k0 < s.seqlen_k; k0 += kBackwardKeyTile) {
      const int k1 = std::min(s.seqlen_k, k0 + kBackwardKeyTile);
      const KeyRange rows = visible_queries_for_keys(k0, k1, s.seqlen_q, s.seqlen_k,
                                                     p.window_left, p.window_right);
      if (rows.end > rows.begin) cost += int64_t(group) * (rows.end - rows.begin + 16) * (k1 - k0) * dims * 3;
    }
    if (cost == 0 || s.seqlen_q <= 0) continue;  // nothing flows back: the gradients stay 0
    for (int kvh = 0; kvh < p.heads_kv; ++kvh) {
      items.push_back({b, kvh, cost});
      total += cost;
    }
  }
  sort_by_cost(items);
  run_items(items.size(), total, [&](size_t i) { run_item(c, kernel, scratch_bytes, items[i]); });
}

}  // namespace

void run_attention_backward(const AttentionParams& p, const AttentionTensors& t,
                            const AttentionGradients& g) {
  const std::vector<Sequence> seqs = resolve_sequences(p, t);
  const bool varlen_q = p.flags & kVarlenQ;
  const int r = varlen_q ? 0 : 1;
  const int64_t rows_per_batch = varlen_q ? 0 : p.q_rows;
  const int64_t total_rows = varlen_q ? p.q_rows : int64_t(p.batch) * p.q_rows;
  std::vector<float> d(size_t(total_rows) * p.heads_q, 0.0f);
  const ElementType dtype = element_type(t.q.scalar_type());
  const bool k_batched = g.dk.dim() == 4;
  const MaskTiles mask = summarize_mask(p, t);
  Call c{p,
         seqs,
         dtype,
         element_size(dtype),
         static_cast<const char*>(t.q.data_ptr()),
         static_cast<const char*>(t.k.data_ptr()),
         static_cast<const char*>(t.v.data_ptr()),
         static_cast<const char*>(g.dout.data_ptr()),
         static_cast<char*>(g.dq.data_ptr()),
         static_cast<char*>(g.dk.data_ptr()),
         static_cast<char*>(g.dv.data_ptr()),
         r ? g.dout.stride(0) : 0, g.dout.stride(r), g.dout.stride(r + 1),
         r ? g.dq.stride(0) : 0, g.dq.stride(r), g.dq.stride(r + 1),
         k_batched ? g.dk.stride(0) : 0, g.dk.stride(k_batched ? 1 : 0), g.dk.stride(k_batched ? 2 : 1),
         k_batched ? g.dv.stride(0) : 0, g.dv.stride(k_batched ? 1 : 0), g.dv.stride(k_batched ? 2 : 1),
         t.lse.data_ptr<float>(),
         p.flags & kHasAlibi ? t.alibi_slopes->data_ptr<float>() : nullptr,
         d.data(),
         rows_per_batch,
         mask,
         g.dmask.defined() ? g.dmask.data_ptr<float>() : nullptr};
  row_terms(c, t, g, d);
  const BackwardKernel kernel = pick_backward_kernel(dtype);
  const size_t scratch_bytes = kernel.scratch_bytes(p.head_dim, p.head_dim_v);
  backward_pass(c, kernel, scratch_bytes);
}
