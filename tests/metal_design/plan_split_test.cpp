// Plain C++ tests of the decode plan's split-K sizing and live pair count (metal_launch_plan.h
// states the rules); built and run by tests/test_metal_design.py (exit status 0: every check held).
#include <cstdio>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "metal_launch_plan.h"

#include "check.h"

static MetalLaunchArgs decode_args(const KernelLaunch& l) {
  MetalLaunchArgs a{};
  for (const PlanBytes& b : l.bytes) {
    if (b.index == MFS_BUF_ARGS) std::memcpy(&a, b.bytes.data(), sizeof a);
  }
  return a;
}

static int constant_of(const KernelLaunch& l, int index) {
  for (const PlanFunctionConstant& fc : l.function_constants) {
    if (fc.index == index) return fc.int_value;
  }
  return -1;
}

// A decode call: batch 1 (the hardest to fill), 8 KV heads, `rows` query rows per sequence.
static AttentionParams decode_call(int group, int head_dim, int rows, int keys) {
  AttentionParams p{};
  p.batch = 1;
  p.heads_kv = 8;
  p.heads_q = 8 * group;
  p.head_dim = p.head_dim_v = head_dim;
  p.max_seqlen_q = p.seqlen_q = p.q_rows = rows;
  p.max_seqlen_k = p.seqlen_k = p.k_rows = keys;
  p.window_left = p.window_right = -1;
  p.flags = kWriteLse;
  return p;
}

// The Apple dies: architecture name, the full die's cores and the smallest part of the class.
struct Part {
  const char* name;
  int full, binned;
};
static const Part kParts[] = {
    {"applegpu_g13g", 8, 7},   {"applegpu_g13s", 16, 14}, {"applegpu_g13c", 32, 24},
    {"applegpu_g13d", 64, 48}, {"applegpu_g14g", 10, 8},  {"applegpu_g14s", 19, 16},
    {"applegpu_g14c", 38, 30}, {"applegpu_g14d", 76, 60}, {"applegpu_g15g", 10, 8},
    {"applegpu_g15s", 18, 14}, {"applegpu_g15c", 40, 30}, {"applegpu_g15d", 80, 60},
    {"applegpu_g16g", 10, 8},  {"applegpu_g16s", 20, 16}, {"applegpu_g16c", 40, 32},
};

static void test_cores_from_the_architecture_name() {
  for (const Part& part : kParts) {
    // The rule's premise: a binned part has at least 3/4 of its full die's cores, so sizing for
    // the full die gives it at most 4/3 of the target per core (plus a split's rounding).
    CHECK(4 * part.binned >= 3 * part.full, "%s", part.name);
    CHECK(gpu_cores_from_architecture(part.name) == part.full, "%s -> %d", part.name,
          gpu_cores_from_architecture(part.name));
  }
  CHECK(gpu_cores_from_architecture("applegpu_g14c") == 38, "the issue's M2 Max");
  CHECK(gpu_cores_from_architecture("applegpu_g13p") == 4, "A14");
  CHECK(gpu_cores_from_architecture("applegpu_g21c") == 40, "a later generation: the last row");
  CHECK(gpu_cores_from_architecture("applegpu_g12c") == 32, "an earlier one: the first row");
  for (const char* bad : {"", "something else", "applegpu_g", "applegpu_g14", "applegpu_gXc",
                          "applegpu_g14q", "applegpu_g14cc"}) {
    CHECK(gpu_cores_from_architecture(bad) == PlanTarget().gpu_cores, "'%s'", bad);
  }
}

