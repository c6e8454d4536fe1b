// BUG (on purpose): off-by-one indexing that reads before the start of one buffer and writes past
// the end of another.
#include <metal_stdlib>
using namespace metal;

kernel void read_before_start(const device float* in [[buffer(0)]],
                              device float* out [[buffer(1)]],
                              uint gid [[thread_position_in_grid]]) {
  out[gid] = in[int(gid) - 1];
}

kernel void write_past_end(const device float* in [[buffer(0)]],
                           device float* out [[buffer(1)]],
                           uint gid [[thread_position_in_grid]]) {
  out[gid + 1] = in[gid];
}

kernel void read_past_end(const device half* in [[buffer(0)]],
                          device half* out [[buffer(1)]],
                          constant uint& stride [[buffer(2)]],
                          uint gid [[thread_position_in_grid]]) {
  out[gid] = in[gid * stride];
}

kernel void threadgroup_past_end(device float* out [[buffer(0)]],
                                 uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[32];
  tile[tid] = 1.0;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid] = tile[tid + 1];
}
