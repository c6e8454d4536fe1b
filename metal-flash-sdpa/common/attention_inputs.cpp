#include "attention_inputs.h"

#include <c10/util/Exception.h>

#include "dropout_stream.h"

#include <cmath>
#include <limits>
#include <string>

namespace {

constexpr int64_t kMaxHeadDim = 512;

#define CHECK_ARG(cond, ...) TORCH_CHECK_VALUE(cond, __VA_ARGS__)

void check_device(const at::Tensor& t, const char* name, c10::DeviceType device_type,
                  const at::Device& device) {
  TORCH_CHECK(t.device().type() == device_type, name, " must be on ",
              c10::DeviceTypeName(device_type, /*lower_case=*/true),
              " for this build of metal-flash-sdpa, got a tensor on ", t.device());
  TORCH_CHECK(t.device() == device, name, " must be on the same device as q (", device,
              "), got ", t.device());
}

void check_last_dim_contiguous(const at::Tensor& t, const char* name) {
  CHECK_ARG(t.size(-1) <= 1 || t.stride(-1) == 1, name,
            " must be contiguous in its last dimension, got strides ", t.strides());
}

void check_head_dim(int64_t d, const char* name) {
  CHECK_ARG(d > 0 && d % 8 == 0 && d <= kMaxHeadDim, name,
            " must be a multiple of 8 between 8 and 512, got ", d);
}

// int32 [n] offsets or lengths on the device of q.
void check_index_vector(const at::Tensor& t, const char* name, int64_t expected_len,
                        c10::DeviceType device_type, const at::Device& device) {
  check_device(t, name, device_type, device);
  CHECK_ARG(t.scalar_type() == at::kInt, name, " must be int32, got ", t.scalar_type());
  CHECK_ARG(t.dim() == 1, name, " must be 1-dimensional, got shape ", t.sizes());
  if (expected_len >= 0) {
    CHECK_ARG(t.size(0) == expected_len, name, " must have ", expected_len,
              " entries, got ", t.size(0));
  }
}

// cu_seqlens: [batch + 1], starts at 0, non-decreasing, last entry <= rows. Values are read only
// where the host can read them (cpu); on a GPU the kernels clamp instead.
void check_cu_seqlens_values(const at::Tensor& cu, const char* name, int64_t rows,
                             int64_t max_seqlen, const char* max_name) {
  if (cu.device().type() != c10::DeviceType::CPU) return;
  auto acc = cu.accessor<int32_t, 1>();
  CHECK_ARG(acc[0] == 0, name, " must start at 0, got ", acc[0]);
  for (int64_t i = 1; i < cu.size(0); ++i) {
    CHECK_ARG(acc[i] >= acc[i - 1], name, " must be non-decreasing, but entry ", i, " (",
              acc[i], ") is smaller than entry ", i - 1, " (", acc[i - 1], ")");
    CHECK_ARG(acc[i] - acc[i - 1] <= max_seqlen, max_name, " (", max_seqlen,
              ") is smaller than sequence ", i - 1, "'s length ", acc[i] - acc[i - 1]);
  }
  CHECK_ARG(acc[cu.size(0) - 1] <= rows, name, "'s last entry (", acc[cu.size(0) - 1],
            ") runs past the ", rows, " rows of the tensor");
}

void check_lengths_values(const at::Tensor& lengths, const char* name, int64_t limit,
                          const char* limit_what) {
  if (lengths.device().type() != c10::DeviceType::CPU) return;
  auto acc = lengths.accessor<int32_t, 1>();
  for (int64_t i = 0; i < lengths.size(0); ++i) {
    CHECK_ARG(acc[i] >= 0 && acc[i] <= limit, name, "[", i, "] = ", acc[i],
              " must lie in [0, ", limit, "] (", limit_what, ")");
  }
}

// seqused (flash-attn 3) with cu_seqlens: each value within its sequence's slot,
// [0, cu[b + 1] - cu[b]].
void check_used_values(const at::Tensor& used, const char* name, const at::Tensor& cu,
                       const char* cu_name) {
  if (used.device().type() != c10::DeviceType::CPU) return;
  auto u = used.accessor<int32_t, 1>();
  auto c = cu.accessor<int32_t, 1>();
  for (int64_t i = 0; i < used.size(0); ++i) {
    CHECK_ARG(u[i] >= 0 && u[i] <= c[i + 1] - c[i], name, "[", i, "] = ", u[i],
              " must lie in [0, ", c[i + 1] - c[i], "] (the length of sequence ", i, " in ",
              cu_name, ")");
  }
}

// softmax_scale and softcap reach the kernels as float32: a double that would become inf there
// (1e300) is refused instead of silently changing the result.
void check_finite_float32(double value, const char* name) {
  CHECK_ARG(std::isfinite(value) && std::fabs(value) <= std::numeric_limits<float>::max(), name,
            " must be a finite float32 value (|", name, "| <= ",
            std::numeric_limits<float>::max(), "), got ", value);
}

// Window entries are int32 in the kernels: -1 (unbounded) up to 2^31 - 1, never truncated.
void check_window_entry(int64_t entry, int64_t left, int64_t right) {
  CHECK_ARG(entry >= -1 && entry <= INT32_MAX,
            "window_size entries must be -1 (unbounded) or in [0, 2^31 - 1], got (", left, ", ",
            right, ")");
}

// A window at least as wide as `extent` (every position it could exclude) is unbounded: -1.
int32_t unbounded_if_wider(int64_t window, int64_t extent) {
  return window >= extent ? -1 : static_cast<int32_t>(window);
}

// dropout_p in [0, 1); with p > 0 the stream state (seed_lo, seed_hi, offset): int64 cpu [3],
// each a 32-bit word (the host reads it; dropout_stream.h consumes it). Every build's kernels
// apply dropout: the cpu tile kernels (cpu/dropout_tiles.h) and the Metal kernels
// (metal/attention_dropout.h; the simulated build runs them).
void check_dropout(double p, const std::optional<at::Tensor>& seed) {
  CHECK_ARG(p >= 0.0 && p < 1.0, "dropout_p must be in [0, 1) (the probability that an attention ",
            "probability is dropped), got ", p);  // false for NaN
  if (p == 0.0) return;
  CHECK_ARG(seed.has_value(), "dropout_p > 0 needs dropout_seed, the call's stream state (the "
            "Python entry points draw it from torch's default generator)");
  const at::Tensor& s = *seed;
  CHECK_ARG(s.device().type() == c10::DeviceType::CPU && s.scalar_type() == at::kLong &&
                s.dim() == 1 && s.size(0) == 3,
            "dropout_seed must be an int64 cpu tensor [3] (seed_lo, seed_hi, offset), got a ",
            s.scalar_type(), " tensor of shape ", s.sizes(), " on ", s.device());
  auto words = s.accessor<int64_t, 1>();
  for (int i = 0; i < 3; ++i) {
    CHECK_ARG(words[i] >= 0 && words[i] <= UINT32_MAX, "dropout_seed entries must be 32-bit ",
              "words in [0, 2^32), got ", s);
  }
}

int32_t to_i32(int64_t v, const char* name) {
  CHECK_ARG(v >= 0 && v <= INT32_MAX, name, " must be in [0, 2^31), got ", v);
  return static_cast<int32_t>(v);
}

std::optional<at::Tensor> dense(const std::optional<at::Tensor>& t) {
  if (!t) return t;
  return t->contiguous();
}

// The shapes of `out` and `lse` (the Python fake implementations state the same rule).
std::vector<int64_t> attention_out_shape(const at::Tensor& q, const at::Tensor& v) {
  std::vector<int64_t> shape(q.sizes().begin(), q.sizes().end());
  shape.back() = v.size(-1);
  return shape;
}

std::vector<int64_t> attention_lse_shape(const at::Tensor& q, bool return_lse) {
  if (!return_lse) return {0};
  if (q.dim() == 3) return {q.size(1), q.size(0)};  // [heads, total_q]
  return {q.size(0), q.size(2), q.size(1)};         // [batch, heads, seqlen_q]
}

}  // namespace

