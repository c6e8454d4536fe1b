// BUG (on purpose): lanes of one SIMD-group exchange values through threadgroup memory with no
// simdgroup_barrier between the writes and the reads. The simd_sum between them exchanges
// registers only and orders no memory, and a barrier without mem_threadgroup orders none of
// it either (examples/simdgroup_exchange.metal is the correct version).
#include <metal_stdlib>
using namespace metal;

kernel void missing_simdgroup_barrier(const device float* in [[buffer(0)]],
                                      device float* out [[buffer(1)]],
                                      uint tid [[thread_index_in_threadgroup]],
                                      uint lane [[thread_index_in_simdgroup]],
                                      uint sg [[simdgroup_index_in_threadgroup]]) {
  threadgroup float mine[64];
  mine[tid] = in[tid];
  float total = simd_sum(in[tid]);
  out[tid] = mine[sg * 32 + (lane ^ 1)] + 0.0f * total;
}

kernel void barrier_without_threadgroup_flag(const device float* in [[buffer(0)]],
                                             device float* out [[buffer(1)]],
                                             uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float mine[64];
  mine[tid] = in[tid];
  threadgroup_barrier(mem_flags::mem_device);
  out[tid] = mine[tid ^ 32];
}
