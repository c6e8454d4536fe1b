// Plain C++ tests of the prefill's plan decisions (metal_kernel_config.h, metal_launch_plan.cpp):
// the order of a sequence's query tiles (causal: the heaviest first) and function constant 16
// (the call's head dims fill the kernel's tile). Built and run by tests/test_metal_design.py
// (exit status 0: every check held).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "attention_semantics.h"
#include "metal_launch_plan.h"

#include "check.h"

// The keys a threadgroup of query tile `t` streams: the hull of its rows' visible keys (its key
// loop's length, whatever the number of rows).
static long tile_work(int t, int sq, int sk, int left, int right) {
  const KeyRange r = visible_keys_for_rows(t * MFS_PREFILL_BQ, std::min(sq, (t + 1) * MFS_PREFILL_BQ),
                                           sq, sk, left, right);
  return r.end > r.begin ? r.end - r.begin : 0;
}

// Every grid x of a sequence's tiles owns one tile, each tile once; causal: the threadgroups in
// grid order own tiles of non-increasing work.
static void test_query_tile_order() {
  for (int sq : {1, 31, 32, 33, 100, 257, 1000}) {
    for (int sk : {sq, sq + 50, 2 * sq}) {
      const int tiles = (sq + MFS_PREFILL_BQ - 1) / MFS_PREFILL_BQ;
      for (bool heaviest_first : {false, true}) {
        std::vector<int> seen(tiles, 0);
        for (int x = 0; x < tiles; ++x) {
          const int t = mfs_prefill_query_tile(x, tiles, heaviest_first);
          CHECK(t >= 0 && t < tiles, "sq %d x %d -> %d", sq, x, t);
          if (t >= 0 && t < tiles) ++seen[t];
        }
        for (int t = 0; t < tiles; ++t) CHECK(seen[t] == 1, "sq %d tile %d owned %d times", sq, t, seen[t]);
      }
      for (int left : {-1}) {  // causal (a sliding window's tiles stream about the same keys)
        long last = -1;
        for (int x = 0; x < tiles; ++x) {
          const long w = tile_work(mfs_prefill_query_tile(x, tiles, true), sq, sk, left, 0);
          CHECK(last < 0 || w <= last, "sq %d sk %d left %d: x %d has %ld keys after %ld", sq, sk,
                left, x, w, last);
          last = w;
        }
      }
    }
  }
}

static int constant_of(const KernelLaunch& l, int index) {
  for (const PlanFunctionConstant& fc : l.function_constants) {
    if (fc.index == index) return fc.int_value;
  }
  return -1;
}

// Function constant 16 on the prefill launch: on only where head_dim and head_dim_v both equal
// the tile the plan picked.
static void test_head_dim_full_constant() {
  struct Case {
    int head_dim, head_dim_v, full;
  };
  for (const Case c : {Case{64, 64, 1}, Case{128, 128, 1}, Case{48, 48, 0}, Case{64, 32, 0},
                       Case{32, 64, 0}, Case{80, 80, 1}, Case{104, 104, 0}, Case{512, 512, 1},
                       Case{256, 512, 0}}) {
    AttentionParams p{};
    p.batch = 2;
    p.heads_q = p.heads_kv = 2;
    p.head_dim = c.head_dim;
    p.head_dim_v = c.head_dim_v;
    p.max_seqlen_q = p.seqlen_q = p.q_rows = 64;
    p.max_seqlen_k = p.seqlen_k = p.k_rows = 64;
    p.window_left = p.window_right = -1;
    p.flags = kWriteLse;
    const LaunchPlan plan = make_forward_plan(p, kMfsFloat16, kMfsFloat32);
    int prefills = 0;
    for (const KernelLaunch& l : plan.launches) {
      if (l.kind != PlanKernel::Prefill) continue;
      ++prefills;
      CHECK(constant_of(l, MFS_FC_HEAD_DIM_FULL) == c.full, "head dims %d/%d: %s constant 16 = %d",
            c.head_dim, c.head_dim_v, l.kernel_name.c_str(), constant_of(l, MFS_FC_HEAD_DIM_FULL));
    }
    CHECK(prefills == 1, "head dims %d/%d: %d prefill launches", c.head_dim, c.head_dim_v, prefills);
  }
}

int main() {
  test_query_tile_order();
  test_head_dim_full_constant();
  if (failures) std::printf("%d failures\n", failures);
  else std::printf("plan_prefill_test: ok\n");
  return failures ? 1 : 0;
}