AttentionTensors check_attention_inputs(const AttentionArgs& a, c10::DeviceType device_type,
                                        AttentionParams& p) {
  const at::Tensor& q = a.q;
  const at::Tensor& k = a.k;
  const at::Tensor& v = a.v;
  const at::Device device = q.device();
  check_device(q, "q", device_type, device);
  check_device(k, "k", device_type, device);
  check_device(v, "v", device_type, device);

  const auto dtype = q.scalar_type();
  CHECK_ARG(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
            "q must be float32, float16 or bfloat16, got ", dtype);
  CHECK_ARG(k.scalar_type() == dtype, "k must have q's dtype ", dtype, ", got ", k.scalar_type());
  CHECK_ARG(v.scalar_type() == dtype, "v must have q's dtype ", dtype, ", got ", v.scalar_type());

  const bool varlen_q = a.cu_seqlens_q.has_value();
  const bool paged = a.block_table.has_value();
  const bool varlen_k = a.cu_seqlens_k.has_value();
  const bool seqused_k = a.seqused_k.has_value();
  CHECK_ARG(q.dim() == (varlen_q ? 3 : 4), "q must be ",
            varlen_q ? "[total_q, heads, head_dim] with cu_seqlens_q"
                     : "[batch, seqlen_q, heads, head_dim] without cu_seqlens_q",
            ", got shape ", q.sizes());
  const int64_t k_dims = (paged || !varlen_k) ? 4 : 3;
  CHECK_ARG(k.dim() == k_dims, "k must be ",
            paged      ? "[num_pages, page_size, heads_kv, head_dim] with block_table"
            : varlen_k ? "[total_k, heads_kv, head_dim] with cu_seqlens_k"
                       : "[batch, seqlen_k, heads_kv, head_dim]",
            ", got shape ", k.sizes());
  CHECK_ARG(v.dim() == k_dims && v.sizes().slice(0, k_dims - 1) == k.sizes().slice(0, k_dims - 1),
            "v must match k in every dimension but the last, got v ", v.sizes(), " and k ",
            k.sizes());
  check_last_dim_contiguous(q, "q");
  check_last_dim_contiguous(k, "k");
  check_last_dim_contiguous(v, "v");

  const int64_t heads_q = q.size(-2), heads_kv = k.size(-2);
  const int64_t head_dim = q.size(-1), head_dim_v = v.size(-1);
  CHECK_ARG(heads_kv > 0 && heads_q % heads_kv == 0, "the heads of q (", heads_q,
            ") must be a multiple of the heads of k and v (", heads_kv, ")");
  check_head_dim(head_dim, "head_dim of q");
  CHECK_ARG(k.size(-1) == head_dim, "k's head_dim must equal q's (", head_dim, "), got ",
            k.size(-1));
  check_head_dim(head_dim_v, "head_dim of v");

  const int64_t batch = varlen_q ? a.cu_seqlens_q->size(0) - 1 : q.size(0);
  CHECK_ARG(batch >= 0, "cu_seqlens_q must have at least one entry");
  CHECK_ARG(a.max_seqlen_q >= 0, "max_seqlen_q must be >= 0, got ", a.max_seqlen_q);
  CHECK_ARG(a.max_seqlen_k >= 0, "max_seqlen_k must be >= 0, got ", a.max_seqlen_k);

  if (varlen_q) {
    check_index_vector(*a.cu_seqlens_q, "cu_seqlens_q", -1, device_type, device);
    CHECK_ARG(a.cu_seqlens_q->size(0) >= 1, "cu_seqlens_q must have batch + 1 >= 1 entries");
  }
  if (varlen_k) {
    check_index_vector(*a.cu_seqlens_k, "cu_seqlens_k", batch + 1, device_type, device);
  } else if (!paged) {
    CHECK_ARG(k.size(0) == batch, "k's batch (", k.size(0), ") must equal q's batch (", batch,
              ")");
  }
  if (seqused_k) check_index_vector(*a.seqused_k, "seqused_k", batch, device_type, device);
  const bool seqused_q = a.seqused_q.has_value();
  // The rows a slot does not use come back as zeros: slots exist only with cu_seqlens_q.
  CHECK_ARG(!seqused_q || varlen_q, "seqused_q needs cu_seqlens_q (it counts the first rows of "
            "each sequence's slot)");
  if (seqused_q) check_index_vector(*a.seqused_q, "seqused_q", batch, device_type, device);
  CHECK_ARG(!paged || varlen_k || seqused_k,
            "block_table needs cu_seqlens_k or seqused_k to give each sequence's length");

  int64_t max_pages = 0;
  if (paged) {
    const at::Tensor& bt = *a.block_table;
    check_device(bt, "block_table", device_type, device);
    CHECK_ARG(bt.scalar_type() == at::kInt, "block_table must be int32, got ", bt.scalar_type());
    CHECK_ARG(bt.dim() == 2 && bt.size(0) == batch, "block_table must be [batch=", batch,
              ", max_pages], got shape ", bt.sizes());
    max_pages = bt.size(1);
    // The kernels find a key's page as key / page_size (also in lanes past the sequence's end).
    CHECK_ARG(k.size(1) >= 1, "page_size (k.shape[1]) must be >= 1 with block_table, got k of "
              "shape ", k.sizes());
    if (bt.device().type() == c10::DeviceType::CPU && bt.numel() > 0) {
      const int64_t lo = bt.min().item<int64_t>(), hi = bt.max().item<int64_t>();
      CHECK_ARG(lo >= 0 && hi < k.size(0), "block_table entries (flash_attn_with_kvcache: "
                "cache_batch_idx) must lie in [0, num_pages=", k.size(0),
                "), got values in [", lo, ", ", hi, "]");
    }
  }

  // Offset values (only where readable).
  const int64_t q_rows = varlen_q ? q.size(0) : q.size(1);
  const int64_t k_rows = paged ? k.size(1) : (varlen_k ? k.size(0) : k.size(1));
  if (varlen_q) check_cu_seqlens_values(*a.cu_seqlens_q, "cu_seqlens_q", q_rows, a.max_seqlen_q, "max_seqlen_q");
  if (varlen_k) {
    // Paged: each sequence's keys live in its pages, not in consecutive rows of k.
    const int64_t limit = paged ? INT32_MAX : k_rows;
    check_cu_seqlens_values(*a.cu_seqlens_k, "cu_seqlens_k", limit, a.max_seqlen_k, "max_seqlen_k");
  }
  if (seqused_k && varlen_k) {
    check_used_values(*a.seqused_k, "seqused_k", *a.cu_seqlens_k, "cu_seqlens_k");
  } else if (seqused_k) {
    check_lengths_values(*a.seqused_k, "seqused_k", paged ? max_pages * k.size(1) : k_rows,
                         paged ? "max_pages * page_size" : "the key rows of k");
  }
  if (seqused_q && varlen_q) {
    check_used_values(*a.seqused_q, "seqused_q", *a.cu_seqlens_q, "cu_seqlens_q");
  }
  if (paged && varlen_k && a.cu_seqlens_k->device().type() == c10::DeviceType::CPU) {
    auto cu = a.cu_seqlens_k->accessor<int32_t, 1>();
    for (int64_t b = 0; b < batch; ++b) {
      CHECK_ARG(cu[b + 1] - cu[b] <= max_pages * k.size(1), "sequence ", b, " has ",
                cu[b + 1] - cu[b], " keys (cu_seqlens_k) but block_table gives it only ",
                max_pages * k.size(1), " slots");
    }
  }

  if (a.alibi_slopes) {
    const at::Tensor& s = *a.alibi_slopes;
    check_device(s, "alibi_slopes", device_type, device);
    CHECK_ARG(s.scalar_type() == at::kFloat, "alibi_slopes must be float32, got ",
              s.scalar_type());
    CHECK_ARG((s.dim() == 1 && s.size(0) == heads_q) ||
                  (s.dim() == 2 && s.size(0) == batch && s.size(1) == heads_q),
              "alibi_slopes must be [heads=", heads_q, "] or [batch=", batch, ", heads=", heads_q,
              "], got shape ", s.sizes());
    check_last_dim_contiguous(s, "alibi_slopes");
  }
  if (a.sinks) {
    const at::Tensor& s = *a.sinks;
    check_device(s, "s_aux", device_type, device);
    CHECK_ARG(s.dim() == 1 && s.size(0) == heads_q, "s_aux must be [heads=", heads_q,
              "], got shape ", s.sizes());
    CHECK_ARG(s.scalar_type() == at::kFloat || s.scalar_type() == at::kHalf ||
                  s.scalar_type() == at::kBFloat16,
              "s_aux must be a floating tensor, got ", s.scalar_type());
  }
  check_finite_float32(a.softmax_scale, "softmax_scale");
  check_finite_float32(a.softcap, "softcap");
  CHECK_ARG(a.softcap >= 0.0, "softcap must be >= 0 (0 = off), got ", a.softcap);
  CHECK_ARG(a.softcap == 0.0 || static_cast<float>(a.softcap) > 0.0f,
            "softcap is positive but below float32's smallest value (it would mean off), got ",
            a.softcap);
  check_window_entry(a.window_left, a.window_left, a.window_right);
  check_window_entry(a.window_right, a.window_left, a.window_right);
  check_dropout(a.dropout_p, a.dropout_seed);

  const std::vector<int64_t> out_shape = attention_out_shape(q, v);
  if (a.out) {
    const at::Tensor& o = *a.out;
    check_device(o, "out", device_type, device);
    CHECK_ARG(o.scalar_type() == dtype, "out must have q's dtype ", dtype, ", got ",
              o.scalar_type());
    CHECK_ARG(o.sizes() == at::IntArrayRef(out_shape), "out must have shape ",
              at::IntArrayRef(out_shape), ", got ", o.sizes());
    check_last_dim_contiguous(o, "out");
  }

  // --- everything is checked: allocate and describe ---
  AttentionTensors t;
  t.q = q;
  t.k = k;
  t.v = v;
  // The kernels read these as dense arrays; a strided or expanded view (t[::2],
  // tensor([5]).expand(B)) is copied here (a few ints), after its values were checked above
  // through its strides (docs/API.md, "Integer tensors").
  t.cu_seqlens_q = dense(a.cu_seqlens_q);
  t.cu_seqlens_k = dense(a.cu_seqlens_k);
  t.seqused_k = dense(a.seqused_k);
  t.seqused_q = dense(a.seqused_q);
  t.block_table = dense(a.block_table);
  t.alibi_slopes = a.alibi_slopes;
  t.sinks = dense(a.sinks);
  t.out = a.out ? *a.out : at::empty(out_shape, q.options());
  t.lse = at::empty(attention_lse_shape(q, a.return_lse), q.options().dtype(at::kFloat));

  p = AttentionParams{};
  const int r = varlen_q ? 0 : 1;  // fixed-length tensors have a leading batch dimension
  p.q_batch_stride = varlen_q ? 0 : q.stride(0);
  p.q_row_stride = q.stride(r);
  p.q_head_stride = q.stride(r + 1);
  const bool k_batched = k.dim() == 4;
  p.k_batch_stride = k_batched ? k.stride(0) : 0;
  p.k_row_stride = k.stride(k_batched ? 1 : 0);
  p.k_head_stride = k.stride(k_batched ? 2 : 1);
  p.v_batch_stride = k_batched ? v.stride(0) : 0;
  p.v_row_stride = v.stride(k_batched ? 1 : 0);
  p.v_head_stride = v.stride(k_batched ? 2 : 1);
  p.o_batch_stride = varlen_q ? 0 : t.out.stride(0);
  p.o_row_stride = t.out.stride(r);
  p.o_head_stride = t.out.stride(r + 1);
  if (a.return_lse) {
    p.lse_batch_stride = varlen_q ? 0 : t.lse.stride(0);
    p.lse_head_stride = t.lse.stride(varlen_q ? 0 : 1);
  }
  p.batch = to_i32(batch, "batch");
  p.heads_q = to_i32(heads_q, "heads of q");
  p.heads_kv = to_i32(heads_kv, "heads of k");
  p.head_dim = to_i32(head_dim, "head_dim");
  p.head_dim_v = to_i32(head_dim_v, "head_dim of v");
  p.max_seqlen_q = to_i32(varlen_q ? a.max_seqlen_q : q.size(1), "max_seqlen_q");
  p.max_seqlen_k = to_i32(paged || varlen_k || seqused_k ? a.max_seqlen_k : k.size(1),
                          "max_seqlen_k");
  p.q_rows = to_i32(q_rows, "rows of q");
  p.k_rows = to_i32(k_rows, "rows of k");
  p.seqlen_q = varlen_q ? 0 : to_i32(q.size(1), "seqlen_q");
  p.seqlen_k = k_batched && !paged ? to_i32(k.size(1), "seqlen_k") : 0;
  p.flags = (varlen_q ? kVarlenQ : 0) | (varlen_k ? kVarlenK : 0) | (seqused_k ? kSequsedK : 0) |
            (paged ? kPagedKV : 0) | (a.alibi_slopes ? kHasAlibi : 0) |
            (a.sinks ? kHasSinks : 0) | (a.return_lse ? kWriteLse : 0) |
            (seqused_q ? kSequsedQ : 0);
  if (paged) {
    p.page_size = to_i32(k.size(1), "page_size");
    p.num_pages = to_i32(k.size(0), "num_pages");
    p.block_table_batch_stride = to_i32(t.block_table->stride(0), "block_table stride");
    p.max_pages_per_seq = to_i32(max_pages, "max_pages");
  }
  p.alibi_batch_stride =
      a.alibi_slopes && a.alibi_slopes->dim() == 2 ? to_i32(a.alibi_slopes->stride(0), "alibi") : 0;
  // A window reaching past every key a sequence can have is unbounded; clamped here so the
  // kernels' int32 position arithmetic (diagonal - left, diagonal + right + 1) cannot overflow.
  // Bounds: a sequence has at most k_capacity keys and q_rows queries (the kernels clamp to them).
  const int64_t k_capacity = paged ? max_pages * k.size(1) : k_rows;
  p.window_left = unbounded_if_wider(a.window_left, k_capacity);
  p.window_right = unbounded_if_wider(a.window_right, q_rows);
  p.scale = static_cast<float>(a.softmax_scale);
  p.softcap = static_cast<float>(a.softcap);
  if (a.dropout_p > 0.0) {
    auto words = a.dropout_seed->accessor<int64_t, 1>();
    p.flags |= kDropout;
    p.dropout_seed_lo = static_cast<mfs_u32>(words[0]);
    p.dropout_seed_hi = static_cast<mfs_u32>(words[1]);
    p.dropout_offset = static_cast<mfs_u32>(words[2]);
    p.dropout_threshold = dropout_threshold(a.dropout_p);
    p.dropout_scale = static_cast<float>(1.0 / (1.0 - a.dropout_p));
  }
  return t;
}