// Splits: >= the target SIMD-groups per core on the full die, so >= it on every binned part too,
// and no split more than that needs (the split is the longest multiple of the grain that reaches
// it), each split's partials within 1/scratch_ratio of its K/V bytes, the splits cover the keys.
static void test_split_sizing() {
  const PlanTuning tuning;
  for (const Part& part : kParts) {
    PlanTarget target;
    target.gpu_cores = gpu_cores_from_architecture(part.name);
    for (int group : {1, 4, 8}) {
      for (int head_dim : {64, 128, 256, 512}) {
        for (int rows : {1, 4}) {
          for (MfsDtype dtype : {kMfsFloat32, kMfsFloat16}) {
            const AttentionParams p = decode_call(group, head_dim, rows, 4096);
            const LaunchPlan plan = make_forward_plan(p, dtype, kMfsFloat32, target, tuning);
            const KernelLaunch& d = plan.launches.at(0);
            const MetalLaunchArgs a = decode_args(d);
            const uint64_t sgs = launch_simdgroups(d);
            const uint64_t target_sgs = uint64_t(target.gpu_cores) * tuning.target_simdgroups_per_core;
            const uint64_t unsplit = sgs / a.num_splits;
            const int eb = dtype == kMfsFloat32 ? 4 : 2;
            const uint64_t partials = uint64_t(a.heads_per_tg) * a.rows_per_tg * (head_dim + 2) * 8;
            const uint64_t split_kv = uint64_t(a.keys_per_split) * 2 * head_dim * eb;
            // The shortest split the plan allows: 8 keys per SIMD-group, partials within
            // 1/scratch_ratio of the split's K/V bytes, a multiple of the grain.
            int64_t min_keys = std::max<int64_t>(
                int64_t(tuning.min_keys_per_simdgroup) * mfs_decode_simdgroups(head_dim),
                (tuning.scratch_ratio * partials + 2 * head_dim * eb - 1) / (2 * head_dim * eb));
            min_keys = (min_keys + MFS_DECODE_SPLIT_GRAIN - 1) / MFS_DECODE_SPLIT_GRAIN * MFS_DECODE_SPLIT_GRAIN;
            const bool at_minimum = a.num_splits > 1 ? a.keys_per_split == min_keys
                                                     : p.max_seqlen_k / min_keys < 2;
            CHECK(sgs >= target_sgs || at_minimum, "%s g%d d%d r%d: %llu SIMD-groups < %llu",
                  part.name, group, head_dim, rows, (unsigned long long)sgs,
                  (unsigned long long)target_sgs);
            if (a.num_splits > 1) {
              CHECK(a.keys_per_split % MFS_DECODE_SPLIT_GRAIN == 0, "%s: split %d", part.name,
                    a.keys_per_split);
              CHECK((a.num_splits - 1) * int64_t(a.keys_per_split) < p.max_seqlen_k &&
                        a.num_splits * int64_t(a.keys_per_split) >= p.max_seqlen_k,
                    "%s: %d splits of %d keys", part.name, a.num_splits, a.keys_per_split);
              CHECK(partials * tuning.scratch_ratio <= split_kv, "%s g%d d%d: partials %llu vs %llu",
                    part.name, group, head_dim, (unsigned long long)partials,
                    (unsigned long long)split_kv);
              // No fewer splits would reach the target: the first split length (a multiple of
              // the grain) that gives fewer falls short of it.
              int64_t longer = a.keys_per_split;
              while ((p.max_seqlen_k + longer - 1) / longer == a.num_splits) longer += MFS_DECODE_SPLIT_GRAIN;
              CHECK(uint64_t((p.max_seqlen_k + longer - 1) / longer) * unsplit < target_sgs,
                    "%s g%d d%d r%d: %d splits of %d keys", part.name, group, head_dim, rows,
                    a.num_splits, a.keys_per_split);
            }
          }
        }
      }
    }
  }
  // The shape on a 38-core M2 Max: 64 SIMD-groups per core (54 when counted as 32 cores).
  PlanTarget m2max;
  m2max.gpu_cores = gpu_cores_from_architecture("applegpu_g14c");
  const LaunchPlan plan = make_forward_plan(decode_call(4, 128, 1, 4096), kMfsFloat16, kMfsFloat32, m2max);
  CHECK(launch_simdgroups(plan.launches.at(0)) >= 38 * 64, "%llu",
        (unsigned long long)launch_simdgroups(plan.launches.at(0)));
}

