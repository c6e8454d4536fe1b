// Plain C++ test of what the plans bind at function-constant-guarded kernel parameters
// ([[buffer(i), function_constant(c)]]: lse under write_lse, d attn_mask under mask_grad, the
// decode's split-K scratch under decode_split): nothing
// while the constant is off (no tensor, no setBytes placeholder), the tensor while it is on; the
// read-only parameters a call lacks keep their placeholder. Built and run by
// tests/test_metal_design.py (exit status 0: every check held).
#include <cstdio>

#include "metal_backward_plan.h"
#include "metal_launch_plan.h"

#include "check.h"

// How launch `l` binds [[buffer(index)]]: 0 nothing, 1 a tensor, 2 setBytes.
static int binding(const KernelLaunch& l, int index) {
  for (const PlanBuffer& b : l.buffers) {
    if (b.index == index) return 1;
  }
  for (const PlanBytes& b : l.bytes) {
    if (b.index == index) return 2;
  }
  return 0;
}

static int constant_of(const KernelLaunch& l, int index) {
  for (const PlanFunctionConstant& fc : l.function_constants) {
    if (fc.index == index) return fc.int_value;
  }
  return -1;
}

static AttentionParams call(int rows, int keys, int flags) {
  AttentionParams p{};
  p.batch = 1;
  p.heads_kv = p.heads_q = 2;
  p.head_dim = p.head_dim_v = 64;
  p.max_seqlen_q = p.seqlen_q = p.q_rows = rows;
  p.max_seqlen_k = p.seqlen_k = p.k_rows = keys;
  p.window_left = p.window_right = -1;
  p.scale = 0.125f;
  p.flags = flags;
  return p;
}

// Forward: prefill (64 rows) and decode (1 row, 4096 keys: split, so the reduce runs too).
static void test_forward() {
  for (int rows : {64, 1}) {
    for (int lse : {0, (int)kWriteLse}) {
      const LaunchPlan plan = make_forward_plan(call(rows, 4096, lse), kMfsFloat16, kMfsFloat32);
      CHECK(!plan.launches.empty(), "rows %d", rows);
      for (const KernelLaunch& l : plan.launches) {
        const char* name = l.kernel_name.c_str();
        CHECK(constant_of(l, MFS_FC_WRITE_LSE) == (lse ? 1 : 0), "%s", name);
        CHECK(binding(l, MFS_BUF_LSE) == (lse ? 1 : 0), "%s lse %d: binding %d", name, lse,
              binding(l, MFS_BUF_LSE));
        CHECK(plan_buffer_absent(l, MFS_BUF_LSE) == !lse, "%s", name);
        CHECK(binding(l, MFS_BUF_SEQUSED_K) == 2, "%s: a read-only parameter keeps its placeholder",
              name);
      }
    }
  }
}

// Decode's split-K scratch (partial_o, partial_ml): bound while the decode splits its keys (4096
// keys on one sequence and 2 heads: too few threadgroups for the cores), absent while it does not
// (64 keys); the reduction, launched only with a split, always reads it.
static void test_decode_split_scratch() {
  for (int keys : {4096, 64}) {
    const LaunchPlan plan = make_forward_plan(call(1, keys, kWriteLse), kMfsFloat16, kMfsFloat32);
    const bool split = keys == 4096;
    int decodes = 0, reduces = 0;
    for (const KernelLaunch& l : plan.launches) {
      const char* name = l.kernel_name.c_str();
      if (l.kind == PlanKernel::Decode) {
        ++decodes;
        CHECK(constant_of(l, MFS_FC_DECODE_SPLIT) == (split ? 1 : 0), "%s keys %d", name, keys);
        for (int index : {MFS_BUF_SCRATCH0, MFS_BUF_SCRATCH1}) {
          CHECK(binding(l, index) == (split ? 1 : 0), "%s keys %d: buffer %d binding %d", name,
                keys, index, binding(l, index));
          CHECK(plan_buffer_absent(l, index) == !split, "%s keys %d: buffer %d", name, keys, index);
        }
      } else if (l.kind == PlanKernel::DecodeReduce) {
        ++reduces;
        CHECK(binding(l, MFS_BUF_SCRATCH0) == 1 && binding(l, MFS_BUF_SCRATCH1) == 1, "%s", name);
        CHECK(!plan_buffer_absent(l, MFS_BUF_SCRATCH0), "%s", name);
      }
    }
    CHECK(decodes == 1 && reduces == (split ? 1 : 0), "keys %d: %d decodes, %d reduces", keys,
          decodes, reduces);
  }
}

// Backward with a boolean attn_mask, with and without its gradient.
static void test_backward_mask_grad() {
  for (int grad : {0, (int)kMaskGrad}) {
    AttentionParams p = call(32, 32, kWriteLse | grad);
    p.mask_kind = kMaskBool;
    p.mask_key_stride = 1;
    p.mask_row_stride = 32;
    const LaunchPlan plan = make_backward_plan(p, MetalBackwardArgs{}, kMfsFloat16, kMfsFloat32);
    int dq = 0;
    for (const KernelLaunch& l : plan.launches) {
      if (l.kind != PlanKernel::BackwardDq) continue;
      ++dq;
      CHECK(constant_of(l, MFS_FC_MASK_GRAD) == (grad ? 1 : 0), "%s", l.kernel_name.c_str());
      CHECK(binding(l, MFS_BUF_DMASK) == (grad ? 1 : 0), "%s grad %d: binding %d",
            l.kernel_name.c_str(), grad, binding(l, MFS_BUF_DMASK));
      CHECK(binding(l, MFS_BUF_LSE) == 1, "%s: the backward reads lse", l.kernel_name.c_str());
    }
    CHECK(dq == 1, "%d dq launches", dq);
  }
}

int main() {
  test_forward();
  test_decode_split_scratch();
  test_backward_mask_grad();
  if (failures == 0) std::printf("ok\n");
  return failures == 0 ? 0 : 1;
}
