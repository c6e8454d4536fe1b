// Race-free exchanges through threadgroup memory: between lanes of one SIMD-group ordered by a
// simdgroup_barrier, between SIMD-groups by a threadgroup_barrier, in 16-bit and 8-bit elements
// that neighbours write within one 4-byte word. The race detector must stay silent here.
#include <metal_stdlib>
using namespace metal;

kernel void simdgroup_exchange(const device float* in [[buffer(0)]],
                               device float* out [[buffer(1)]],
                               uint tid [[thread_index_in_threadgroup]],
                               uint lane [[thread_index_in_simdgroup]],
                               uint sg [[simdgroup_index_in_threadgroup]],
                               uint n [[threads_per_threadgroup]]) {
  threadgroup float mine[128];
  threadgroup half halves[128];
  threadgroup uchar bytes[128];
  mine[tid] = in[tid];
  halves[tid] = half(in[tid]);
  bytes[tid] = uchar(tid);
  simdgroup_barrier(mem_flags::mem_threadgroup);
  float a = mine[sg * 32 + (lane ^ 1)];  // a lane of this SIMD-group
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float b = float(halves[(tid + 32) % n]) + float(bytes[(tid + 32) % n]);  // another SIMD-group
  threadgroup_barrier(mem_flags::mem_threadgroup);
  mine[tid] = a + b;  // overwritten after every read of the first value (the barrier above)
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid] = mine[n - 1 - tid];
}
