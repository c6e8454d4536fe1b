// Prints the LaunchPlan of each AttentionParams read from stdin, as one JSON object per line, so
// that tests/test_metal_design.py can check the plan's choices without Metal or torch.
//
// Input: one call per line, `dtype sinks_dtype field=value ...` (dtype: f32, f16, bf16; fields
// are AttentionParams members; `flags` is the bit set; `gpu_cores` and `kv_aligned` set the
// PlanTarget). `names` alone prints every kernel name the plan can pick. `bwd` before a call
// prints the backward plan of it (make_backward_plan, default strides); `bwd_names` the
// backward's kernel names; `prefill_layout` the
// prefill threadgroup's tiles per head-dim tile.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>

#include "metal_backward_plan.h"
#include "metal_launch_plan.h"
#include "metal_probabilities_plan.h"

static MfsDtype parse_dtype(const std::string& s) {
  return s == "f16" ? kMfsFloat16 : s == "bf16" ? kMfsBFloat16 : kMfsFloat32;
}

static bool set_field(AttentionParams& p, const std::string& key, long long v) {
#define F(name)          \
  if (key == #name) {    \
    p.name = v;          \
    return true;         \
  }
  F(batch) F(heads_q) F(heads_kv) F(head_dim) F(head_dim_v) F(max_seqlen_q) F(max_seqlen_k)
  F(q_rows) F(k_rows) F(seqlen_q) F(seqlen_k) F(flags) F(page_size) F(num_pages)
  F(max_pages_per_seq) F(window_left) F(window_right)
  F(mask_kind) F(mask_batch_stride) F(mask_head_stride) F(mask_row_stride) F(mask_key_stride)
#undef F
  return false;
}

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string dtype, sinks;
    in >> dtype;
    if (dtype == "prefill_layout") {  // the prefill threadgroup of every tile and element size
      std::cout << "{";
      bool first = true;
      for (int eb : {4, 2}) {
        for (int i = 0; i < MFS_NUM_HEAD_DIM_TILES; ++i) {
          const int d = mfs_head_dim_tile_at(i);
          std::cout << (first ? "" : ",") << "\"" << (eb == 4 ? "f32" : "16bit") << "_d" << d
                    << "\": {\"bk\": " << mfs_prefill_bk(d, eb)
                    << ", \"dsplit\": " << mfs_prefill_dsplit(d)
                    << ", \"kv_shared\": " << (mfs_prefill_kv_shared(d, eb) ? "true" : "false")
                    << ", \"double_buffered\": "
                    << (mfs_prefill_double_buffered(d, eb) ? "true" : "false")
                    << ", \"barriers_per_tile\": " << mfs_prefill_barriers_per_tile(d, eb)
                    << ", \"k_tile_bytes\": " << mfs_prefill_k_tile_bytes(d, eb)
                    << ", \"v_tile_bytes\": " << mfs_prefill_v_tile_bytes(d, eb)
                    << ", \"tg_bytes\": " << mfs_prefill_tg_bytes(d, eb) << "}";
          first = false;
        }
      }
      std::cout << "}" << std::endl;
      continue;
    }
    if (dtype == "cores") {  // gpu_cores_from_architecture of the next word
      std::string name;
      in >> name;
      std::cout << gpu_cores_from_architecture(name) << std::endl;
      continue;
    }
    if (dtype == "probs_names") {
      std::cout << "[";
      bool first = true;
      for (const std::string& n : all_probabilities_plan_kernel_names()) {
        std::cout << (first ? "" : ",") << "\"" << n << "\"";
        first = false;
      }
      std::cout << "]" << std::endl;
      continue;
    }
    if (dtype == "bwd_names") {
      std::cout << "[";
      bool first = true;
      for (const std::string& n : all_backward_plan_kernel_names()) {
        std::cout << (first ? "" : ",") << "\"" << n << "\"";
        first = false;
      }
      std::cout << "]" << std::endl;
      continue;
    }
    const bool backward = dtype == "bwd";
    if (backward) in >> dtype;
    if (dtype == "names") {
      std::cout << "[";
      bool first = true;
      for (const std::string& n : all_plan_kernel_names()) {
        std::cout << (first ? "" : ",") << "\"" << n << "\"";
        first = false;
      }
      std::cout << "]" << std::endl;
      continue;
    }
    in >> sinks;
    AttentionParams p{};
    p.window_left = p.window_right = -1;
    PlanTarget target;
    std::string kv;
    while (in >> kv) {
      const size_t eq = kv.find('=');
      const std::string key = kv.substr(0, eq == std::string::npos ? 0 : eq);
      if (key == "gpu_cores" || key == "kv_aligned" || key == "q_aligned") {
        const long long v = std::stoll(kv.substr(eq + 1));
        if (key == "gpu_cores") target.gpu_cores = static_cast<int>(v);
        else if (key == "q_aligned") target.q_vector_aligned = v != 0;
        else target.kv_vector_aligned = v != 0;
        continue;
      }
      if (key == "softcap") {
        p.softcap = std::stof(kv.substr(eq + 1));
        continue;
      }
      if (eq == std::string::npos || !set_field(p, key, std::stoll(kv.substr(eq + 1)))) {
        std::cout << "{\"error\": \"bad field " << kv << "\"}" << std::endl;
        continue;
      }
    }
    try {
      MetalBackwardArgs bwd_args{};
      const LaunchPlan plan =
          backward ? make_backward_plan(p, bwd_args, parse_dtype(dtype), parse_dtype(sinks), target)
                   : make_forward_plan(p, parse_dtype(dtype), parse_dtype(sinks), target);
      std::cout << "{\"scratch\": [";
      for (size_t i = 0; i < plan.scratch.size(); ++i) {
        std::cout << (i ? "," : "") << plan.scratch[i].bytes;
      }
      std::cout << "], \"launches\": [";
      for (size_t i = 0; i < plan.launches.size(); ++i) {
        const KernelLaunch& l = plan.launches[i];
        MetalLaunchArgs a{0, 0, 0, 0, 0};
        for (const PlanBytes& b : l.bytes) {
          if (b.index == MFS_BUF_ARGS) std::memcpy(&a, b.bytes.data(), sizeof a);
        }
        std::cout << (i ? "," : "") << "{\"kernel\": \"" << l.kernel_name << "\", \"kind\": "
                  << static_cast<int>(l.kind) << ", \"grid\": [" << l.threadgroups[0] << ","
                  << l.threadgroups[1] << "," << l.threadgroups[2] << "], \"threads\": "
                  << l.threads_per_threadgroup[0] * l.threads_per_threadgroup[1] *
                         l.threads_per_threadgroup[2]
                  << ", \"tgmem\": " << l.static_threadgroup_bytes << ", \"buffers\": ["
                  ;
        for (size_t j = 0; j < l.buffers.size(); ++j) {
          std::cout << (j ? "," : "") << l.buffers[j].index;
        }
        std::cout << "], \"heads_per_tg\": " << a.heads_per_tg << ", \"rows_per_head\": "
                  << a.rows_per_head << ", \"num_splits\": " << a.num_splits
                  << ", \"keys_per_split\": " << a.keys_per_split << ", \"rows_per_tg\": "
                  << a.rows_per_tg << ", \"simdgroups\": " << launch_simdgroups(l)
                  << ", \"constants\": {";
        for (size_t j = 0; j < l.function_constants.size(); ++j) {
          std::cout << (j ? "," : "") << "\"" << l.function_constants[j].index
                    << "\": " << l.function_constants[j].int_value;
        }
        std::cout << "}}";
      }
      std::cout << "]}" << std::endl;
    } catch (const std::exception& e) {
      std::cout << "{\"error\": \"" << e.what() << "\"}" << std::endl;
    }
  }
  return 0;
}
