// The cpu backend: splits one attention call into tiles (sequence, kv head, q heads of its GQA
// group, query rows), resolves each tile's rows and keys through attention_semantics.h, and runs
// the tiles on torch's thread pool with the fastest tile kernel this cpu supports.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "../common/attention_backend.h"
#include "../common/attention_semantics.h"
#include "cpu_features.h"
#include "cpu_sequences.h"
#include "mask_tiles.h"
#include "tile_job.h"

c10::DeviceType backend_device_type() { return c10::DeviceType::CPU; }

namespace {

// One tile: rows q_begin..q_begin+q_count of heads first_head..first_head+heads (one kv group).
struct WorkItem {
  int batch, kv_head, first_head, heads, q_begin, q_count;
  int64_t cost;  // ~ multiply-adds, counting the key/value streaming of tiles with few rows
};

// Tile shape: ~kMaxTileRows rows, made of as many heads of a GQA group as fit (so K/V are
// streamed once for all of them) times as many query rows as fit.
struct TileShape {
  int q_rows, heads;
};

TileShape choose_tile_shape(int group, int q_len) {
  TileShape s;
  s.q_rows = std::max(1, std::min(q_len, kMaxTileRows / group));
  s.heads = std::min(group, std::max(1, kMaxTileRows / s.q_rows));
  return s;
}

std::vector<WorkItem> plan_work(const AttentionParams& p, const std::vector<Sequence>& seqs) {
  const int group = p.heads_q / p.heads_kv;
  const int64_t dims = p.head_dim + p.head_dim_v;
  std::vector<WorkItem> items;
  for (int b = 0; b < p.batch; ++b) {
    const Sequence& s = seqs[b];
    if (s.seqlen_q <= 0) continue;
    const TileShape shape = choose_tile_shape(group, s.seqlen_q);
    for (int q0 = 0; q0 < s.seqlen_q; q0 += shape.q_rows) {
      const int qn = std::min(shape.q_rows, s.seqlen_q - q0);
      const KeyRange hull = visible_keys_for_rows(q0, q0 + qn, s.seqlen_q, s.seqlen_k, p.window_left,
                                                  p.window_right);
      const int64_t keys = std::max(0, std::min(hull.end, s.seqlen_k) - std::max(hull.begin, 0));
      for (int kvh = 0; kvh < p.heads_kv; ++kvh) {
        for (int h0 = 0; h0 < group; h0 += shape.heads) {
          const int hn = std::min(shape.heads, group - h0);
          items.push_back({b, kvh, kvh * group + h0, hn, q0, qn, (int64_t(hn) * qn + 16) * (keys + 16) * dims});
        }
      }
    }
  }
  // Longest first, handed out dynamically: balances causal and ragged tiles across threads.
  std::stable_sort(items.begin(), items.end(),
                   [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
  return items;
}

TileKernel pick_kernel(ElementType dtype) {
#ifdef MFS_HAVE_X86_KERNELS
  const CpuIsa isa = detected_cpu_isa();
  if (isa == CpuIsa::kAvx512Bf16 && dtype == ElementType::kBFloat16) {
    return avx512_bf16_tile_kernel();
  }
  if (isa == CpuIsa::kAvx512 || isa == CpuIsa::kAvx512Bf16) return avx512_tile_kernel();
  if (isa == CpuIsa::kAvx2) return avx2_tile_kernel();
#else
  (void)dtype;
#endif
  return portable_tile_kernel();
}

ElementType element_type(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return ElementType::kFloat16;
    case at::kBFloat16: return ElementType::kBFloat16;
    default: return ElementType::kFloat32;
  }
}

// Everything a thread needs to turn WorkItems into TileJobs.
struct CallContext {
  const AttentionParams& p;
  const std::vector<Sequence>& seqs;
  ElementType dtype;
  size_t esize;
  char *q, *k, *v, *out;
  float* lse;
  const int32_t* block_table;
  const float* alibi;
  const float* sinks;  // fp32 copy, or null
  const MaskTiles& mask;
};

// The per-row arrays of one tile, owned by one thread.
struct TileRows {
  std::vector<const void*> q;
  std::vector<void*> out;
  std::vector<float*> lse;
  std::vector<int> key_begin, key_end, diagonal;
  std::vector<float> slope, sink;
  std::vector<MaskRow> mask;
  std::vector<DropoutRow> dropout;

  explicit TileRows(int n)
      : q(n), out(n), lse(n), key_begin(n), key_end(n), diagonal(n), slope(n), sink(n), mask(n),
        dropout(n) {}
};

// Kept per thread across calls: decode-style workloads make many small calls, and fresh
// allocations of this size come straight from mmap (page faults on every call).
struct ThreadWorkspace {
  std::vector<char> buffer;
  TileRows rows{kMaxTileRows};

  void* scratch(size_t bytes) {  // 64-byte aligned
    if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t(63));
  }
};

ThreadWorkspace& thread_workspace() {
  static thread_local ThreadWorkspace workspace;
  return workspace;
}

// Below this much work per thread (WorkItem::cost, ~ a few microseconds), fewer threads.
constexpr int64_t kMinCostPerThread = int64_t(1) << 21;

KeyRowLocator locate_keys(const CallContext& c, const char* base, int64_t batch_stride,
                          int64_t row_stride, int64_t head_stride, int b, int kv_head,
                          int k_start) {
  const AttentionParams& p = c.p;
  KeyRowLocator loc{};
  loc.row_stride = row_stride * c.esize;
  if (p.flags & kPagedKV) {
    loc.base = base + kv_head * head_stride * c.esize;
    loc.pages = c.block_table + int64_t(b) * p.block_table_batch_stride;
    loc.page_stride = batch_stride * c.esize;
    loc.page_size = p.page_size;
  } else {
    loc.base = base + (b * batch_stride + int64_t(k_start) * row_stride + kv_head * head_stride) * c.esize;
  }
  return loc;
}

TileJob make_job(const CallContext& c, const WorkItem& w, TileRows& rows) {
  const AttentionParams& p = c.p;
  const Sequence& s = c.seqs[w.batch];
  TileJob job{};
  job.dtype = c.dtype;
  job.rows = w.heads * w.q_count;
  job.head_dim = p.head_dim;
  job.head_dim_v = p.head_dim_v;
  job.scale = p.scale;
  job.softcap = p.softcap;
  job.has_alibi = p.flags & kHasAlibi;
  job.has_sinks = p.flags & kHasSinks;
  job.k = locate_keys(c, c.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride, w.batch,
                      w.kv_head, s.k_begin);
  job.v = locate_keys(c, c.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride, w.batch,
                      w.kv_head, s.k_begin);
  int hull_begin = s.seqlen_k, hull_end = 0;
  for (int hh = 0; hh < w.heads; ++hh) {
    const int h = w.first_head + hh;
    for (int i = 0; i < w.q_count; ++i) {
      const int r = hh * w.q_count + i, row = w.q_begin + i;
      const int64_t token = s.q_begin + row;
      rows.q[r] = c.q + (w.batch * p.q_batch_stride + token * p.q_row_stride + h * p.q_head_stride) * c.esize;
      rows.out[r] = c.out + (w.batch * p.o_batch_stride + token * p.o_row_stride + h * p.o_head_stride) * c.esize;
      rows.lse[r] = c.lse ? c.lse + w.batch * p.lse_batch_stride + h * p.lse_head_stride + token : nullptr;
      const KeyRange range = visible_keys(row, s.seqlen_q, s.seqlen_k, p.window_left, p.window_right);
      rows.key_begin[r] = range.begin;
      rows.key_end[r] = range.end;
      if (range.begin < range.end) {
        hull_begin = std::min(hull_begin, range.begin);
        hull_end = std::max(hull_end, range.end);
      }
      rows.diagonal[r] = row + s.seqlen_k - s.seqlen_q;
      rows.slope[r] = c.alibi ? c.alibi[int64_t(w.batch) * p.alibi_batch_stride + h] : 0.0f;
      rows.sink[r] = c.sinks ? c.sinks[h] : 0.0f;
      rows.mask[r] = c.mask.row(w.batch, h, row);
      rows.dropout[r] = dropout_row(p, w.batch, s, row, h);
    }
  }
  job.key_begin = hull_begin;
  job.key_end = std::max(hull_begin, hull_end);
  job.q_rows = rows.q.data();
  job.out_rows = rows.out.data();
  job.lse_rows = c.lse ? rows.lse.data() : nullptr;
  job.row_key_begin = rows.key_begin.data();
  job.row_key_end = rows.key_end.data();
  job.row_diagonal = rows.diagonal.data();
  job.row_alibi_slope = rows.slope.data();
  job.row_sink = rows.sink.data();
  job.mask = c.mask.reader;
  job.row_mask = rows.mask.data();
  job.dropout = dropout_rule(p);
  job.row_dropout = rows.dropout.data();
  return job;
}

}  // namespace

