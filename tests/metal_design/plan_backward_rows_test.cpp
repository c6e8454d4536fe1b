// Plain C++ test of which backward kernels the plan picks per head dim (metal_backward_plan.cpp):
// dK/dV and dQ by full-width rows (mfs_bwd_*_rows) exactly at the head-dim tiles
// mfs_bwd_rows_tile admits (32 to 96 in 16-bit dtypes, 32 to 80 in float32), with their own
// grid (32 owned keys / rows), 128 threads and threadgroup bytes (two copies of 32 streamed rows,
// 16 or 8 where they would not fit; above tile 64 the owned rows too; within 32 KiB); the
// head-dim-share kernels everywhere else (a V head dim on a larger tile takes the call there). Built and run by tests/test_metal_design.py (exit 0: every check held).
#include <cstdio>
#include <string>

#include "metal_backward_plan.h"

#include "check.h"

static AttentionParams call(int head_dim, int head_dim_v) {
  AttentionParams p{};
  p.batch = 2;
  p.heads_q = 8;
  p.heads_kv = 2;
  p.head_dim = head_dim;
  p.head_dim_v = head_dim_v;
  p.max_seqlen_q = p.seqlen_q = p.q_rows = 100;
  p.max_seqlen_k = p.seqlen_k = p.k_rows = 70;
  p.window_left = p.window_right = -1;
  p.scale = 0.125f;
  p.flags = kWriteLse;
  return p;
}

static const KernelLaunch* launch_of(const LaunchPlan& plan, PlanKernel kind) {
  for (const KernelLaunch& l : plan.launches) {
    if (l.kind == kind) return &l;
  }
  return nullptr;
}

int main() {
  const MfsDtype dtypes[3] = {kMfsFloat32, kMfsFloat16, kMfsBFloat16};
  const char* names[3] = {"f32", "f16", "bf16"};
  for (int t = 0; t < 3; ++t) {
    const int eb = dtypes[t] == kMfsFloat32 ? 4 : 2;
    for (int d = 8; d <= 512; d += 8) {
      for (int dv : {d, 64, 72}) {
        const int tile = mfs_head_dim_tile(d > dv ? d : dv);
        const bool rows = tile <= 64 || (tile <= 96 && (eb == 2 || tile <= 80));
        CHECK(rows == mfs_bwd_rows_tile(tile, eb), "%s tile %d", names[t], tile);
        const LaunchPlan plan =
            make_backward_plan(call(d, dv), MetalBackwardArgs{}, dtypes[t], kMfsFloat32);
        const KernelLaunch* dkdv = launch_of(plan, PlanKernel::BackwardDkDv);
        const KernelLaunch* dq = launch_of(plan, PlanKernel::BackwardDq);
        CHECK(dkdv && dq, "%s d %d dv %d: both tiled passes", names[t], d, dv);
        if (!dkdv || !dq) continue;
        const std::string sfx = std::string(names[t]) + "_d" + std::to_string(tile);
        const std::string kind = rows ? "rows_" : "";
        CHECK(dkdv->kernel_name == "mfs_bwd_dkdv_" + kind + sfx, "%s", dkdv->kernel_name.c_str());
        CHECK(dq->kernel_name == "mfs_bwd_dq_" + kind + sfx, "%s", dq->kernel_name.c_str());
        const int own = rows ? 32 : 16;
        CHECK(dkdv->threadgroups[0] == (70 + own - 1) / own, "%s", dkdv->kernel_name.c_str());
        CHECK(dq->threadgroups[0] == (100 + own - 1) / own, "%s", dq->kernel_name.c_str());
        if (!rows) continue;
        const int stream = eb == 4 ? (tile == 32 ? 32 : tile == 64 ? 16 : 8)
                                   : (tile <= 72 ? 32 : tile == 128 ? 8 : 16);
        const int row_bytes = (tile + 16 / eb) * eb;
        const uint32_t bytes = 2 * (2 * stream * row_bytes + 2 * stream * 4) +
                               (tile > 64 ? 2 * 32 * row_bytes : 0);
        for (const KernelLaunch* l : {dkdv, dq}) {
          CHECK(l->static_threadgroup_bytes == bytes && bytes <= 32768, "%s: %u bytes, want %u",
                l->kernel_name.c_str(), l->static_threadgroup_bytes, bytes);
          CHECK(l->threads_per_threadgroup[0] == 128, "%s", l->kernel_name.c_str());
        }
      }
    }
  }
  if (failures == 0) std::printf("plan_backward_rows_test: ok\n");
  return failures != 0;
}
