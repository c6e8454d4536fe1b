// BUG (on purpose): 36 000 bytes of threadgroup memory, over Apple GPUs' 32 KiB.
#include <metal_stdlib>
using namespace metal;

kernel void threadgroup_overflow(device float* out [[buffer(0)]],
                                 uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float small[1000];
  threadgroup float big[8000];
  small[tid] = 1.0;
  big[tid] = 2.0;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid] = small[tid] + big[tid];
}

// Fits on its own; fails only when the dispatch adds dynamic [[threadgroup(0)]] memory.
kernel void threadgroup_dynamic(device float* out [[buffer(0)]],
                                threadgroup float* scratch [[threadgroup(0)]],
                                uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[4096];
  tile[tid] = 1.0;
  scratch[tid] = 2.0;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[tid] = tile[tid] + scratch[tid];
}