void run_attention_forward(const AttentionParams& p, const AttentionTensors& t) {
  if (p.flags & kClearRowsOutsideSequences) clear_rows_outside_sequences_on_host(t);
  const std::vector<Sequence> seqs = resolve_sequences(p, t);
  const std::vector<WorkItem> items = plan_work(p, seqs);
  if (items.empty()) return;

  at::Tensor sinks;
  if (p.flags & kHasSinks) sinks = t.sinks->to(at::kFloat).contiguous();
  const ElementType dtype = element_type(t.q.scalar_type());
  const MaskTiles mask = summarize_mask(p, t);
  const CallContext ctx{p,
                        seqs,
                        dtype,
                        element_size(dtype),
                        static_cast<char*>(t.q.data_ptr()),
                        static_cast<char*>(t.k.data_ptr()),
                        static_cast<char*>(t.v.data_ptr()),
                        static_cast<char*>(t.out.data_ptr()),
                        p.flags & kWriteLse ? t.lse.data_ptr<float>() : nullptr,
                        p.flags & kPagedKV ? t.block_table->data_ptr<int32_t>() : nullptr,
                        p.flags & kHasAlibi ? t.alibi_slopes->data_ptr<float>() : nullptr,
                        p.flags & kHasSinks ? sinks.data_ptr<float>() : nullptr,
                        mask};
  const TileKernel kernel = pick_kernel(dtype);
  int max_rows = 0;
  int64_t total_cost = 0;
  for (const WorkItem& w : items) {
    max_rows = std::max(max_rows, w.heads * w.q_count);
    total_cost += w.cost;
  }
  const size_t scratch_bytes = kernel.scratch_bytes(max_rows, p.head_dim, p.head_dim_v);

  // Small calls run on the calling thread: waking the pool would cost more than it saves.
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>({at::get_num_threads(), int64_t(items.size()), total_cost / kMinCostPerThread}));
  std::atomic<size_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    ThreadWorkspace& ws = thread_workspace();
    void* scratch = ws.scratch(scratch_bytes);
    for (size_t i = next.fetch_add(1); i < items.size(); i = next.fetch_add(1)) {
      kernel.run(make_job(ctx, items[i], ws.rows), scratch);
    }
  });
}