// The live pair count (function constant MFS_FC_DECODE_PAIRS): its cohorts cover the
// threadgroup's pairs, and no cohort has a pair slot left over when the pairs divide evenly.
static void test_live_pair_count() {
  for (int head_dim : {32, 64, 96, 128, 256, 512}) {
    for (MfsDtype dtype : {kMfsFloat32, kMfsFloat16}) {
      const int eb = dtype == kMfsFloat32 ? 4 : 2;
      for (int group : {1, 2, 3, 4, 6, 7, 8, 16}) {
        for (int rows : {1, 2, 3, 4, 8}) {
          const LaunchPlan plan =
              make_forward_plan(decode_call(group, head_dim, rows, 64), dtype, kMfsFloat32);
          const KernelLaunch& d = plan.launches.at(0);
          const MetalLaunchArgs a = decode_args(d);
          const int pairs = a.heads_per_tg * a.rows_per_tg;
          const int cohorts = mfs_decode_cohorts(pairs, head_dim, eb);
          const int live = constant_of(d, MFS_FC_DECODE_PAIRS);
          const int capacity = mfs_decode_uses_mma(pairs, head_dim, eb) ? MFS_DECODE_MMA_PAIRS
                                                                         : mfs_decode_max_pairs(head_dim, eb);
          CHECK(live >= 1 && live <= capacity, "d%d g%d r%d: %d", head_dim, group, rows, live);
          CHECK(cohorts * live >= pairs, "d%d g%d r%d: %d x %d < %d", head_dim, group, rows,
                cohorts, live, pairs);
          CHECK(cohorts * (live - 1) < pairs, "d%d g%d r%d: a cohort's slot is dead", head_dim,
                group, rows);
          CHECK(cohorts <= 32 / mfs_decode_lanes_per_key(head_dim, eb), "d%d: %d cohorts", head_dim,
                cohorts);
          if (pairs % cohorts == 0) CHECK(cohorts * live == pairs, "d%d g%d r%d", head_dim, group, rows);
          if (group == 1 && rows == 1) CHECK(live == 1, "GQA 1, one row: %d", live);
        }
      }
    }
  }
}

// The MMA path (tiles 96 and 128, 16-bit, 4 to 8 pairs): the kernel takes it from the live pair
// count alone (mfs_decode_uses_mma of the function constant), so the constant must be the
// threadgroup's whole pair count there, one cohort; a GQA-8 group of one row is one threadgroup
// (K/V read once); fewer than 4 pairs, float32 and other tiles keep the shuffle path.
static void test_mma_path() {
  for (int head_dim : {96, 128}) {
    for (int group : {4, 5, 6, 7, 8, 16}) {
      for (MfsDtype dtype : {kMfsFloat16, kMfsBFloat16}) {
        const KernelLaunch d = make_forward_plan(decode_call(group, head_dim, 1, 64), dtype,
                                                 kMfsFloat32).launches.at(0);
        const MetalLaunchArgs a = decode_args(d);
        const int pairs = a.heads_per_tg * a.rows_per_tg;
        CHECK(a.heads_per_tg == std::min(group, 8), "d%d g%d: %d heads per threadgroup", head_dim, group, a.heads_per_tg);
        CHECK(mfs_decode_uses_mma(constant_of(d, MFS_FC_DECODE_PAIRS), head_dim, 2), "d%d g%d",
              head_dim, group);
        CHECK(constant_of(d, MFS_FC_DECODE_PAIRS) == pairs, "d%d g%d: %d of %d", head_dim, group,
              constant_of(d, MFS_FC_DECODE_PAIRS), pairs);
      }
    }
    // GQA 1 x 8 rows: 8 pairs, one threadgroup; GQA 2 x 1 row: the shuffle path
    const KernelLaunch rows8 = make_forward_plan(decode_call(1, head_dim, 8, 64), kMfsFloat16,
                                                 kMfsFloat32).launches.at(0);
    CHECK(decode_args(rows8).rows_per_tg == 8 && constant_of(rows8, MFS_FC_DECODE_PAIRS) == 8,
          "d%d: %d rows", head_dim, decode_args(rows8).rows_per_tg);
    const KernelLaunch gqa2 = make_forward_plan(decode_call(2, head_dim, 1, 64), kMfsFloat16,
                                                kMfsFloat32).launches.at(0);
    CHECK(!mfs_decode_uses_mma(constant_of(gqa2, MFS_FC_DECODE_PAIRS), head_dim, 2), "d%d", head_dim);
  }
  // float32 and tile 256: no MMA path, a GQA-8 group in two threadgroups of 4
  const KernelLaunch f32 = make_forward_plan(decode_call(8, 128, 1, 64), kMfsFloat32,
                                             kMfsFloat32).launches.at(0);
  CHECK(decode_args(f32).heads_per_tg == 4, "%d", decode_args(f32).heads_per_tg);
  CHECK(!mfs_decode_uses_mma(constant_of(f32, MFS_FC_DECODE_PAIRS), 128, 4), "f32");
  const KernelLaunch d256 = make_forward_plan(decode_call(8, 256, 1, 64), kMfsFloat16,
                                              kMfsFloat32).launches.at(0);
  CHECK(decode_args(d256).heads_per_tg == 4, "%d", decode_args(d256).heads_per_tg);
}

int main() {
  test_mma_path();
  test_cores_from_the_architecture_name();
  test_split_sizing();
  test_live_pair_count();
  if (failures) std::printf("%d failures\n", failures);
  else std::printf("plan_split_test: ok\n");
  return failures ? 1 : 0;
}
