// BUG (on purpose): half of each SIMD-group waits at a threadgroup barrier (which needs every
// thread) while the other half waits in simd_sum (which needs the first half): no one can move.
#include <metal_stdlib>
using namespace metal;

kernel void deadlock(device float* out [[buffer(0)]],
                     uint lane [[thread_index_in_simdgroup]],
                     uint tid [[thread_index_in_threadgroup]]) {
  float x = float(tid);
  if (lane < 16) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  x = simd_sum(x);
  out[tid] = x;
}
