// BUG (on purpose): each thread reads its neighbour's slot, then overwrites its own slot with no
// barrier between: the neighbour may not have read it yet (write after read), or may already
// have overwritten the slot this thread reads (read after write).
#include <metal_stdlib>
using namespace metal;

kernel void race_read_write(const device float* in [[buffer(0)]],
                            device float* out [[buffer(1)]],
                            uint tid [[thread_index_in_threadgroup]],
                            uint n [[threads_per_threadgroup]]) {
  threadgroup float tile[128];
  tile[tid] = in[tid];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float v = tile[(tid + 1) % n];
  tile[tid] = 2.0f * v;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid] = tile[tid];
}
