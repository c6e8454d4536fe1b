// BUG (on purpose): the two SIMD-groups write the same threadgroup slots with no barrier between
// the writes; which value survives depends on the schedule. The race detector names both lines.
#include <metal_stdlib>
using namespace metal;

kernel void race_write_write(const device float* in [[buffer(0)]],
                             device float* out [[buffer(1)]],
                             uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float slot[32];
  if (tid < 32) {
    slot[tid] = in[tid];
  } else {
    slot[tid - 32] = -in[tid];
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid] = slot[tid % 32];
}
