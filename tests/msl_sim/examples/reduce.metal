// Row sums: each threadgroup sums one row. Threads stride over the row, each SIMD-group reduces
// with simd_sum, and the SIMD-group partials meet in threadgroup memory.
#include <metal_stdlib>
using namespace metal;

kernel void row_sum(const device float* in [[buffer(0)]],
                    device float* out [[buffer(1)]],
                    constant uint& n [[buffer(2)]],
                    uint row [[threadgroup_position_in_grid]],
                    uint tid [[thread_index_in_threadgroup]],
                    uint lane [[thread_index_in_simdgroup]],
                    uint sg [[simdgroup_index_in_threadgroup]],
                    uint num_sg [[simdgroups_per_threadgroup]],
                    uint num_threads [[threads_per_threadgroup]]) {
  threadgroup float partial[32];
  float acc = 0.0;
  for (uint i = tid; i < n; i += num_threads) {
    acc += in[row * n + i];
  }
  acc = simd_sum(acc);
  if (lane == 0) {
    partial[sg] = acc;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sg == 0) {
    float v = lane < num_sg ? partial[lane] : 0.0;
    v = simd_sum(v);
    if (lane == 0) {
      out[row] = v;
    }
  }
}
